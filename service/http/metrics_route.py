"""GET /metrics: the app's Prometheus registry (or all workers') in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import error_responses
from .auth import require_api_key

router = APIRouter(tags=["metrics"], dependencies=[Depends(require_api_key)])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "OK"},
        **error_responses(401),
    },
)
async def metrics(request: Request) -> Response:
    metrics = request.app.state.metrics
    await metrics.jobs.refresh()  # the bulk-job counters, from Redis
    registry = metrics.exposed
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
