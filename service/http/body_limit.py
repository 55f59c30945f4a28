"""Request body size limit, enforced while the body streams in (uvicorn has none of its own).

A declared Content-Length over the limit is refused before a byte of the body is read; a body
without one (chunked) is counted as it arrives and refused as soon as it passes the limit, so a
client can never make the server buffer more than ``max_bytes``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, error_response


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            response = error_response(400, "bad_request", "Content-Length is not a number")
            await response(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            response = error_response(
                413, PayloadTooLarge.code, self._message(f"{declared} bytes"),
                headers={"Connection": "close"},
            )  # fmt: skip
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self._message(f"more than {self.max_bytes} bytes"))
            return message

        await self.app(scope, limited_receive, send)

    def _message(self, size: str) -> str:
        return f"request body of {size} is over the limit of {self.max_bytes} bytes"


def _content_length(scope: Scope) -> int | None:
    """The declared length, None when absent, -1 when malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None
