"""POST /classify and POST /clean: multipart upload -> the inference process -> JSON.

Both read the upload here (service.http.multipart) and hand the images to the inference process
(service.inference.process), whose engine calls the same functions the worker and CLI call
(model.classifying.classify_images, model.cleaning.clean_images) with the dynamic batcher as
their ``predict`` and its decode threads as their ``offload``. Its answer is the response body.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ...settings import Settings
from ..errors import InvalidInput, error_responses
from .auth import require_api_key
from .multipart import read_upload
from .schemas import ClassifyResponse, CleanResponse
from .state import ServiceState

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])
ERRORS = error_responses(400, 401, 413, 415, 422, 503)

IMAGE_FORMATS = {  # Pillow's format names (LABELCLEAN_ALLOWED_FORMATS) -> media types
    "JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp",
    "GIF": "image/gif", "TIFF": "image/tiff", "PPM": "image/x-portable-anymap",
    "ICO": "image/x-icon", "MPO": "image/mpo",
}  # fmt: skip
DEFAULT_FORMATS: tuple[str, ...] = Settings.model_fields["allowed_formats"].default


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _unit() -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": 1}


REQUEST_SCHEMAS: dict[str, dict[str, Any]] = {
    "LabelId": {
        "type": "string",
        "minLength": 1,
        "description": "a class of the served model (GET /model lists them); any other id is a "
        "422 unknown_labels",
    },
    "Threshold": {
        "description": "overrides the model's decision thresholds: one number for every class "
        '("0.3"), or a JSON object of label id to number (\'{"/m/01g317": 0.3}\') for those '
        "classes. /clean (decision rule issue): the cut on issue_score for both removing a "
        "listed label and adding an unlisted one (rule cleaned: on the cleaned score); "
        "/classify: the cut on the classifier's score",
        "oneOf": [
            _unit(),
            {"type": "object", "propertyNames": _ref("LabelId"), "additionalProperties": _unit()},
        ],
    },
    "NoisyLabels": {
        "type": "array",
        "items": {
            "oneOf": [
                _ref("LabelId"),
                {
                    "type": "object",
                    "properties": {
                        "label": _ref("LabelId"),
                        "confidence": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": 1,
                            "default": 1,
                        },
                    },
                    "required": ["label"],
                    "additionalProperties": False,
                },
            ]
        },
        "uniqueItems": True,
        "description": "one image's noisy labels as JSON, each label at most once: ids "
        '(\'["/m/01g317"]\', confidence 1) or {"label": id, "confidence": x} with 0 < x <= 1',
    },
}
"""The multipart bodies' part schemas, for openapi.yaml's components (service.http.openapi adds
them; the response schemas come from service.http.schemas)."""

IMAGE_PARTS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "format": "binary"},
    "minItems": 1,
    "description": "one part per image, in a format the server allows (by default JPEG, PNG, "
    "WEBP, BMP or GIF); at most the server's max_images (GET /model, limits)",
}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    # Every part but the images is a JSON value (top_k's 5 reads the same as text): each labels
    # part (a string holding JSON text, its contentMediaType), the threshold number or object,
    # the top_k integer.
    encoding = {name: {"contentType": "application/json"} for name in properties}
    encoding["image"] = {"contentType": ", ".join(IMAGE_FORMATS[f] for f in DEFAULT_FORMATS)}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema, "encoding": encoding}},
        }
    }


CLASSIFY_BODY = _body(
    {
        "image": IMAGE_PARTS,
        "threshold": _ref("Threshold"),
        "top_k": {
            "type": "integer",
            "minimum": 1,
            "description": "at most this many labels; at most the model's class count",
        },
    },
    ["image"],
)
CLEAN_BODY = _body(
    {
        "image": IMAGE_PARTS,
        "labels": {
            "type": "array",
            "items": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _ref("NoisyLabels"),
            },
            "minItems": 1,
            "description": "one part per image, in the same order: that image's labels as "
            "JSON text (NoisyLabels), e.g. '[\"/m/01g317\"]', or '[]' for none",
        },
        "threshold": _ref("Threshold"),
        "min_precision": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 1,
            "description": "decide with the thresholds the model chose for at least this "
            "precision of the final label sets on its verified images (the lowest level at or "
            "above it, GET /model decision.min_precision_levels) instead of its default "
            "objective; more precise sets, fewer labels",
        },
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
    upload = await read_upload(
        request, state.settings, fields={"labels", "threshold", "min_precision"}
    )
    fields = {
        "labels": upload.many("labels"),
        "threshold": upload.one("threshold"),
        "min_precision": upload.one("min_precision"),
    }
    body = await backend.request("clean", upload.images, upload.filenames, fields)
    state.metrics.images.labels("/clean").inc(len(upload.images))
    return Response(body, media_type="application/json")
