"""POST /classify and POST /clean: multipart upload -> the shared model pipelines, batched.

Both read the upload (service.multipart), then call the same functions the worker and CLI call
(model.classifying.classify_images, model.cleaning.clean_images) with the dynamic batcher as
their ``predict`` and the decode thread pool as their ``offload``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ..model.classifying import classify_images
from ..model.cleaning import clean_images
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


def _json(body: dict[str, Any]) -> Response:
    """Serialised here, not by FastAPI: its response-model round trip costs more than the rest
    of a small request. The body's shape is the route's ``response_model`` (openapi.yaml), which
    the schemathesis contract test checks on live responses."""
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.post(
    "/classify",
    summary="Labels and scores for each image",
    openapi_extra=CLASSIFY_BODY,
    response_model=ClassifyResponse,
    responses=ERRORS,
)
async def classify(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    bundle, batcher = state.require_ready()
    upload = await read_upload(request, state.settings, fields={"threshold", "top_k"})
    top_k = _top_k(upload.one("top_k"))
    async with batcher.expect(len(upload.images)) as predict:
        results = await classify_images(
            bundle, upload.images, predict=predict, threshold=upload.one("threshold"),
            top_k=top_k, limits=state.limits, offload=state.offload,
        )  # fmt: skip
    state.metrics.images.labels("/classify").inc(len(results))
    return _json(
        {
            "results": [
                {"index": i, "filename": upload.filenames[i], "labels": [vars(x) for x in labels]}
                for i, labels in enumerate(results)
            ]
        }
    )


@router.post(
    "/clean",
    summary="Verdicts on each image's noisy labels: kept, removed or added",
    openapi_extra=CLEAN_BODY,
    response_model=CleanResponse,
    responses=ERRORS,
)
async def clean(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    bundle, batcher = state.require_ready()
    upload = await read_upload(request, state.settings, fields={"labels", "threshold"})
    async with batcher.expect(len(upload.images)) as predict:
        results = await clean_images(
            bundle, upload.images, upload.many("labels"), predict=predict,
            thresholds=upload.one("threshold"), limits=state.limits, offload=state.offload,
        )  # fmt: skip
    state.metrics.images.labels("/clean").inc(len(results))
    return _json(
        {
            "results": [
                {
                    "index": i,
                    "filename": upload.filenames[i],
                    "labels": [vars(v) for v in r.labels],
                    "cleaned_labels": r.cleaned_labels,
                }
                for i, r in enumerate(results)
            ]
        }
    )
