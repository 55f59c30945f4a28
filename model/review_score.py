"""How sure the model is of its decisions on one image: what the review queue ranks by and what
Label Studio's predictions carry (``score``, ``mislabeling``). Computed where images are
cleaned (the inference process, the review queue); torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .cleaning import CleanResult, issue_scores

CHANGED = ("removed", "added")


def p_right(issue: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """(d,) float64: the probability that each class's decision is right, from its (d,) issue
    score and whether the decision ``changed`` the label (removed or added): the issue score
    when it did, 1 - the issue score when it did not (kept, or left out)."""
    issue = issue.astype(np.float64)
    return np.where(changed, issue, 1.0 - issue)


def summary(result: CleanResult, index: dict[str, int]) -> dict[str, Any]:
    """What a prediction needs of one cleaned image: the label ids of its final label set (in
    class order), its review score and its highest issue score (JSON-ready; ``index``: the
    bundle's label id -> column)."""
    assert result.issue is not None
    changed = np.zeros(len(result.issue), bool)
    changed[[index[v.id] for v in result.labels if v.verdict in CHANGED]] = True
    final = sorted((v.id for v in result.labels if v.verdict != "removed"), key=index.__getitem__)
    return {
        "final": final,
        "score": round(float(p_right(result.issue, changed).min()), 6),
        "mislabeling": issue_scores(result.issue.max(keepdims=True))[0],
    }
