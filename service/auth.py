"""Optional API keys: when LABELCLEAN_API_KEYS is set, every endpoint but /healthz needs
``Authorization: Bearer <key>``. Keys are compared in constant time, against every key.

    router = APIRouter(dependencies=[Depends(require_api_key)])
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import HTTPBearer

from .errors import Unauthorized


def key_matches(given: bytes, keys: tuple[bytes, ...]) -> bool:
    """Whether ``given`` is one of ``keys``; the time taken does not depend on which or where."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


class ApiKeyBearer(HTTPBearer):
    """The HTTP bearer scheme of openapi.yaml, checking the keys of the app's settings.

    One dependency rather than HTTPBearer plus a checker: FastAPI resolves dependencies on
    every request, and this path is hot."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        keys: tuple[bytes, ...] = request.app.state.settings.key_values
        if not keys:
            return None
        credentials = await super().__call__(request)  # None: header missing or not Bearer
        if credentials is None:
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
        if not key_matches(credentials.credentials.encode(), keys):
            raise Unauthorized("invalid API key")
        return None


require_api_key = ApiKeyBearer(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="Needed on every endpoint but /healthz when the server has API keys "
    "(LABELCLEAN_API_KEYS).",
)
"""FastAPI dependency: 401 unless the keys are off or a valid Bearer key is given."""
