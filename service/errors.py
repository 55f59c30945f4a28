"""The one place that maps errors to HTTP responses, all with the same JSON body:

    {"error": {"code": "unknown_labels", "message": "...", "field": "labels",
               "unknown_labels": ["/m/xyz"]}}

Domain errors (model.labels.InputError, model.preprocess.ImageError, ApiError here) get their
status from ``STATUS``; a job URI the storage layer refused or could not use (StorageError) is a
422 with its code (``uri_outside_roots``, ``protocol_not_allowed``, ``invalid_uri``); FastAPI's
validation errors and Starlette's HTTP errors (404, 405, bad multipart) are reshaped; anything
else is a logged 500 without a stack trace in the body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..model.labels import InputError
from ..model.preprocess import CorruptImage, ImageError, ImageTooLarge, UnsupportedImage
from ..storage import StorageError
from .failures import frames

log = logging.getLogger("labelclean.service")


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. unknown_labels")
    message: str = Field(description="what is wrong, for a person")
    field: str | None = Field(None, description="the request part at fault, e.g. labels[1]")
    unknown_labels: list[str] | None = Field(None, description="label ids the model lacks")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An error with its HTTP status; subclasses name the common ones."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, field: str | None = None, code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers
        if code:
            self.code = code


class InvalidInput(ApiError):
    status, code = 422, "invalid_input"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    """A valid key that may not do this (LABELCLEAN_ADMIN_KEYS)."""

    status, code = 403, "forbidden"


class ModelNotReady(ApiError):
    status, code = 503, "model_not_ready"


class Overloaded(ApiError):
    status, code = 503, "overloaded"


class JobNotFound(ApiError):
    status, code = 404, "job_not_found"


class JobConflict(ApiError):
    status, code = 409, "job_conflict"


class LabelConfigError(ApiError):
    """A Label Studio labeling config the ML backend cannot answer (/label-studio/setup)."""

    status, code = 422, "label_config_invalid"


class UnknownChoices(LabelConfigError):
    """Choices of a labeling config that name no class of the model."""

    code = "unknown_choices"

    def __init__(self, choices: list[str]) -> None:
        shown = ", ".join(repr(c) for c in choices[:20]) + (" ..." if len(choices) > 20 else "")
        super().__init__(
            f"{len(choices)} choice(s) of the labeling config name no class of the model: "
            f"{shown} (a choice is a class's display name or label id, GET /model lists them)",
            field="label_config",
        )
        self.choices = choices


class BundleRejected(ApiError):
    """A reload whose bundle could not be loaded: the model in service goes on serving."""

    status, code = 409, "bundle_rejected"


class JobsUnavailable(ApiError):
    """Redis cannot be reached: bulk jobs answer 503, /classify and /clean carry on."""

    status, code = 503, "jobs_unavailable"


IMAGE_STATUS: dict[type[ImageError], int] = {
    ImageTooLarge: 413,
    UnsupportedImage: 415,
    CorruptImage: 422,
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body every error response has."""
    detail: dict[str, Any] = {"code": code, "message": message}
    detail.update({k: v for k, v in extra.items() if v is not None})
    return {"error": detail}


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, field=exc.field, headers=exc.headers)


async def _input_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return error_response(
        422, exc.code, str(exc), field=exc.field, unknown_labels=exc.unknown or None
    )


async def _storage_error(_: Request, exc: Exception) -> JSONResponse:
    """A job URI that cannot be used: its message names the URI as given and the kind."""
    assert isinstance(exc, StorageError)
    return error_response(422, exc.code or "invalid_uri", str(exc), field=exc.field)


async def _image_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageError)
    status = next((s for t, s in IMAGE_STATUS.items() if isinstance(exc, t)), 422)
    index = getattr(exc, "index", None)
    return error_response(
        status, exc.kind, str(exc), field="image" if index is None else f"image[{index}]"
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    message = f"{where}: {first.get('msg', 'invalid value')}" if where else "invalid request"
    return error_response(422, "invalid_input", message, field=where or None)


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def allowed_methods(request: Request) -> str:
    """Every method the app serves at the request's path, for a 405's ``Allow``. Starlette's
    own names only the first route whose path matches (``Allow: GET`` for /jobs/{id}, which
    DELETE serves too: each method is its own route). The routes are those the app lists in
    ``app.state.api_routes`` (FastAPI wraps included routers, hiding their routes' paths)."""
    methods: set[str] = set()
    for route in getattr(request.app.state, "api_routes", ()):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    headers = exc.headers
    if exc.status_code == 400:  # a body Starlette could not parse (POST /jobs: not JSON)
        json_body = "json" in request.headers.get("content-type", "")
        code = "invalid_json" if json_body else "invalid_multipart"
    elif exc.status_code == 405 and (allow := allowed_methods(request)):
        headers = {**(headers or {}), "Allow": allow}
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A logged 500. The log names the exception's type and where it was raised, not its
    text, which may quote what the request or a file held (service.failures)."""
    log.error("unhandled error on %s %s: %s", request.method, request.url.path, frames(exc))
    return error_response(500, "internal_error", "internal error (logged by the server)")


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(ImageError, _image_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with the ErrorBody schema."""
    words = {
        400: "Malformed request (e.g. broken multipart body)",
        401: "Missing or wrong API key",
        403: "The key is not an admin key (LABELCLEAN_ADMIN_KEYS)",
        404: "No such job (unknown, expired after its retention time, or another API key's)",
        409: "The job is not in a state for this (results before completion, output in use)",
        413: "Body, image count or image pixels over the limit",
        415: "Not multipart/form-data, not an image, or an image format not allowed",
        422: "Invalid field (labels, threshold, top_k; a job's images, labels, output: "
        "missing, not parsing, outside the allowed roots or a protocol not allowed) or corrupt "
        "image",
        503: "Model not loaded, provider not as demanded, queue full, or (jobs) Redis down",
    }
    return {s: {"model": ErrorBody, "description": words[s]} for s in statuses}
