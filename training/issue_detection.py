"""How well each scorer finds the wrong and the missing labels of the test images.

    from labelclean.training.issue_detection import detect_seed
    result = detect_seed(Path("BENCH/seed-0"))   # reads BENCH/seed-0/{noisy,joint,pretrain}/
    result["scorers"]["issue/joint"]["wrong"]["ap"]

Two detection tasks on the test split, each over known (human-verified) pairs only:

- **wrong** labels: the machine listed the label (y > 0) and the human says no; ranked among the
  listed known pairs;
- **missing** labels: the machine did not list it (y == 0) and the human says yes; ranked among
  the unlisted known pairs.

A scorer gives every (image, label) pair an issue score (higher = more likely wrong when listed,
missing when not) and a set of flags (its own cut). ``detection_metrics`` reports the AP of the
issue score and the precision, recall and F1 of the flags. The scorers:

- ``machine``: the machine confidences y (issue 1 - y listed, y unlisted), flagged at the per-class
  thresholds on y calibrated on held-out V (report.json ``thresholds.noisy``);
- ``cleanlab-thresholds`` and ``cleanlab-find-issues``: cleanlab 2.x's multi-label per-class label
  quality (issue = 1 - quality) from the ``noisy`` model's predicted probabilities on the test
  images. Those are out-of-sample, as cleanlab asks of ``pred_probs`` (it recommends out-of-fold
  predictions): the noisy model never trained on a test image. Flagged at that model's calibrated
  classifier thresholds, or by cleanlab's own ``find_multilabel_issues_per_class`` (confident
  learning: ``cleanlab.filter.find_label_issues`` per class, as a binary problem);
- ``cleaned/MODE``: the paper's cleaned labels c (issue 1 - c listed, c unlisted), flagged at the
  cleaned thresholds (a removed or an added label);
- ``cleanlab-mixed-thresholds`` and ``cleanlab-mixed-find-issues``: the same two, from the
  ``finetune-mixed`` model's probabilities: a model that also trained on the human labels V,
  as ours did (the fair anchor). The test images are out-of-sample for it too; its thresholds
  were chosen on V's cross-fitted reads (training.crossfit), as ours were;
- ``issue/MODE``: the model's issue score, flagged as its decision rule flags (a listed label
  removed, an unlisted one added: the final label sets in test_predictions.npz, after the
  class hierarchy); a run from before the decision rule is flagged at ``ISSUE_THRESHOLD``.

Every array is (N, d): N images, d classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from ..model.cleaning import ISSUE_THRESHOLD
from .decision_fit import changed

KINDS = ("wrong", "missing")
OURS = ("joint", "pretrain")
MACHINE, CLEANLAB_T, CLEANLAB_CL = "machine", "cleanlab-thresholds", "cleanlab-find-issues"
CLEANLAB_MIXED_T, CLEANLAB_MIXED_CL = "cleanlab-mixed-thresholds", "cleanlab-mixed-find-issues"
ANCHOR = "finetune-mixed"  # the baseline that trains on T and V: cleanlab's fair anchor
FLAGS_DECISION, FLAGS_AT_HALF = "the decision: removed / added", f"issue >= {ISSUE_THRESHOLD}"


def pools(
    noisy: np.ndarray, human: np.ndarray, known: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """kind -> (pairs ranked, true issues among them), both (N, d) bool."""
    listed, known, yes = noisy > 0, known.astype(bool), human >= 0.5
    return {
        "wrong": (listed & known, listed & known & ~yes),
        "missing": (~listed & known, ~listed & known & yes),
    }


def detection_metrics(
    issue: np.ndarray,
    flags: np.ndarray,
    noisy: np.ndarray,
    human: np.ndarray,
    known: np.ndarray,
) -> dict[str, dict[str, float]]:
    """AP (percent) of ``issue`` and precision, recall, F1 of ``flags`` for each kind.

    ``flags`` outside a kind's pool (e.g. a flag on an unknown pair) do not count. Per kind:
    ``ap`` (NaN without a positive), ``precision`` (NaN when nothing is flagged), ``recall``
    (NaN without a positive), ``f1`` = 2 TP / (flagged + positives) (0 when one of them is 0),
    ``positives``, ``pairs`` (the pool's size), ``flagged`` and ``tied`` (pairs of the pool whose
    issue score equals another's there: ties that blur the ranking).
    """
    out = {}
    for kind, (pool, positive) in pools(noisy, human, known).items():
        chosen = flags.astype(bool) & pool
        n_flagged, n_pos = int(chosen.sum()), int(positive.sum())
        tp = int((chosen & positive).sum())
        ap = average_precision_score(positive[pool], issue[pool]) * 100 if n_pos else float("nan")
        out[kind] = {
            "ap": float(ap),
            "precision": tp / n_flagged if n_flagged else float("nan"),
            "recall": tp / n_pos if n_pos else float("nan"),
            "f1": 2 * tp / (n_flagged + n_pos) if n_flagged + n_pos else float("nan"),
            "positives": n_pos,
            "pairs": int(pool.sum()),
            "flagged": n_flagged,
            "tied": tied_pairs(issue[pool]),
        }
    return out


def tied_pairs(values: np.ndarray) -> int:
    """How many of ``values`` equal at least one other of them."""
    _, counts = np.unique(np.asarray(values).ravel(), return_counts=True)
    return int(counts[counts > 1].sum())


def issue_from_probability(p: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Issue score from a probability that the label applies: 1 - p for a listed label
    (wrong if it does not apply), p for an unlisted one (missing if it does)."""
    return np.where(noisy > 0, 1.0 - p, p)


def flags_at_thresholds(p: np.ndarray, noisy: np.ndarray, thresholds: Any) -> np.ndarray:
    """A listed label with p below its class threshold (removed), an unlisted one at or above
    it (added). ``thresholds``: (d,)."""
    t = np.asarray(thresholds, dtype=np.float64)
    return np.where(noisy > 0, p < t, p >= t)


def _cleanlab_labels(noisy: np.ndarray) -> list[list[int]]:
    """cleanlab's multi-label format: each image's list of listed class indices."""
    return [np.flatnonzero(row > 0).tolist() for row in noisy]


def cleanlab_issue(noisy: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """1 - cleanlab's per-class label quality (``self_confidence``, its default) of each pair.

    ``pred_probs`` should be out-of-sample (cleanlab asks for out-of-fold predictions)."""
    from cleanlab.multilabel_classification.rank import get_label_quality_scores_per_class

    quality = get_label_quality_scores_per_class(_cleanlab_labels(noisy), pred_probs)
    return 1.0 - np.asarray(quality, dtype=np.float64)


def cleanlab_flags(noisy: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Pairs cleanlab's confident learning flags: ``find_multilabel_issues_per_class``, which runs
    ``cleanlab.filter.find_label_issues`` on each class as a binary problem (labels: listed or
    not; pred_probs: [1 - p, p]) with its defaults (``prune_by_noise_rate``). A class listed on
    every image or on none gets no flag (cleanlab needs both given labels to estimate the noise
    rates, and refuses a class listed everywhere). (N, d) bool."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    listed = noisy > 0
    usable = listed.any(axis=0) & ~listed.all(axis=0)
    flags = np.zeros(noisy.shape, dtype=bool)
    if usable.any():
        flags[:, usable] = find_multilabel_issues_per_class(
            _cleanlab_labels(noisy[:, usable]), pred_probs[:, usable], n_jobs=1
        )
    return flags


def issue_summary(arrays: dict[str, np.ndarray], noisy_thresholds: Any = None) -> dict[str, float]:
    """A model's own label-issue figures on test predictions (``arrays``: noisy, human, known,
    issue): AP and F1 of its issue score and, given the machine confidences' calibrated
    ``noisy_thresholds``, of those confidences, for wrong and missing labels, as
    ``issue_wrong_ap``, ``machine_missing_f1``, ... (what ``labelclean train`` prints and the
    bundle's metrics carry; ``labelclean evaluate`` reports the issue score's)."""
    noisy, human, known = arrays["noisy"], arrays["human"], arrays["known"].astype(bool)
    issue = arrays["issue"]
    found = {"issue": detection_metrics(issue, decision_flags(arrays), noisy, human, known)}
    if noisy_thresholds is not None:
        found["machine"] = detection_metrics(
            issue_from_probability(noisy, noisy),
            flags_at_thresholds(noisy, noisy, noisy_thresholds),
            noisy, human, known,
        )  # fmt: skip
    return {
        f"{scorer}_{kind}_{metric}": float(by_kind[kind][metric])
        for scorer, by_kind in found.items()
        for kind in KINDS
        for metric in ("ap", "f1")
    }


def decision_flags(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(N, d) bool: the pairs the decision changed (a listed label not in the final set, an
    unlisted one in it), from ``arrays["final"]``; without it (a run from before the decision
    rule), the issue score at ISSUE_THRESHOLD."""
    if "final" not in arrays:
        return arrays["issue"] >= ISSUE_THRESHOLD
    return changed(arrays["noisy"], arrays["final"])


def _cleanlab_scorers(
    noisy: np.ndarray, human: np.ndarray, known: np.ndarray, probs: np.ndarray, thresholds: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flags at ``thresholds``, cleanlab's own flags): detection metrics of one model's
    probabilities through cleanlab."""
    lab_issue = cleanlab_issue(noisy, probs)
    return (
        detection_metrics(
            lab_issue, flags_at_thresholds(probs, noisy, thresholds), noisy, human, known
        ),
        detection_metrics(lab_issue, cleanlab_flags(noisy, probs), noisy, human, known),
    )


def _load(run: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(run / "test_predictions.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads((run / "report.json").read_text())


def cleaner_loss(run: Path) -> str | None:
    """The cleaner loss recorded in RUN/bundle/bundle.json (absent key = the paper's l1);
    None without a bundle."""
    path = run / "bundle" / "bundle.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("model_config", {}).get("cleaner_loss", "l1")


def detect_seed(seed_dir: Path, modes: tuple[str, ...] = OURS) -> dict[str, Any]:
    """Every scorer's ``detection_metrics`` on one seed's test images, from its run folders.

    Needs ``seed_dir/noisy`` (machine and cleanlab scorers); each of ``modes`` present adds its
    ``cleaned/MODE`` and, when its predictions carry the issue score, ``issue/MODE`` (otherwise
    a line in ``notes`` says it is missing). ``ties``: per mode, known pairs whose c or issue
    score equals another known pair's.
    """
    arrays, report = _load(seed_dir / "noisy")
    noisy, human, known = arrays["noisy"], arrays["human"], arrays["known"].astype(bool)
    probs = arrays["scores"].astype(np.float64)
    scorers = {
        MACHINE: detection_metrics(
            issue_from_probability(noisy, noisy),
            flags_at_thresholds(noisy, noisy, report["thresholds"]["noisy"]),
            noisy, human, known,
        ),
    }  # fmt: skip
    scorers[CLEANLAB_T], scorers[CLEANLAB_CL] = _cleanlab_scorers(
        noisy, human, known, probs, report["thresholds"]["scores"]
    )
    if (seed_dir / ANCHOR / "test_predictions.npz").exists():
        mixed, mixed_report = _load(seed_dir / ANCHOR)
        scorers[CLEANLAB_MIXED_T], scorers[CLEANLAB_MIXED_CL] = _cleanlab_scorers(
            noisy, human, known, mixed["scores"].astype(np.float64),
            mixed_report["thresholds"]["scores"],
        )  # fmt: skip
    ties, notes, losses, flag_rules = {}, [], {}, {}
    for mode in (m for m in modes if (seed_dir / m / "test_predictions.npz").exists()):
        run_arrays, run_report = _load(seed_dir / mode)
        for key in ("noisy", "human", "known"):
            if not np.array_equal(run_arrays[key], arrays[key]):
                raise ValueError(f"{seed_dir / mode}: test {key} labels differ from noisy/'s")
        losses[mode] = cleaner_loss(seed_dir / mode)
        cleaned = run_arrays["cleaned"]
        scorers[f"cleaned/{mode}"] = detection_metrics(
            issue_from_probability(cleaned, noisy),
            flags_at_thresholds(cleaned, noisy, run_report["thresholds"]["cleaned"]),
            noisy, human, known,
        )  # fmt: skip
        ties[mode] = {"pairs": int(known.sum()), "cleaned": tied_pairs(cleaned[known])}
        if "issue" not in run_arrays:
            notes.append(
                f"{seed_dir / mode}/test_predictions.npz has no issue score (a run from before "
                f"the issue score): issue/{mode} left out"
            )
            continue
        issue = run_arrays["issue"]
        scorers[f"issue/{mode}"] = detection_metrics(
            issue, decision_flags(run_arrays), noisy, human, known
        )
        flag_rules[mode] = FLAGS_DECISION if "final" in run_arrays else FLAGS_AT_HALF
        ties[mode]["issue"] = tied_pairs(issue[known])
    return {
        "scorers": scorers, "ties": ties, "notes": notes, "cleaner_loss": losses,
        "flag_rules": flag_rules,
    }  # fmt: skip
