"""GET /docs (Swagger UI) and GET /openapi.json: the API contract, openapi.yaml, for people and
tools, as FastAPI users expect them. On unless ``LABELCLEAN_DOCS=false`` (for deployments that
expose no schema); neither needs an API key, and the UI's Authorize button takes one for the
calls it makes. Both stay out of the contract itself.

The document is the app's own (``service.openapi.openapi_document``), which
tests/service/test_contract.py keeps equal to openapi.yaml, so an installed package (the
container images) serves the contract without the file. It is built once, on first request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

router = APIRouter(include_in_schema=False)


async def contract(request: Request) -> dict[str, Any]:
    """The contract, built on first use (two first requests at once may both build it)."""
    document = getattr(request.app.state, "contract", None)
    if document is None:
        from .openapi import openapi_document  # imported here: it imports service.app

        document = await asyncio.to_thread(openapi_document)
        request.app.state.contract = document
    return document


@router.get("/openapi.json")
async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(await contract(request))


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="labelclean API",
        swagger_ui_parameters={"persistAuthorization": True},
    )
