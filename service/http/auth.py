"""Optional API keys: when LABELCLEAN_API_KEYS is set, every endpoint but /healthz, /docs
and /openapi.json needs ``Authorization: Bearer <key>`` (/openapi.json answers a keyed caller
with more). Keys are compared in constant time, against every key.

    router = APIRouter(dependencies=[Depends(require_api_key)])
    async def route(caller: CallerDep): ...      # who calls: the key's name and the key

The dependency answers who calls (a ``Caller``), which the job routes use to show each key only
its own jobs (service.jobs.owners). FastAPI caches a dependency per request, so a route that names
``CallerDep`` under a router that requires the key checks the key once.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from ...api_keys import ApiKey
from ..errors import Forbidden, Unauthorized
from ..jobs.owners import ANONYMOUS, Caller


def matching_key(given: bytes, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The key among ``keys`` equal to ``given``, or None; every key is compared, so the time
    taken does not depend on which one matches or where."""
    found = None
    for key in keys:
        equal = hmac.compare_digest(given, key.secret)
        found = key if equal else found
    return found


class ApiKeyBearer(HTTPBearer):
    """The HTTP bearer scheme of openapi.yaml, checking the keys of the app's settings.

    One dependency rather than HTTPBearer plus a checker: FastAPI resolves dependencies on
    every request, and this path is hot."""

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        keys: tuple[ApiKey, ...] = request.app.state.settings.named_keys
        if not keys:
            return ANONYMOUS
        credentials = await super().__call__(request)  # None: header missing or not Bearer
        if credentials is None:
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
        key = matching_key(credentials.credentials.encode(), keys)
        if key is None:
            raise Unauthorized("invalid API key")
        return Caller(key.name, key.secret)


require_api_key = ApiKeyBearer(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="Needed on every endpoint but /healthz, /docs and /openapi.json when the server "
    "has API keys (LABELCLEAN_API_KEYS).",
)
"""FastAPI dependency: 401 unless the keys are off or a valid Bearer key is given."""

CallerDep = Annotated[Caller, Depends(require_api_key)]


async def require_admin(request: Request, caller: CallerDep) -> Caller:
    """FastAPI dependency: 401 as require_api_key, then 403 unless the key is one of
    LABELCLEAN_ADMIN_KEYS (unset: every key is)."""
    check_admin(
        request.app.state.settings.admin_keys, caller, f"{request.method} {request.url.path}"
    )
    return caller


def check_admin(admins: tuple[str, ...], caller: Caller, what: str) -> None:
    """Forbidden unless ``caller`` may do ``what``: an admin key, or no admin keys named, or
    keys off (the anonymous caller)."""
    if admins and caller.key is not None and caller.name not in admins:
        raise Forbidden(
            f"the API key {caller.name!r} may not do {what}: only LABELCLEAN_ADMIN_KEYS "
            f"({', '.join(admins)}) may"
        )
