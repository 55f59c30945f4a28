"""POST /classify and POST /clean: multipart upload -> the inference process -> JSON.

Both read the upload here (service.multipart) and hand the images to the inference process
(service.backend), whose engine calls the same functions the worker and CLI call
(model.classifying.classify_images, model.cleaning.clean_images) with the dynamic batcher as
their ``predict`` and its decode threads as their ``offload``. Its answer is the response body.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from .auth import require_api_key
from .errors import InvalidInput, error_responses
from .multipart import read_upload
from .schemas import ClassifyResponse, CleanResponse
from .state import ServiceState

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])
ERRORS = error_responses(400, 401, 413, 415, 422, 503)

IMAGE_PARTS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "format": "binary"},
    "minItems": 1,
    "description": "one part per image (JPEG, PNG, WEBP, BMP or GIF as the server allows); "
    "at most the server's max_images (GET /model, limits)",
}
THRESHOLD: dict[str, Any] = {
    "type": "string",
    "description": 'overrides the bundle\'s per-class thresholds: one number in [0, 1] ("0.3") '
    "or a JSON object of label id to number ('{\"/m/01g317\": 0.3}')",
}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


CLASSIFY_BODY = _body(
    {
        "image": IMAGE_PARTS,
        "threshold": THRESHOLD,
        "top_k": {"type": "integer", "minimum": 1, "description": "at most this many labels"},
    },
    ["image"],
)
CLEAN_BODY = _body(
    {
        "image": IMAGE_PARTS,
        "labels": {
            "type": "array",
            "items": {"type": "string"},
            "description": "one part per image, in the same order: its noisy labels as a JSON "
            'array of label ids (\'["/m/01g317"]\') or of {"label": id, "confidence": x} '
            "with 0 < x <= 1",
        },
        "threshold": THRESHOLD,
    },
    ["image", "labels"],
)


def _top_k(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"top_k must be an integer, got {value[:40]!r}", field="top_k") from None


@router.post(
    "/classify",
    summary="Labels and scores for each image",
    openapi_extra=CLASSIFY_BODY,
    response_model=ClassifyResponse,
    responses=ERRORS,
)
async def classify(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    backend = state.require_ready()
    upload = await read_upload(request, state.settings, fields={"threshold", "top_k"})
    fields = {"threshold": upload.one("threshold"), "top_k": _top_k(upload.one("top_k"))}
    body = await backend.request("classify", upload.images, upload.filenames, fields)
    state.metrics.images.labels("/classify").inc(len(upload.images))
    return Response(body, media_type="application/json")


@router.post(
    "/clean",
    summary="Verdicts on each image's noisy labels: kept, removed or added",
    openapi_extra=CLEAN_BODY,
    response_model=CleanResponse,
    responses=ERRORS,
)
async def clean(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    backend = state.require_ready()
    upload = await read_upload(request, state.settings, fields={"labels", "threshold"})
    fields = {"labels": upload.many("labels"), "threshold": upload.one("threshold")}
    body = await backend.request("clean", upload.images, upload.filenames, fields)
    state.metrics.images.labels("/clean").inc(len(upload.images))
    return Response(body, media_type="application/json")
