"""How well the decision and the issue score do on images no fit saw: V's out-of-sample reads
(``validate``, what chooses defaults) and the test split (``decision_metrics``, for the report).

    figures = validate(oof, fit.oof_issue, ancestors)
    figures["final"]["f1"], figures["machine_thresholded"]["f1"], figures["issue"]["wrong"]["ap"]

``validate`` chooses every threshold on all folds but one and applies it to the fold left out
(the issue scores are already out-of-fold, training.issue_fit), with the classes that get cuts
of their own fixed as the final fit on all of V fixes them, so its F1 figures are honest
estimates of the final rule: the final label sets (the issue rule, then the hierarchy), the
paper's rule (c at its per-class thresholds, then the hierarchy) and the machine's confidences
at their per-class thresholds. All pooled over the verified pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .crossfit import OutOfFold
from .decision_fit import (
    MIN_CLASS_OUTCOMES,
    changed,
    choose_cuts,
    consistent,
    final_sets,
    own_cuts,
    set_metrics,
)
from .issue_detection import detection_metrics
from .metrics import calibrate_thresholds


def _at(values: np.ndarray, thresholds: Any) -> np.ndarray:
    return values >= np.asarray(thresholds, dtype=np.float32)


def cross_validated_sets(
    oof: OutOfFold,
    oof_issue: np.ndarray,
    ancestors: Sequence[np.ndarray] | None = None,
    min_precision: float | None = None,
    **cut_options: Any,
) -> dict[str, np.ndarray]:
    """(N, d) bool label sets of V's images, each fold's from thresholds chosen on the other
    folds: ``final`` (the issue rule, then the hierarchy), ``paper_rule`` (c at its per-class
    thresholds, then the hierarchy) and ``machine_thresholded`` (the listed labels whose
    confidence reaches its per-class threshold). ``cut_options`` go to ``choose_cuts``."""
    folds = oof.fit_folds()
    n, d = oof.noisy.shape
    least = cut_options.pop("min_class_outcomes", MIN_CLASS_OUTCOMES)
    own = own_cuts(oof.noisy, oof.human, oof.known, least)  # as the final fit on all of V
    sets = {name: np.zeros((n, d), bool) for name in ("final", "paper_rule", "machine_thresholded")}
    listed = oof.noisy > 0
    for j in np.unique(folds):
        fit, held = folds != j, folds == j
        args = (oof.human[fit], oof.known[fit])
        cuts = choose_cuts(
            oof_issue[fit], oof.noisy[fit], *args, min_precision=min_precision, own=own,
            **cut_options,
        )  # fmt: skip
        sets["final"][held] = final_sets(
            oof.noisy[held], oof_issue[held], cuts.remove, cuts.add, ancestors
        )
        t_clean = calibrate_thresholds(oof.cleaned[fit], *args)
        sets["paper_rule"][held] = consistent(_at(oof.cleaned[held], t_clean), ancestors)
        t_noisy = calibrate_thresholds(oof.noisy[fit], *args)
        sets["machine_thresholded"][held] = listed[held] & _at(oof.noisy[held], t_noisy)
    return sets


def validate(
    oof: OutOfFold,
    oof_issue: np.ndarray,
    ancestors: Sequence[np.ndarray] | None = None,
    min_precision: float | None = None,
    **cut_options: Any,
) -> dict[str, Any]:
    """Cross-validated figures on V (see the module docstring): the sets of
    ``cross_validated_sets`` and the issue score's AP and the decision's flags."""
    sets = cross_validated_sets(oof, oof_issue, ancestors, min_precision, **cut_options)
    listed = oof.noisy > 0
    n = len(oof)
    out: dict[str, Any] = {
        name: set_metrics(chosen, oof.human, oof.known) for name, chosen in sets.items()
    }
    out["machine_listed"] = set_metrics(listed, oof.human, oof.known)
    flags = changed(oof.noisy, sets["final"])
    out["issue"] = detection_metrics(oof_issue, flags, oof.noisy, oof.human, oof.known)
    out["machine"] = detection_metrics(
        np.where(listed, 1.0 - oof.noisy, oof.noisy),
        np.where(listed, ~sets["machine_thresholded"], False),
        oof.noisy, oof.human, oof.known,
    )  # fmt: skip
    out["images"] = n
    out["folds"] = int(len(np.unique(oof.fit_folds())))
    return out


def decision_metrics(
    arrays: dict[str, np.ndarray],
    thresholds: dict[str, list[float]],
    ancestors: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """The final label sets on test (``arrays["final"]``) and the sets they are compared with,
    as ``final_precision``, ``final_f1``, ``paper_rule_f1``, ... and the F1 of the decision's
    flags (removed listed labels, added unlisted ones) as ``decision_wrong_f1`` and
    ``decision_missing_f1``."""
    noisy, human, known = arrays["noisy"], arrays["human"], arrays["known"].astype(bool)
    listed = noisy > 0
    sets = {
        "final": arrays["final"],
        "paper_rule": consistent(_at(arrays["cleaned"], thresholds["cleaned"]), ancestors),
    }
    if "noisy" in thresholds:  # the machine's confidences at theirs, with the hierarchy
        sets["machine_thresholded_h"] = consistent(
            listed & _at(noisy, thresholds["noisy"]), ancestors
        )
    out = {}
    for name, chosen in sets.items():
        for metric, value in set_metrics(chosen, human, known).items():
            out[f"{name}_{metric}"] = value
    flags = changed(noisy, arrays["final"])
    found = detection_metrics(arrays["issue"], flags, noisy, human, known)
    for kind in ("wrong", "missing"):
        for metric in ("precision", "recall", "f1"):
            out[f"decision_{kind}_{metric}"] = float(found[kind][metric])
    return out
