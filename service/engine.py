"""The model side of the service: the bundle in an ONNX Runtime session, the dynamic batcher,
the decode threads, and the two pipelines that answer /classify and /clean.

It runs in the inference process (service.backend), apart from the HTTP process, so decoding,
batching and postprocessing never hold the HTTP server's GIL.

    engine = Engine(settings, observer)
    await engine.load()                     # session, warm-up batch, batcher; sets ready/reason
    body = await engine.classify(images, filenames, threshold="0.3", top_k=5)   # JSON bytes

Loading follows KServe's model lifecycle: the session is created, one synthetic batch goes
through preprocess -> predict -> postprocess, and only then ``ready`` turns true; it stays false
when CUDA was demanded but onnxruntime fell back to CPU.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..model.bundle import Bundle, load_bundle
from ..model.classifying import classify_images
from ..model.cleaning import ImageLimits, LabelVerdict, clean_decodable, clean_images
from ..model.decision import parse_min_precision
from ..model.runtime import OnnxModel
from ..settings import Settings, decode_threads
from .batcher import BatchObserver, DynamicBatcher
from .errors import ModelNotReady
from .threads import ThreadPool

log = logging.getLogger("labelclean.service")
WARMUP_BATCH = 2


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
            await self._warm_up(self.model)
            self.batcher = DynamicBatcher(
                self.model.run,
                max_batch_size=s.max_batch_size,
                max_queue_delay_s=s.max_queue_delay_ms / 1000,
                max_queue_images=s.max_queue_images,
                observer=self.observer,
            )
            self.batcher.start()
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, the server stays up
            self.reason = f"the model failed to load: {exc}"
            log.exception("model load failed")
            return
        self.ready = True
        self.reason = ""
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
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        self._decode_pool.shutdown()

    def _require_ready(self) -> tuple[Bundle, DynamicBatcher]:
        if not self.ready or self.bundle is None or self.batcher is None:
            raise ModelNotReady(f"model not ready: {self.reason}")
        return self.bundle, self.batcher

    async def classify(
        self, images: Sequence[bytes], filenames: Sequence[str | None], *,
        threshold: str | None = None, top_k: int | None = None,
    ) -> bytes:  # fmt: skip
        """POST /classify's response body (JSON) for these images."""
        bundle, batcher = self._require_ready()
        async with batcher.expect(len(images)) as predict:
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
        bundle, batcher = self._require_ready()
        async with batcher.expect(len(images)) as predict:
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
        """Label Studio's predictions (service.label_studio): each image cleaned as /clean
        cleans it, summarised as its final label set, review score and highest issue score
        (``label_studio.predictions.summary``); an image that cannot be decoded gets an
        ``error`` instead, and the others are answered."""
        from .label_studio.predictions import summary

        bundle, batcher = self._require_ready()
        async with batcher.expect(len(images)) as predict:
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
        return _json({"results": results})


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
