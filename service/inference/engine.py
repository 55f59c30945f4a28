"""The model side of the service: the bundle in an ONNX Runtime session, the dynamic batcher,
the decode threads, and the two pipelines that answer /classify and /clean.

It runs in the inference process (service.inference.process), apart from the HTTP process, so
decoding, batching and postprocessing never hold the HTTP server's GIL.

    engine = Engine(settings, observer)
    await engine.load()                     # session, warm-up batch, batcher; sets ready/reason
    body = await engine.classify(images, filenames, threshold="0.3", top_k=5)   # JSON bytes

Loading follows KServe's model lifecycle: the session is created, one synthetic batch goes
through preprocess -> predict -> postprocess, and only then ``ready`` turns true; it stays false
when CUDA was demanded but onnxruntime fell back to CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ...model.bundle import Bundle, load_bundle
from ...model.classifying import classify_images
from ...model.cleaning import ImageLimits, LabelVerdict, clean_decodable, clean_images
from ...model.decision import parse_min_precision
from ...model.review_score import summary
from ...model.runtime import OnnxModel
from ...settings import Settings, decode_threads
from ..errors import BundleRejected, ModelNotReady
from .batcher import BatchObserver, DynamicBatcher
from .threads import ThreadPool

log = logging.getLogger("labelclean.service")
WARMUP_BATCH = 2
RETIRE_S = 600.0  # a reloaded model's batcher stops once its requests are done, or after this


class Engine:
    def __init__(self, settings: Settings, observer: BatchObserver | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self.bundle: Bundle | None = None
        self.model: OnnxModel | None = None
        self.batcher: DynamicBatcher | None = None
        self.ready = False
        self.reason = "the model is loading"
        self.limits = ImageLimits(settings.max_pixels, settings.allowed_formats)
        self._decode_pool = ThreadPool(decode_threads(settings), "decode")
        self.offload = self._decode_pool.run
        self._users: dict[DynamicBatcher, int] = {}  # requests under way on each batcher
        self._reloading = asyncio.Lock()

    @property
    def providers(self) -> list[str]:
        return self.model.providers if self.model else []

    async def load(self) -> None:
        """Bundle, session, warm-up, batcher. Never raises: ``ready`` and ``reason`` say how it
        went (a broken bundle or a provider not as demanded leaves the engine not ready)."""
        s = self.settings
        try:
            if s.model is None:
                raise ValueError("no model bundle: pass --model BUNDLE or set LABELCLEAN_MODEL")
            self.bundle = await asyncio.to_thread(load_bundle, s.model)
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
            await self._warm_up(self.bundle, self.model)
            self.batcher = self._new_batcher(self.model)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, the server stays up
            self.reason = f"the model failed to load: {exc}"
            log.exception("model load failed")
            return
        self.ready = True
        self.reason = ""
        log.info("model ready on %s (%s)", self.model.provider, self.bundle.path)

    def _new_batcher(self, model: OnnxModel) -> DynamicBatcher:
        s = self.settings
        batcher = DynamicBatcher(
            model.run,
            max_batch_size=s.max_batch_size,
            max_queue_delay_s=s.max_queue_delay_ms / 1000,
            max_queue_images=s.max_queue_images,
            observer=self.observer,
        )
        batcher.start()
        return batcher

    async def _warm_up(self, bundle: Bundle, model: OnnxModel) -> None:
        """One synthetic batch through the whole path: decode, normalise, run, postprocess."""
        spec = bundle.input
        grey = Image.fromarray(np.full((spec.height, spec.width, spec.channels), 128, np.uint8)
                               .squeeze())  # fmt: skip
        buffer = io.BytesIO()
        grey.save(buffer, format="PNG")
        limits = ImageLimits(self.limits.max_pixels, ("PNG",))
        await classify_images(
            bundle, [buffer.getvalue()] * WARMUP_BATCH,
            predict=lambda x, y: asyncio.to_thread(model.run, x, y),
            limits=limits, offload=self.offload,
        )  # fmt: skip

    async def stop(self) -> None:
        self.ready = False
        for batcher in {*self._users, *([self.batcher] if self.batcher else [])}:
            await batcher.stop()
        self._decode_pool.shutdown()

    @contextlib.asynccontextmanager
    async def _serving(self, n: int) -> AsyncIterator[tuple[Bundle, Any]]:
        """The bundle and the batcher's ``predict`` for a request of ``n`` images (admitted by
        the batcher), from its start to its end: a reload meanwhile leaves it to finish on the
        model it began with."""
        if not self.ready or self.bundle is None or self.batcher is None:
            raise ModelNotReady(f"model not ready: {self.reason}")
        bundle, batcher = self.bundle, self.batcher
        self._users[batcher] = self._users.get(batcher, 0) + 1
        try:
            async with batcher.expect(n) as predict:
                yield bundle, predict
        finally:
            self._users[batcher] -= 1

    async def reload(self) -> dict[str, Any]:
        """Load the bundle at ``settings.model`` again (a new one put there) beside the one that
        serves, warm it up, then serve new requests with it; requests under way finish on the
        old one, whose batcher stops when they are done. A bundle that fails to load raises
        BundleRejected and the old one goes on serving. Returns the new bundle's path and
        sha256, the previous sha256, and whether it changed (the same bundle is not reloaded)."""
        async with self._reloading:
            s = self.settings
            old, previous = self.batcher, self.bundle.sha256 if self.bundle else None
            try:
                if s.model is None:
                    raise ValueError("no model bundle configured (LABELCLEAN_MODEL)")
                bundle = await asyncio.to_thread(load_bundle, s.model)
                if self.ready and bundle.sha256 == previous:
                    return {"path": str(bundle.path), "sha256": previous,
                            "previous_sha256": previous, "changed": False}  # fmt: skip
                model = await asyncio.to_thread(
                    OnnxModel, bundle, device=s.device, threads=s.inference_threads, spin=False
                )
                if not model.ready:
                    raise ValueError(f"CUDA was demanded but the model runs on {model.providers}")
                await self._warm_up(bundle, model)
            except Exception as exc:  # noqa: BLE001 - the old model serves on
                log.error("reload of %s refused: %s", s.model, exc)
                raise BundleRejected(f"the bundle at {s.model} was not loaded: {exc}") from None
            self.bundle, self.model, self.batcher = bundle, model, self._new_batcher(model)
            self.ready, self.reason = True, ""
            if old is not None:
                asyncio.get_running_loop().create_task(self._retire(old))
            log.info("model reloaded: %s (sha256 %s, was %s)", bundle.path, bundle.sha256[:12],
                     (previous or "none")[:12])  # fmt: skip
            return {"path": str(bundle.path), "sha256": bundle.sha256,
                    "previous_sha256": previous, "changed": True}  # fmt: skip

    async def _retire(self, batcher: DynamicBatcher) -> None:
        deadline = time.monotonic() + RETIRE_S
        while self._users.get(batcher, 0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._users.pop(batcher, None)
        await batcher.stop()

    async def classify(
        self, images: Sequence[bytes], filenames: Sequence[str | None], *,
        threshold: str | None = None, top_k: int | None = None,
    ) -> bytes:  # fmt: skip
        """POST /classify's response body (JSON) for these images."""
        async with self._serving(len(images)) as (bundle, predict):
            results = await classify_images(
                bundle, images, predict=predict, threshold=threshold, top_k=top_k,
                limits=self.limits, offload=self.offload,
            )  # fmt: skip
        return _json(
            {
                "results": [
                    {"index": i, "filename": filenames[i], "labels": [vars(x) for x in labels]}
                    for i, labels in enumerate(results)
                ]
            }
        )

    async def clean(
        self, images: Sequence[bytes], filenames: Sequence[str | None], *,
        labels: Sequence[str], threshold: str | None = None, min_precision: str | None = None,
    ) -> bytes:  # fmt: skip
        """POST /clean's response body (JSON) for these images and their noisy labels."""
        async with self._serving(len(images)) as (bundle, predict):
            results = await clean_images(
                bundle, images, labels, predict=predict, thresholds=threshold,
                min_precision=parse_min_precision(min_precision),
                limits=self.limits, offload=self.offload,
            )  # fmt: skip
        return _json(
            {
                "results": [
                    {
                        "index": i,
                        "filename": filenames[i],
                        "labels": [_verdict(v) for v in r.labels],
                        "cleaned_labels": r.cleaned_labels,
                        "suspected_missing": [
                            {"id": s.id, "name": s.name, "issue_score": s.issue}
                            for s in r.suspected_missing
                        ],
                    }
                    for i, r in enumerate(results)
                ]
            }
        )

    async def review(
        self, images: Sequence[bytes], filenames: Sequence[str | None], *,
        labels: Sequence[list[Any]],
    ) -> bytes:  # fmt: skip
        """Label Studio's predictions (service.review.label_studio): each image cleaned as /clean
        cleans it, summarised as its final label set, review score and highest issue score
        (``model.review_score.summary``); an image that cannot be decoded gets an
        ``error`` instead, and the others are answered. ``sha256``: the bundle that answered."""
        async with self._serving(len(images)) as (bundle, predict):
            done, failed = await clean_decodable(
                bundle, images, labels, predict=predict, limits=self.limits,
                offload=self.offload,
            )  # fmt: skip
        results = [
            {"index": i, **summary(done[i], bundle.index)}
            if i in done
            else {"index": i, "error": failed.get(i, "not cleaned")}
            for i in range(len(images))
        ]
        return _json({"sha256": bundle.sha256, "results": results})


def _verdict(v: LabelVerdict) -> dict[str, Any]:
    return {
        "id": v.id, "name": v.name, "noisy": v.noisy, "cleaned": v.cleaned,
        "confidence": v.confidence, "threshold": v.threshold, "verdict": v.verdict,
        "issue_score": v.issue, "reason": v.reason,
    }  # fmt: skip


def _json(body: dict[str, Any]) -> bytes:
    """Serialised here, not by FastAPI: its response-model round trip costs more than the rest
    of a small request. The body's shape is the routes' ``response_model`` (openapi.yaml), which
    the schemathesis contract test checks on live responses."""
    return json.dumps(body, separators=(",", ":")).encode()
