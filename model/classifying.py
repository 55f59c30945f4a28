"""Classifying images: the one code path behind POST /classify (and the CLI, worker).

    results = await classify_images(bundle, [png_bytes], predict=model.run, top_k=5)
    results[0]   # [ScoredLabel(id, name, score), ...], highest score first

A label is returned when its classifier score reaches its threshold: the bundle's per-class
``thresholds_scores`` unless the request overrides them (one number, or {label id: number}),
then at most ``top_k`` of them. Pass ``threshold=0`` for a plain top-k. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bundle import Bundle
from .cleaning import (
    DEFAULT_LIMITS,
    ImageLimits,
    Offload,
    Predict,
    call_predict,
    prepare_images,
    round_scores,
)
from .labels import InputError, parse_thresholds


@dataclass(frozen=True)
class ScoredLabel:
    id: str
    name: str
    score: float  # sigmoid(h(f(I))) for this class
    threshold: float


async def classify_images(
    bundle: Bundle,
    images: Sequence[bytes],
    *,
    predict: Predict,
    threshold: str | float | dict[str, Any] | None = None,
    top_k: int | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
    offload: Offload | None = None,
) -> list[list[ScoredLabel]]:
    """Per image, its labels whose score reaches the threshold, best first, at most ``top_k``.

    Raises InputError (threshold, top_k) before decoding, then ImageError.
    """
    if top_k is not None and (isinstance(top_k, bool) or not 1 <= top_k <= bundle.num_classes):
        raise InputError(f"top_k must be between 1 and {bundle.num_classes}", field="top_k")
    limit = parse_thresholds(threshold, bundle.index, bundle.score_thresholds)
    batch = await prepare_images(images, bundle.input, limits, offload)
    noisy = np.zeros((len(images), bundle.num_classes), dtype=np.float32)
    scores = (await call_predict(predict, batch, noisy))[0]
    classes = bundle.classes
    out = []
    for row in scores:
        passing = np.flatnonzero(row >= limit)
        if top_k is not None and len(passing) > top_k:  # sort only the top_k and their ties
            kth = np.partition(row[passing], len(passing) - top_k)[len(passing) - top_k]
            passing = passing[row[passing] >= kth]
        best = passing[np.argsort(-row[passing], kind="stable")][:top_k]
        shown = zip(best.tolist(), round_scores(row[best]), round_scores(limit[best]), strict=True)
        out.append([ScoredLabel(classes[i].id, classes[i].name, s, t) for i, s, t in shown])
    return out
