"""What the running service holds: settings, the bundle, the ONNX Runtime model, the batcher,
the decode pool, and whether it is ready.

Loading follows KServe's model lifecycle: the bundle is read and verified at start-up (a bad
bundle stops the server), then in the background the session is created, one synthetic batch
goes through preprocess -> predict -> postprocess, and only then ``ready`` turns true. The
server is live (``/healthz``) throughout; ``/readyz`` says why it is not ready yet, and stays
not-ready when CUDA was demanded but onnxruntime fell back to CPU.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Annotated

import numpy as np
from fastapi import Depends, Request
from PIL import Image

from ..model.bundle import Bundle, load_bundle
from ..model.classifying import classify_images
from ..model.cleaning import ImageLimits, Offload
from ..model.runtime import OnnxModel
from ..settings import Settings
from .batcher import DynamicBatcher
from .errors import ModelNotReady
from .metrics import Metrics
from .threads import ThreadPool

log = logging.getLogger("labelclean.service")
WARMUP_BATCH = 2


class ServiceState:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bundle: Bundle | None = None
        self.model: OnnxModel | None = None
        self.batcher: DynamicBatcher | None = None
        self.ready = False
        self.reason = "the model is loading"
        self.limits = ImageLimits(settings.max_pixels, settings.allowed_formats)
        self._decode_pool = ThreadPool(settings.decode_threads, "decode")
        self.offload: Offload = self._decode_pool.run
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Verify the bundle now (raises BundleError), load the model in the background."""
        if self.settings.model is None:
            raise ValueError("no model bundle: pass --model BUNDLE or set LABELCLEAN_MODEL")
        self.bundle = load_bundle(self.settings.model)
        self._loading = asyncio.get_running_loop().create_task(self._load(), name="load-model")

    async def _load(self) -> None:
        assert self.bundle is not None
        s = self.settings
        try:
            self.model = await asyncio.to_thread(
                OnnxModel, self.bundle, device=s.device, threads=s.inference_threads, spin=False
            )
            if not self.model.ready:
                self.reason = (
                    f"CUDA was demanded (device={s.device}) but onnxruntime runs the model on "
                    f"{', '.join(self.model.providers)}: the CUDA provider could not be created "
                    "(CUDA 13 / cuDNN 9 libraries missing or no GPU?)"
                )
                log.error("not ready: %s", self.reason)
                return
            await self._warm_up(self.model)
            self.batcher = DynamicBatcher(
                self.model.run,
                max_batch_size=s.max_batch_size,
                max_queue_delay_s=s.max_queue_delay_ms / 1000,
                max_queue_images=s.max_queue_images,
                observer=self.metrics,
            )
            self.batcher.start()
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, the server stays up
            self.reason = f"the model failed to load: {exc}"
            log.exception("model load failed")
            return
        self.ready = True
        self.reason = ""
        self.metrics.ready.set(1)
        log.info("model ready on %s (%s)", self.model.provider, self.bundle.path)

    async def _warm_up(self, model: OnnxModel) -> None:
        """One synthetic batch through the whole path: decode, normalise, run, postprocess."""
        assert self.bundle is not None
        spec = self.bundle.input
        grey = Image.fromarray(np.full((spec.height, spec.width, spec.channels), 128, np.uint8)
                               .squeeze())  # fmt: skip
        buffer = io.BytesIO()
        grey.save(buffer, format="PNG")
        limits = ImageLimits(self.limits.max_pixels, ("PNG",))
        await classify_images(
            self.bundle, [buffer.getvalue()] * WARMUP_BATCH,
            predict=lambda x, y: asyncio.to_thread(model.run, x, y),
            limits=limits, offload=self.offload,
        )  # fmt: skip

    async def stop(self) -> None:
        if self._loading is not None:
            await asyncio.gather(self._loading, return_exceptions=True)
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        self._decode_pool.shutdown()

    def require_ready(self) -> tuple[Bundle, DynamicBatcher]:
        """The bundle and batcher, or ModelNotReady (503) saying why not."""
        if not self.ready or self.bundle is None or self.batcher is None:
            raise ModelNotReady(f"model not ready: {self.reason}")
        return self.bundle, self.batcher


async def get_state(request: Request) -> ServiceState:
    """FastAPI dependency: the app's ServiceState (async: a sync one would cost a thread hop)."""
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]
"""Route parameter type: ``state: State``."""
