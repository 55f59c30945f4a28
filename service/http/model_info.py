"""GET /model: the bundle's metadata, classes and thresholds, the provider in use, the limits."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..errors import ModelNotReady, error_responses
from .auth import require_api_key
from .schemas import ModelInfo
from .state import State

router = APIRouter(tags=["model"], dependencies=[Depends(require_api_key)])


@router.get(
    "/model", summary="Bundle metadata, classes, decision rule, thresholds, provider, input spec",
    responses=error_responses(401, 503),
)  # fmt: skip
async def model_info(state: State) -> ModelInfo:
    if state.bundle is None:
        raise ModelNotReady("no bundle loaded")
    s = state.settings
    meta = state.bundle.metadata()
    return ModelInfo(
        ready=state.ready,
        reason=state.reason or None,
        device=s.device,
        provider=state.provider,
        providers=state.providers,
        path=str(state.bundle.path),
        input={**meta["input"], "color_mode": state.bundle.input.color_mode},
        batching={"max_batch_size": s.max_batch_size, "max_queue_delay_ms": s.max_queue_delay_ms},
        limits={
            "max_images": s.max_images,
            "max_body_bytes": s.max_body_bytes,
            "max_pixels": s.max_pixels,
            "allowed_formats": list(s.allowed_formats),
        },
        **{
            k: meta[k]
            for k in ("format", "mode", "sha256", "classes", "thresholds", "decision", "metrics")
        },
    )
