"""A Label Studio task's image, by the URL in its data.

    reader = TaskImages(settings)
    data = await reader.read("/data/upload/3/ab12cd34-shirt.png")     # bytes, or ImageUnavailable

- Label Studio's own files: a path on Label Studio (``/data/upload/...``, uploads;
  ``/data/local-files/?d=...``, local files; any other ``/...``) or an absolute URL on
  LABELCLEAN_LABEL_STUDIO_URL, fetched from LABELCLEAN_LABEL_STUDIO_URL with
  LABELCLEAN_LABEL_STUDIO_TOKEN (a legacy API token, sent as ``Token``; a personal access token,
  a JWT, is exchanged for an access token first). A redirect to another host (a cloud storage's
  presigned URL) is followed without the token.
- ``s3://``, ``file://`` (and other storage URIs): through the service's storage layer, under
  LABELCLEAN_STORAGE_ROOTS and LABELCLEAN_STORAGE_PROTOCOLS, as a bulk job's images.
- Any other URL (another web host) is refused: the service fetches nothing a task names
  outside Label Studio and its storage roots.

Every image is at most LABELCLEAN_MAX_IMAGE_BYTES.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urljoin, urlsplit

from ....settings import Settings
from ....storage import Storage, StorageError

TIMEOUT_S = 30.0
ACCESS_TOKEN_S = 240.0  # Label Studio's access tokens last 5 minutes: renewed after 4


class ImageUnavailable(Exception):
    """A task's image that cannot be read; the message says why (never the token)."""


class _NoTokenElsewhere(urllib.request.HTTPRedirectHandler):
    """Follow redirects, dropping the Authorization header when the host changes."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_opener = urllib.request.build_opener(_NoTokenElsewhere())


def _get(url: str, headers: dict[str, str], max_bytes: int) -> bytes:
    request = urllib.request.Request(url, headers=headers)
    with _opener.open(request, timeout=TIMEOUT_S) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageUnavailable(f"larger than {max_bytes} bytes")
    return data


class TaskImages:
    def __init__(self, settings: Settings) -> None:
        self.base = (settings.label_studio_url or "").rstrip("/")
        token = settings.label_studio_token
        self.token = token.get_secret_value() if token is not None else ""
        self.max_bytes = settings.max_image_bytes
        self.storage = Storage.from_settings(settings)
        self._access: tuple[str, float] | None = None  # (JWT access token, when it was made)

    def _auth(self) -> dict[str, str]:
        if not self.token:
            return {}
        if self.token.count(".") != 2:  # a legacy API token
            return {"Authorization": f"Token {self.token}"}
        if self._access is None or time.monotonic() - self._access[1] > ACCESS_TOKEN_S:
            body = json.dumps({"refresh": self.token}).encode()
            request = urllib.request.Request(
                f"{self.base}/api/token/refresh", data=body,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with _opener.open(request, timeout=TIMEOUT_S) as response:
                access = json.loads(response.read())["access"]
            self._access = (access, time.monotonic())
        return {"Authorization": f"Bearer {self._access[0]}"}

    def _label_studio(self, url: str) -> str | None:
        """The absolute URL of a file Label Studio serves, or None when ``url`` is not one."""
        if url.startswith("/") and not url.startswith("//"):
            if not self.base:
                raise ImageUnavailable(
                    f"{url[:200]} is a file on Label Studio: set LABELCLEAN_LABEL_STUDIO_URL "
                    "(and LABELCLEAN_LABEL_STUDIO_TOKEN) so the service can fetch it"
                )
            return urljoin(self.base + "/", url.lstrip("/"))
        if self.base and url.startswith(self.base + "/"):
            return url
        return None

    def _read(self, url: str) -> bytes:
        try:
            on_label_studio = self._label_studio(url)
            if on_label_studio is not None:
                return _get(on_label_studio, self._auth(), self.max_bytes)
            scheme = urlsplit(url).scheme.lower()
            if scheme in ("http", "https", ""):
                raise ImageUnavailable(
                    f"{url[:200]}: only Label Studio's own files "
                    "(LABELCLEAN_LABEL_STUDIO_URL) and storage URIs under "
                    "LABELCLEAN_STORAGE_ROOTS are read"
                )
            return self.storage.read_bytes(url, max_bytes=self.max_bytes)
        except ImageUnavailable:
            raise
        except StorageError as exc:
            raise ImageUnavailable(str(exc)) from None
        except urllib.error.HTTPError as exc:
            raise ImageUnavailable(f"{url[:200]}: Label Studio answered {exc.code}") from None
        except (OSError, ValueError, KeyError) as exc:
            raise ImageUnavailable(f"{url[:200]}: cannot read ({type(exc).__name__})") from None

    async def read(self, url: Any) -> bytes:
        if not isinstance(url, str) or not url:
            raise ImageUnavailable("the task has no image URL")
        return await asyncio.to_thread(self._read, url)
