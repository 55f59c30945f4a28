"""Choose the decision thresholds on V's out-of-sample issue scores (model.decision applies them).

    cuts = choose_cuts(issue, noisy, human, known)                  # best F1 of the final sets
    cuts = choose_cuts(issue, noisy, human, known, min_precision=0.9)
    cuts.remove, cuts.add                                           # (d,) each

The rule (model.decision): a listed label is removed when its issue score (P(wrong)) reaches
``remove[k]``; an unlisted one is added when its issue score (P(missing)) reaches ``add[k]``.
The objective is written down: by default the F1 of the final label sets over every verified
(image, class) pair of V, pooled (micro); with ``min_precision`` p, the most true labels kept or
added such that the final sets' precision is at least p. One pooled pair of thresholds comes
first; then a class whose listed pairs hold ``min_class_outcomes`` verified pairs of each outcome
(wrong and right) gets a remove threshold of its own, and one whose unlisted pairs do (missing
and absent) an add threshold of its own, chosen with every other class fixed (coordinate ascent
on the pooled objective; for ``min_precision``, the class's own labels must reach p, else it
keeps the pooled pair). Candidate cuts are quantiles of the scores (at most GRID per group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GRID = 128
MIN_CLASS_OUTCOMES = 300  # verified pairs of each outcome a class needs for a cut of its own
SWEEPS = 2


@dataclass
class Cuts:
    remove: np.ndarray  # (d,) float32: remove a listed label when issue >= remove[k]
    add: np.ndarray  # (d,) float32: add an unlisted one when issue >= add[k]
    per_class: np.ndarray  # (d,) bool: the class has its own pair (else the pooled one)


def _candidates(values: np.ndarray) -> np.ndarray:
    """Cut points: 0, quantiles of ``values`` and 1 (with ``>=``, 0 takes every label and 1 none
    but a score of exactly 1)."""
    if len(values) == 0:
        return np.array([0.0, 1.0])
    qs = np.quantile(values, np.linspace(0, 1, min(GRID, len(values)) + 1))
    return np.unique(np.concatenate([[0.0], qs, [1.0]]))


def _counts(scores: np.ndarray, truth: np.ndarray, cuts: np.ndarray, below: bool):
    """(TP, FP) of the labels a cut selects, per cut: ``scores < cut`` (kept listed labels) or
    ``scores >= cut`` (added unlisted ones). Vectorised by sorting."""
    order = np.argsort(scores, kind="stable")
    s, t = scores[order], truth[order]
    pos = np.concatenate([[0], np.cumsum(t)])
    neg = np.concatenate([[0], np.cumsum(~t)])
    i = np.searchsorted(s, cuts, side="left")  # how many scores are < cut
    if below:
        return pos[i], neg[i]
    return pos[-1] - pos[i], neg[-1] - neg[i]


def _best(tp_l, fp_l, tp_u, fp_u, base_tp, base_fp, positives, min_precision):
    """Best (i, j) of the listed cut i and the unlisted cut j; None if nothing is feasible."""
    tp = base_tp + tp_l[:, None] + tp_u[None, :]
    fp = base_fp + fp_l[:, None] + fp_u[None, :]
    if min_precision is None:
        value = 2.0 * tp / np.maximum(tp + fp + positives, 1)
    else:
        ok = tp >= min_precision * np.maximum(tp + fp, 1e-12)
        value = np.where(ok & (tp + fp > 0), tp + 1e-9 * (tp + fp), -1.0)
        if value.max() < 0:
            return None
    flat = int(np.argmax(value))
    return divmod(flat, value.shape[1])


def choose_cuts(
    issue: np.ndarray,
    noisy: np.ndarray,
    human: np.ndarray,
    known: np.ndarray,
    *,
    min_precision: float | None = None,
    min_class_outcomes: float = MIN_CLASS_OUTCOMES,
    own: tuple[np.ndarray, np.ndarray] | None = None,
) -> Cuts:
    """The thresholds for (N, d) ``issue`` scores of images no fit saw; see the module doc.
    ``own``: (remove, add) (d,) bool, the classes that get a cut of their own, instead of
    ``own_cuts(noisy, human, known, min_class_outcomes)`` (validation fixes them from all of V,
    so that each fold's fit has the structure of the final one)."""
    n, d = issue.shape
    known = known.astype(bool)
    listed, truth = noisy > 0, human >= 0.5
    groups = {}
    for k in range(d):
        lk, uk = known[:, k] & listed[:, k], known[:, k] & ~listed[:, k]
        groups[k] = (issue[lk, k], truth[lk, k], issue[uk, k], truth[uk, k])
    positives = int((truth & known).sum())
    all_l, all_u = known & listed, known & ~listed
    cl, cu = _candidates(issue[all_l]), _candidates(issue[all_u])
    tp_l, fp_l = _counts(issue[all_l], truth[all_l], cl, below=True)
    tp_u, fp_u = _counts(issue[all_u], truth[all_u], cu, below=False)
    best = _best(tp_l, fp_l, tp_u, fp_u, 0, 0, positives, min_precision)
    # nothing reaches the precision: assert no label at all
    pooled = (0.0, 1.0) if best is None else (float(cl[best[0]]), float(cu[best[1]]))
    remove = np.full(d, pooled[0])
    add = np.full(d, pooled[1])
    per_class = np.zeros(d, bool)
    own_remove, own_add = (
        own if own is not None else own_cuts(noisy, human, known, min_class_outcomes)
    )
    chosen = {
        k: (bool(own_remove[k]), bool(own_add[k])) for k in range(d) if own_remove[k] or own_add[k]
    }
    if chosen:
        remove, add, per_class = _per_class(groups, chosen, remove, add, positives, min_precision)
    return Cuts(remove.astype(np.float32), add.astype(np.float32), per_class)


def own_cuts(
    noisy: np.ndarray, human: np.ndarray, known: np.ndarray, least: float = MIN_CLASS_OUTCOMES
) -> tuple[np.ndarray, np.ndarray]:
    """(remove, add) (d,) bool: the classes whose listed pairs (for a remove cut) or unlisted
    pairs (for an add cut) hold ``least`` verified pairs of each outcome."""
    known = known.astype(bool)
    listed, truth = noisy > 0, human >= 0.5
    out = []
    for group in (listed, ~listed):
        chosen = known & group
        yes = (chosen & truth).sum(0)
        no = (chosen & ~truth).sum(0)
        out.append(np.minimum(yes, no) >= least)
    return out[0], out[1]


def _selected(group, remove: float, add: float) -> tuple[int, int]:
    sl, tl, su, tu = group
    kept, added = sl < remove, su >= add
    tp = int((kept & tl).sum() + (added & tu).sum())
    return tp, int((kept & ~tl).sum() + (added & ~tu).sum())


def _per_class(groups, own, remove, add, positives, min_precision):
    remove, add = remove.copy(), add.copy()
    per_class = np.zeros(len(remove), bool)
    counts = {k: _selected(g, remove[k], add[k]) for k, g in groups.items()}
    total_tp, total_fp = (sum(c[i] for c in counts.values()) for i in (0, 1))
    for _ in range(SWEEPS if min_precision is None else 1):
        for k, (own_remove, own_add) in own.items():
            sl, tl, su, tu = groups[k]
            cl = _candidates(sl) if own_remove else np.array([remove[k]])
            cu = _candidates(su) if own_add else np.array([add[k]])
            tp_l, fp_l = _counts(sl, tl, cl, below=True)
            tp_u, fp_u = _counts(su, tu, cu, below=False)
            if min_precision is None:
                base_tp, base_fp = total_tp - counts[k][0], total_fp - counts[k][1]
                best = _best(tp_l, fp_l, tp_u, fp_u, base_tp, base_fp, positives, None)
            else:  # the class's own labels reach the precision on their own
                best = _best(tp_l, fp_l, tp_u, fp_u, 0, 0, 0, min_precision)
            if best is None:
                continue
            remove[k], add[k] = cl[best[0]], cu[best[1]]
            old, counts[k] = counts[k], _selected(groups[k], remove[k], add[k])
            total_tp += counts[k][0] - old[0]
            total_fp += counts[k][1] - old[1]
            per_class[k] = True
    return remove, add, per_class


def consistent(passes: np.ndarray, ancestors: Sequence[np.ndarray] | None) -> np.ndarray:
    """(N, d) bool: the labels that pass plus every ancestor of one (model.cleaning.verdicts
    gives the same sets, label by label)."""
    if ancestors is None:
        return passes
    out = passes.copy()
    for k, above in enumerate(ancestors):
        if len(above):
            out[:, above] |= passes[:, [k]]
    return out


def final_sets(
    noisy: np.ndarray,
    issue: np.ndarray,
    remove: np.ndarray,
    add: np.ndarray,
    ancestors: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """(N, d) bool: the labels after the issue rule, then the hierarchy (model.decision)."""
    passes = np.where(noisy > 0, issue < remove, issue >= add)
    return consistent(passes, ancestors)


def changed(noisy: np.ndarray, final: np.ndarray) -> np.ndarray:
    """(N, d) bool: the pairs a decision changed, a listed label left out of the final set and
    an unlisted one put in (its flags as a label-issue detector)."""
    return np.where(noisy > 0, ~final, final)


def set_metrics(chosen: np.ndarray, human: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of label sets over the verified pairs (pooled)."""
    known = known.astype(bool)
    chosen, truth = chosen & known, (human >= 0.5) & known
    tp, n_chosen, n_true = int((chosen & truth).sum()), int(chosen.sum()), int(truth.sum())
    precision = tp / n_chosen if n_chosen else float("nan")
    recall = tp / n_true if n_true else float("nan")
    f1 = 2 * tp / (n_chosen + n_true) if n_chosen + n_true else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1}
