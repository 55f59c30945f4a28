"""What the HTTP process holds: settings, the bundle's metadata, the inference process, and
whether the model is ready.

The bundle is read and verified at start-up (a bad bundle stops the server); the model itself loads
in the inference process (service.inference.process), which reports when it is ready and on which
provider. The server is live (``/healthz``) throughout; ``/readyz`` says why it is not ready yet,
and stays not-ready when CUDA was demanded but onnxruntime fell back to CPU, or while a crashed
inference process restarts. The inference process says which bundle answers (``use_bundle``: after
POST /model/reload, GET /model shows the new one).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from ...model.bundle import Bundle, load_bundle
from ...settings import Settings
from ..errors import ModelNotReady
from ..inference.client import BackendClient
from .metrics import Metrics

log = logging.getLogger("labelclean.service")


class ServiceState:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bundle: Bundle | None = None
        self.ready = False
        self.reason = "the model is loading"
        self.providers: list[str] = []
        self.backend = BackendClient(
            settings, on_state=self._on_state, on_batch=metrics.batch, on_model=self._on_model
        )
        self._bundle_task: asyncio.Task[None] | None = None

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

    def _on_model(self, path: str, sha256: str) -> None:
        """The inference process answers with this bundle: read its metadata here too (in a
        thread: reading a bundle checks the model file's hash)."""
        self._bundle_task = asyncio.get_running_loop().create_task(self.use_bundle(path, sha256))

    async def use_bundle(self, path: str, sha256: str) -> None:
        """``self.bundle`` becomes the bundle at ``path`` unless it is already the one with
        ``sha256`` (GET /model, Label Studio's model_version)."""
        if self.bundle is not None and self.bundle.sha256 == sha256:
            return
        try:
            bundle = await asyncio.to_thread(load_bundle, Path(path))
        except Exception as exc:  # noqa: BLE001 - the inference process loaded it; keep the last
            log.error("cannot read the bundle the model now answers with (%s): %s", path, exc)
            return
        if bundle.sha256 == sha256:
            self.bundle = bundle

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
