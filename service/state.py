"""What the HTTP process holds: settings, the bundle's metadata, the inference process, and
whether the model is ready.

The bundle is read and verified at start-up (a bad bundle stops the server); the model itself
loads in the inference process (service.backend), which reports when it is ready and on which
provider. The server is live (``/healthz``) throughout; ``/readyz`` says why it is not ready yet,
and stays not-ready when CUDA was demanded but onnxruntime fell back to CPU, or while a crashed
inference process restarts.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..model.bundle import Bundle, load_bundle
from ..settings import Settings
from .backend_client import BackendClient
from .errors import ModelNotReady
from .metrics import Metrics


class ServiceState:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bundle: Bundle | None = None
        self.ready = False
        self.reason = "the model is loading"
        self.providers: list[str] = []
        self.backend = BackendClient(settings, on_state=self._on_state, on_batch=metrics.batch)

    @property
    def provider(self) -> str | None:
        """The provider that runs the model (the first one in use)."""
        return self.providers[0] if self.providers else None

    async def start(self) -> None:
        """Verify the bundle now (raises BundleError), load the model in the background."""
        if self.settings.model is None:
            raise ValueError("no model bundle: pass --model BUNDLE or set LABELCLEAN_MODEL")
        self.bundle = load_bundle(self.settings.model)
        await self.backend.start()

    def _on_state(self, ready: bool, reason: str, providers: list[str]) -> None:
        self.ready, self.reason = ready, reason
        if providers:  # a dead process reports none: /model keeps showing the last ones
            self.providers = providers
        self.metrics.ready.set(1 if ready else 0)

    async def stop(self) -> None:
        self.ready = False
        await self.backend.stop()

    def require_ready(self) -> BackendClient:
        """The inference process, or ModelNotReady (503) saying why it cannot answer."""
        if not self.ready or self.bundle is None:
            raise ModelNotReady(f"model not ready: {self.reason}")
        return self.backend


async def get_state(request: Request) -> ServiceState:
    """FastAPI dependency: the app's ServiceState (async: a sync one would cost a thread hop)."""
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]
"""Route parameter type: ``state: State``."""
