"""Which images of T a reviewer should verify next: the selection behind ``labelclean
suggest-verify`` and ``labelclean review --order suggest``.

    changed = np.isin(queue.verdicts, (REMOVED, ADDED))          # the model's decision
    chosen = suggest(queue.issue, changed, budget=100, listed=queue.noisy > 0,
                     image_ids=queue.image_ids, eligible=queue.done & ~verified)
    chosen.rows, chosen.expected, chosen.picked_for              # (K,) each, best first

The paper picks V at random. A verified image is worth most where the model is least sure of
its decision: a reviewer who checks image i overturns class k's decision with probability

    u[i, k] = P(the decision on (i, k) is wrong)
            = issue[i, k]      when the decision keeps the label as the machine gave it
                               (a listed label kept: P(wrong); an unlisted one left out:
                               P(missing))
            = 1 - issue[i, k]  when it changes it (removed or added),

so ``expected[i] = sum_k u[i, k]`` is the expected number of label changes verifying image i
brings (``Queue.p_right`` is 1 - u). Ranking by it alone piles the budget on the classes the
model finds hard and may leave a rare class without a single new verified image, so the
images are ordered by two kinds of pick, interleaved so that after m picks ceil(m * quota) of
them (default half) were class picks:

- **class pick**: classes take turns, rarest first, and each takes its unchosen image with the
  highest u[i, k] for that class. With q class picks among d classes every class gets q // d
  images or more, and when q < d the q rarest get one each. A class's rarity is its expected
  number of positives among the eligible images, ``sum_i P(class k on image i)`` (1 - issue
  for a listed label, issue for an unlisted one).
- **change pick**: the unchosen image of highest ``expected``.

A budget of K takes the first K images of that order, so a bigger budget only adds images,
and the review queue's ``--order suggest`` is the same order over every image. Ties go to the
higher ``expected``, then the smaller ImageID: the same scores give the same images in the same
order. Only ``eligible`` images are chosen (cleaned, and not verified already).

Torch-free (the serving install runs ``suggest-verify`` and ``review``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ...model.openimages import DataError, read_annotations

QUOTA = 0.5
"""The default share of class picks (the rest are change picks)."""
BY_CHANGES = -1
"""``Suggestion.picked_for`` of a change pick (an image chosen for its expected changes)."""
CSV_HEADER = ("Rank", "ImageID", "ExpectedChanges", "PickedFor", "Classes")
"""suggest-verify's CSV: Rank 1 = verify first; ExpectedChanges: sum_k u[i, k], the expected
number of the model's decisions on the image a reviewer overturns; PickedFor: ``class <name>``
(that class's turn chose it) or ``expected changes``; Classes: the classes whose decision is
most likely wrong, ``Name u`` by u, highest first (u >= SHOW_U, at most SHOW_CLASSES)."""
SHOW_U = 0.05
SHOW_CLASSES = 5


@dataclass(frozen=True)
class Suggestion:
    """The chosen images, best first (K = the number chosen, at most the budget)."""

    rows: np.ndarray  # (K,) int: rows of the score arrays
    expected: np.ndarray  # (K,) float64: each image's expected label changes, sum_k u[i, k]
    picked_for: np.ndarray  # (K,) int: the class column whose turn chose it, or BY_CHANGES
    uncertainty: np.ndarray  # (K, d) float64: u[i, k] of the chosen images
    rarity_order: np.ndarray  # (d,) int: class columns, rarest first (the quota's turns)
    mean_expected: float  # mean expected changes over every eligible image (a random pick's)
    eligible: int  # how many images could be chosen


def uncertainty(issue: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """(N, d) float64: u = P(the decision is wrong) of every pair, from the (N, d) issue score
    and whether the decision ``changed`` the machine's label (removed or added)."""
    issue = issue.astype(np.float64)
    return np.where(changed, 1.0 - issue, issue)


def presence(issue: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """(N, d) float64: P(the class is on the image): 1 - issue for a ``listed`` label (issue =
    P(wrong)), issue for an unlisted one (issue = P(missing))."""
    issue = issue.astype(np.float64)
    return np.where(listed, 1.0 - issue, issue)


def suggest(
    issue: np.ndarray,
    changed: np.ndarray,
    *,
    budget: int,
    listed: np.ndarray,
    image_ids: Sequence[str],
    eligible: np.ndarray | None = None,
    quota: float = QUOTA,
) -> Suggestion:
    """Choose up to ``budget`` images to verify, best first (see the module docstring).

    ``issue``: (N, d) issue scores; ``changed``: (N, d) bool, the decision removes or adds the
    label; ``listed``: (N, d) bool, the machine listed it; ``image_ids``: N ids, the last tie
    break; ``eligible``: (N,) bool, the images that may be chosen (default all); ``quota``: the
    share of class picks, in [0, 1]."""
    if budget < 0:
        raise ValueError(f"budget must be at least 0, got {budget}")
    if not 0.0 <= quota <= 1.0:
        raise ValueError(f"quota must be between 0 and 1, got {quota}")
    n, d = issue.shape
    ok = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
    u = uncertainty(issue, changed)
    expected = u.sum(axis=1)
    candidates = np.flatnonzero(ok)
    rarity = presence(issue[candidates], listed[candidates]).sum(axis=0)
    rarity_order = np.lexsort((np.arange(d), rarity)).tolist()
    budget = min(budget, len(candidates))
    # Candidates best first: for the change picks, then for each class's picks (ImageIDs rank
    # as strings, the last tie break).
    id_rank = np.argsort(np.argsort(np.asarray(image_ids, dtype=object), kind="stable"))
    tie = (id_rank[candidates], -expected[candidates])
    lines = [candidates[np.lexsort(tie)]]
    lines += [candidates[np.lexsort((*tie, -u[candidates, k]))] for k in range(d)]
    heads = [0] * (d + 1)
    taken = np.zeros(n, bool)
    rows: list[int] = []
    picked_for: list[int] = []
    turn = 0  # the next class, as a position in rarity_order
    while len(rows) < budget:
        m = len(rows) + 1
        class_pick = d > 0 and math.ceil(m * quota - 1e-9) > math.ceil((m - 1) * quota - 1e-9)
        k = rarity_order[turn % d] if class_pick else BY_CHANGES
        line, h = lines[k + 1], k + 1
        while taken[line[heads[h]]]:  # some candidate is untaken: len(rows) < len(candidates)
            heads[h] += 1
        row = int(line[heads[h]])
        taken[row] = True
        rows.append(row)
        picked_for.append(k)
        turn += class_pick
    chosen = np.asarray(rows, dtype=np.int64)
    return Suggestion(
        rows=chosen,
        expected=expected[chosen],
        picked_for=np.asarray(picked_for, dtype=np.int64),
        uncertainty=u[chosen],
        rarity_order=np.asarray(rarity_order, dtype=np.int64),
        mean_expected=float(expected[candidates].mean()) if len(candidates) else 0.0,
        eligible=len(candidates),
    )


def order_all(
    issue: np.ndarray,
    changed: np.ndarray,
    *,
    listed: np.ndarray,
    image_ids: Sequence[str],
    eligible: np.ndarray | None = None,
    quota: float = QUOTA,
) -> np.ndarray:
    """(M,) int: the rows of every eligible image in the suggestion's order (the review queue's
    ``--order suggest``); ``suggest(budget=K)`` chooses its first K."""
    everyone = issue.shape[0] if eligible is None else int(np.count_nonzero(eligible))
    return suggest(
        issue, changed, budget=everyone, listed=listed, image_ids=image_ids, eligible=eligible,
        quota=quota,
    ).rows  # fmt: skip


def verified_images(
    paths: Sequence[tuple[str, Path]], class_index: dict[str, int], *, ignore_unknown: bool
) -> set[str]:
    """The ImageIDs of the human-labels CSVs ``paths`` ((flag, path) pairs: the flag names a bad
    file in the error): images already in V, which suggestion leaves out."""
    found: set[str] = set()
    for flag, path in paths:
        try:
            found.update(
                read_annotations(path, class_index, ignore_unknown=ignore_unknown).image_ids
            )
        except DataError as exc:
            raise ValueError(f"{flag}: {exc}") from None
    return found


def why(u: np.ndarray, names: Sequence[str]) -> str:
    """The Classes column of one image from its (d,) u: ``Name 0.48; Name 0.31``."""
    order = [k for k in np.argsort(-u, kind="stable").tolist() if u[k] >= SHOW_U]
    return "; ".join(f"{names[k]} {u[k]:.2f}" for k in order[:SHOW_CLASSES])


def write_csv(out: TextIO, chosen: Suggestion, image_ids: Sequence[str],
              names: Sequence[str]) -> None:  # fmt: skip
    """Write the chosen images as CSV_HEADER rows, best first (``names``: one per class)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for rank, (row, expected, k, u) in enumerate(
        zip(chosen.rows.tolist(), chosen.expected.tolist(), chosen.picked_for.tolist(),
            chosen.uncertainty, strict=True), start=1,
    ):  # fmt: skip
        picked = "expected changes" if k == BY_CHANGES else f"class {names[k]}"
        writer.writerow([rank, image_ids[row], f"{expected:.4f}", picked, why(u, names)])


def summary(chosen: Suggestion, names: Sequence[str], *, budget: int) -> str:
    """Lines for the command's output: how many were chosen, the expected changes against a
    random pick's, and how many chosen images each class's decision is uncertain on."""
    k = len(chosen.rows)
    total = float(chosen.expected.sum())
    lines = [
        f"{k} image(s) to verify of {chosen.eligible} unverified (budget {budget}): "
        f"{total:.1f} expected label changes, {total / max(k, 1):.2f} per image "
        f"(a random pick of {k}: {chosen.mean_expected * k:.1f}, "
        f"{chosen.mean_expected:.2f} per image)"
    ]
    if k:
        covered = (chosen.uncertainty >= SHOW_U).sum(axis=0)
        picks = np.bincount(chosen.picked_for[chosen.picked_for >= 0], minlength=len(names))
        parts = [f"{names[c]} {picks[c]}/{covered[c]}" for c in chosen.rarity_order.tolist()]
        lines.append(
            "per class, rarest first: images picked for it / chosen images where its decision "
            f"may be wrong (u >= {SHOW_U}): " + ", ".join(parts)
        )
    return "\n".join(lines)
