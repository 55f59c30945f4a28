"""Reading the multipart upload of /classify and /clean, with the configured limits.

    upload = await read_upload(request, settings, fields={"labels", "threshold"})
    upload.images      # [bytes, ...] in request order (parts named "image")
    upload.one("threshold"), upload.many("labels")

The body streams through python-multipart's parser straight into bytes per part: no
UploadFile or spooled temporary file per image (Starlette's ``request.form()`` costs about
2.5x as much per small request; this path is hot). The whole body is already capped by
service.http.body_limit.

Not multipart -> 415; more image parts than ``max_images`` -> 413; a text field over 1 MiB or
too many parts -> 413; no image part, an unknown part name, a text field that is not UTF-8, or
a single-valued field given twice -> 422; a malformed or unfinished body -> 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ...settings import Settings
from ..errors import ApiError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

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


class _Collector:
    """python-multipart callbacks that gather each part into ``upload`` as it arrives."""

    def __init__(self, upload: Upload, fields: set[str], max_images: int) -> None:
        self.upload, self.fields, self.max_images = upload, fields, max_images
        self.max_parts = 2 * max_images + len(fields)  # images, their labels, the rest
        self.parts = 0
        self.ended = False
        self._header: list[bytes] = []
        self._value: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._name = ""
        self._filename: str | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self._header.append(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.append(data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise PayloadTooLarge(
                f"more than {self.max_parts} parts in one request", code="too_many_parts"
            )
        self._headers.clear()
        self._chunks = []
        self._size = 0

    def header_end(self) -> None:
        self._headers[b"".join(self._header).lower()] = b"".join(self._value)
        self._header.clear()
        self._value.clear()

    def headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise ApiError(
                "malformed multipart body: a part without 'Content-Disposition: form-data; "
                "name=...'",
                code="invalid_multipart",
            )
        self._name = name.decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename is not None else None
        if self._name == "image":
            if len(self.upload.images) >= self.max_images:
                raise PayloadTooLarge(
                    f"more than {self.max_images} image parts in one request",
                    code="too_many_images", field="image",
                )  # fmt: skip
        elif self._name not in self.fields:
            allowed = ", ".join(sorted({"image", *self.fields}))
            raise InvalidInput(
                f"unknown part {self._name!r} (expected {allowed})", field=self._name
            )

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._name != "image" and self._size > MAX_FIELD_BYTES:
            raise PayloadTooLarge(
                f"field {self._name!r} is over {MAX_FIELD_BYTES} bytes", field=self._name
            )
        self._chunks.append(data[start:end])

    def part_end(self) -> None:
        value = b"".join(self._chunks)
        if self._name == "image":
            self.upload.images.append(value)
            self.upload.filenames.append(self._filename)
            return
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"field {self._name!r} is not UTF-8: {exc}"
            raise InvalidInput(message, field=self._name) from exc
        self.upload.fields.setdefault(self._name, []).append(text)

    def end(self) -> None:
        self.ended = True


async def read_upload(request: Request, settings: Settings, *, fields: set[str]) -> Upload:
    """The request's ``image`` parts and the text ``fields`` allowed for this endpoint."""
    content_type = request.headers.get("content-type", "")
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise UnsupportedMediaType(
            f"expected a multipart/form-data body with 'image' part(s), got "
            f"{content_type or 'no Content-Type'}"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError("malformed multipart body: no boundary", code="invalid_multipart")
    upload = Upload()
    collector = _Collector(upload, fields, settings.max_images)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
    except (MultipartParseError, ValueError) as exc:  # ValueError: e.g. an overlong boundary
        raise ApiError(f"malformed multipart body: {exc}", code="invalid_multipart") from exc
    if not collector.ended:
        raise ApiError(
            "malformed multipart body: it ends before its closing boundary",
            code="invalid_multipart",
        )
    if not upload.images:
        raise InvalidInput("no image: send one or more parts named 'image'", field="image")
    return upload
