"""Reading the multipart upload of /classify and /clean, with the configured limits.

    upload = await read_upload(request, settings, fields={"labels", "threshold"})
    upload.images      # [bytes, ...] in request order (parts named "image")
    upload.one("threshold"), upload.many("labels")

Not multipart -> 415; more image parts than ``max_images`` -> 413; no image part, an unknown
part name, or a single-valued field given twice -> 422; a malformed body -> 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..settings import Settings
from .errors import ApiError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

MAX_FIELD_BYTES = 1 << 20  # a labels or threshold field larger than 1 MiB is a mistake


@dataclass
class Upload:
    images: list[bytes] = field(default_factory=list)
    filenames: list[str | None] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def many(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def one(self, name: str) -> str | None:
        values = self.many(name)
        if len(values) > 1:
            raise InvalidInput(f"field {name!r} was sent {len(values)} times", field=name)
        return values[0] if values else None


async def read_upload(request: Request, settings: Settings, *, fields: set[str]) -> Upload:
    """The request's ``image`` parts and the text ``fields`` allowed for this endpoint."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"expected a multipart/form-data body with 'image' part(s), got "
            f"{content_type or 'no Content-Type'}"
        )
    try:
        form = await request.form(
            max_files=settings.max_images,
            max_fields=settings.max_images + len(fields) + 1,
            max_part_size=MAX_FIELD_BYTES,
        )
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            raise PayloadTooLarge(
                f"more than {settings.max_images} image parts in one request",
                code="too_many_images", field="image",
            ) from exc  # fmt: skip
        raise ApiError(f"malformed multipart body: {detail}", code="invalid_multipart") from exc
    upload = Upload()
    try:
        for name, value in form.multi_items():
            if name == "image":
                if isinstance(value, UploadFile):
                    upload.images.append(await value.read())
                    upload.filenames.append(value.filename)
                else:
                    upload.images.append(value.encode())
                    upload.filenames.append(None)
            elif name in fields:
                text = value if isinstance(value, str) else (await value.read()).decode("utf-8")
                upload.fields.setdefault(name, []).append(text)
            else:
                allowed = ", ".join(sorted({"image", *fields}))
                raise InvalidInput(f"unknown part {name!r} (expected {allowed})", field=name)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"a text field is not UTF-8: {exc}") from exc
    finally:
        await form.close()
    if not upload.images:
        raise InvalidInput("no image: send one or more parts named 'image'", field="image")
    if len(upload.images) > settings.max_images:
        raise PayloadTooLarge(
            f"{len(upload.images)} images in one request, more than {settings.max_images}",
            code="too_many_images", field="image",
        )  # fmt: skip
    return upload
