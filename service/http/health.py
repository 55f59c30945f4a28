"""Liveness and readiness, kept apart: /healthz answers while the process runs, /readyz only
when the model is loaded and running on the provider that was demanded. /readyz also says
whether Redis (bulk jobs) answers, without failing on it: /classify and /clean do not need it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..errors import ModelNotReady, error_responses
from .auth import require_api_key
from .schemas import Health, Ready
from .state import State

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers (no API key needed)")
async def healthz() -> Health:
    return Health(status="alive")


@router.get(
    "/readyz",
    summary="Readiness: the model is loaded on the demanded provider",
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 503),
)
async def readyz(state: State, request: Request) -> Ready:
    if not state.ready or state.provider is None:
        raise ModelNotReady(f"model not ready: {state.reason}")
    redis_error = await request.app.state.jobs.redis_error()
    return Ready(
        status="ready", provider=state.provider, redis="unreachable" if redis_error else "ok",
        redis_error=redis_error,
    )  # fmt: skip
