"""Optional API keys: when LABELCLEAN_API_KEYS is set, every endpoint but /healthz needs
``Authorization: Bearer <key>``. Keys are compared in constant time, against every key."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import Unauthorized

bearer = HTTPBearer(
    auto_error=False,
    description="Needed on every endpoint but /healthz when the server has API keys "
    "(LABELCLEAN_API_KEYS).",
)


def key_matches(given: bytes, keys: tuple[bytes, ...]) -> bool:
    """Whether ``given`` is one of ``keys``; the time taken does not depend on which or where."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """FastAPI dependency: 401 unless the keys are off or a valid Bearer key is given.

    The keys are those of the app's settings (``create_app(settings)``)."""
    keys = request.app.state.settings.key_values
    if not keys:
        return
    if credentials is None:
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    if not key_matches(credentials.credentials.encode(), keys):
        raise Unauthorized("invalid API key")
