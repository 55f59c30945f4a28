"""Score a model on held-out images: the classifier against human labels, and the cleaner's
labels against the machine labels they came from. Works on a PyTorch network or a bundle."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .metrics import ap_all, cleaning_report, mean_ap

Predict = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def predict_batches(
    predict: Predict,
    pixels: np.ndarray,
    noisy: np.ndarray,
    normalize: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``predict`` over (N, H, W, C) uint8 pixels in batches -> (scores, cleaned, issue),
    each (N, d)."""
    outputs: list[list[np.ndarray]] = [[], [], []]
    for i in range(0, len(pixels), batch_size):
        result = predict(normalize(pixels[i : i + batch_size]), noisy[i : i + batch_size])
        for kept, array in zip(outputs, result, strict=True):
            kept.append(array)
    empty = np.zeros((0, noisy.shape[1]), np.float32)
    s, c, issue = (np.concatenate(o) if o else empty for o in outputs)
    return s, c, issue


def score(
    scores: np.ndarray,
    cleaned: np.ndarray,
    noisy: np.ndarray,
    human: np.ndarray,
    known: np.ndarray,
    thresholds_cleaned: list[float],
    thresholds_noisy: list[float] | None = None,
) -> dict[str, float]:
    """The paper's metrics in percent: classifier AP_all and MAP, and the cleaner's report."""
    known = known.astype(bool)
    report = cleaning_report(noisy, cleaned, human, known, thresholds_cleaned, thresholds_noisy)
    pct = {k: 100 * v for k, v in report.items() if k.startswith(("ap_", "map_"))}
    rest = {k: v for k, v in report.items() if not k.startswith(("ap_", "map_"))}
    return {
        "AP_all": 100 * ap_all(scores, human, known),
        "MAP": 100 * mean_ap(scores, human, known),
        **{f"cleaner_{k}": v for k, v in {**pct, **rest}.items()},
    }
