"""Average precision as the paper reports it, and how much the cleaner improves labels.

All functions take arrays of shape (N, d): ``scores`` (any real), ``labels`` (0/1) and ``known``
(bool; unverified pairs are left out, not counted as negatives).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve


def ap_all(scores: np.ndarray, labels: np.ndarray, known: np.ndarray) -> float:
    """AP over all known image-class pairs pooled together, in [0, 1]."""
    y, s = labels[known], scores[known]
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, s))


def per_class_ap(scores: np.ndarray, labels: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(d,) AP of each class over its known pairs; NaN for a class with no known positive."""
    out = np.full(scores.shape[1], np.nan)
    for k in range(scores.shape[1]):
        y, s = labels[known[:, k], k], scores[known[:, k], k]
        if y.any():
            out[k] = average_precision_score(y, s)
    return out


def mean_ap(scores: np.ndarray, labels: np.ndarray, known: np.ndarray) -> float:
    """MAP: the mean of per-class AP over classes with at least one known positive."""
    aps = per_class_ap(scores, labels, known)
    return float(np.nanmean(aps)) if not np.isnan(aps).all() else float("nan")


def calibrate_thresholds(
    scores: np.ndarray, labels: np.ndarray, known: np.ndarray, *, default: float = 0.5
) -> list[float]:
    """Per class, the score threshold with the best F1 on these (held-out) images.

    A class with no known positive, or whose only usable cut is 0, keeps ``default``.
    """
    thresholds = []
    for k in range(scores.shape[1]):
        y, s = labels[known[:, k], k], scores[known[:, k], k]
        if not y.any():
            thresholds.append(default)
            continue
        precision, recall, cuts = precision_recall_curve(y, s)
        f1 = (2 * precision * recall / np.maximum(precision + recall, 1e-12))[:-1]
        f1[cuts <= 0] = -1.0  # a threshold of 0 would put the class on every image
        best = int(np.argmax(f1)) if len(cuts) else 0
        thresholds.append(float(cuts[best]) if len(cuts) and f1[best] >= 0 else default)
    return thresholds


def break_ties(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Scores that order by ``primary`` and, among equal values, by ``secondary`` (both in
    [0, 1]): float64 leaves room below float32's resolution for the second key."""
    return primary.astype(np.float64) + 1e-9 * secondary.astype(np.float64)


def cleaning_report(
    noisy: np.ndarray,
    cleaned: np.ndarray,
    labels: np.ndarray,
    known: np.ndarray,
    thresholds: list[float] | np.ndarray,
    noisy_thresholds: list[float] | np.ndarray | None = None,
) -> dict[str, float]:
    """How much better cleaned labels c are than noisy labels y, against human labels.

    AP and MAP of c versus y used as scores (and of y as listed, 1 for every machine label; and
    of c with its ties broken by y: clipping makes many pairs exactly 0 or 1, and ties rank
    poorly); precision, recall and F1 of the label sets
    (y > 0 versus c >= threshold, and y >= its own calibrated threshold when
    ``noisy_thresholds`` is given, a fairer baseline for confidence-valued y); precision and
    recall of the labels the cleaner removes (a noisy positive whose cleaned score falls below
    its class threshold) and adds.
    """
    t = np.asarray(thresholds, dtype=np.float32)
    had, has = (noisy > 0) & known, (cleaned >= t) & known
    wrong, missing = had & (labels < 0.5), (~(noisy > 0)) & known & (labels >= 0.5)
    removed, added = had & ~has, ~(noisy > 0) & known & has

    def ratio(a: np.ndarray, b: np.ndarray) -> float:
        return float(a.sum() / b.sum()) if b.sum() else float("nan")

    truth = known & (labels >= 0.5)
    sets = {}
    chosen_sets = [("noisy", had), ("cleaned", has)]
    if noisy_thresholds is not None:
        tn = np.asarray(noisy_thresholds, dtype=np.float32)
        chosen_sets.append(("noisy_thresholded", (noisy > 0) & (noisy >= tn) & known))
    for name, chosen in chosen_sets:
        precision, recall = ratio(chosen & truth, chosen), ratio(chosen & truth, truth)
        sets[f"precision_{name}"], sets[f"recall_{name}"] = precision, recall
        sets[f"f1_{name}"] = 2 * precision * recall / (precision + recall or float("nan"))
    rankings = {
        "noisy": noisy,
        "listed": (noisy > 0).astype(np.float32),
        "cleaned": cleaned,
        "cleaned_tiebreak": break_ties(cleaned, noisy),
    }
    for name, scores in rankings.items():
        sets[f"ap_all_{name}"] = ap_all(scores, labels, known)
        sets[f"map_{name}"] = mean_ap(scores, labels, known)
    return {
        **sets,
        "removed": int(removed.sum()),
        "removed_precision": ratio(removed & wrong, removed),
        "removed_recall": ratio(removed & wrong, wrong),
        "added": int(added.sum()),
        "added_precision": ratio(added & missing, added),
        "added_recall": ratio(added & missing, missing),
    }
