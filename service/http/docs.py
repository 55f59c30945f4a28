"""GET /docs (Swagger UI) and GET /openapi.json: the API contract for people and tools, as
FastAPI users expect them. On unless ``LABELCLEAN_DOCS=false`` (for deployments that expose no
schema); neither needs an API key, and the UI's Authorize button takes one for the calls it
makes. Both stay out of the contract itself.

/openapi.json answers a caller who may call the API (a valid key, or a server without keys)
with the document this server keeps (``service.http.openapi.narrowed``: openapi.yaml narrowed
to its model's label ids, its limits and its storage roots), so that a client or a fuzzer
driven from it sends only requests the server's checks let through (``schemathesis run
http://HOST/openapi.json -H "Authorization: Bearer KEY"``). Anyone else gets openapi.yaml
itself (``service.http.openapi.app_document``, which tests/service/http/test_contract.py keeps equal
to the file, so an installed package serves it without the file): the storage roots and the
label ids are this deployment's business. Each is built on first request (the served one again
after the model is reloaded).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from ..errors import Unauthorized
from .auth import require_api_key
from .openapi import app_document, narrowed

router = APIRouter(include_in_schema=False)


async def contract(request: Request) -> dict[str, Any]:
    """openapi.yaml, built on first use (two first requests at once may both build it)."""
    document = getattr(request.app.state, "contract", None)
    if document is None:
        document = await asyncio.to_thread(app_document, request.app)
        request.app.state.contract = document
    return document


async def served(request: Request) -> dict[str, Any] | None:
    """The document narrowed to this server's settings and the bundle it answers with now,
    built on first use and again when the bundle changes (POST /model/reload); None before a
    bundle is read."""
    state = getattr(request.app.state, "service", None)  # set by the lifespan
    bundle = state.bundle if state is not None else None
    if bundle is None:
        return None
    cached = getattr(request.app.state, "served_contract", None)
    if cached is not None and cached[0] is bundle:
        return cached[1]
    document = await asyncio.to_thread(
        narrowed,
        await contract(request),
        request.app.state.settings,
        [c.id for c in bundle.classes],
        bundle.decision.min_precision_levels if bundle.decision else (),
    )
    request.app.state.served_contract = (bundle, document)
    return document


async def may_call(request: Request) -> bool:
    """Whether the request carries a valid API key, or the server needs none."""
    try:
        await require_api_key(request)
    except Unauthorized:
        return False
    return True


@router.get("/openapi.json")
async def openapi_json(request: Request) -> JSONResponse:
    document = await served(request) if await may_call(request) else None
    return JSONResponse(document or await contract(request))


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="labelclean API",
        swagger_ui_parameters={"persistAuthorization": True},
    )
