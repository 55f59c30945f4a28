"""The decision rule: which of an image's labels are kept, removed or added. Torch-free.

    decision = bundle.decision
    remove, add = decision.cuts(min_precision=0.9)        # (d,) each
    passes = decision.passes(noisy, cleaned, issue, remove, add)

Rule ``issue`` (the default): a listed label is removed when its issue score, the probability
that it is wrong, reaches ``remove[k]``; an unlisted label is added when its issue score, the
probability that it is missing, reaches ``add[k]``. The thresholds were chosen on human-verified
images that no fit saw (training.decision_fit), for the objective the bundle names: the F1 of the
final label sets (``f1``), or the most true labels at a minimum precision
(``min_precision=0.9``). ``levels`` holds the thresholds for other minimum precisions, which a
request may ask for.

Rule ``cleaned`` (the paper's, kept to reproduce it): a label passes when the cleaned score c
reaches its per-class threshold: listed -> kept or removed, unlisted -> added.

Either way the class hierarchy then makes the set consistent (model.cleaning.verdicts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .labels import InputError, parse_thresholds

Rule = Literal["issue", "cleaned"]
RULES: tuple[Rule, ...] = ("issue", "cleaned")
LEVELS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
"""The minimum precisions a bundle carries thresholds for; a request's ``min_precision`` uses the
lowest level at or above it."""


def _array(values: Any, d: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.shape != (d,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: expected {d} finite numbers")
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Decision:
    """A bundle's decision rule and its per-class thresholds (each (d,) float32, read-only)."""

    rule: Rule
    objective: str  # "f1" or "min_precision=P"
    remove: np.ndarray  # rule issue: remove a listed label when issue >= remove[k]
    add: np.ndarray  # rule issue: add an unlisted label when issue >= add[k]
    cleaned: np.ndarray  # rule cleaned: a label passes when c >= cleaned[k]
    per_class: np.ndarray  # bool: the class has thresholds of its own (else the pooled ones)
    levels: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def min_precision_levels(self) -> list[float]:
        return sorted(self.levels)

    def level(self, min_precision: float) -> float:
        """The lowest stored level at or above ``min_precision``; InputError when none is."""
        if self.rule != "issue":
            raise InputError(
                "min_precision needs a model whose decision rule is the issue score; this "
                "one decides by the cleaned score (rule cleaned)",
                field="min_precision",
            )
        above = [p for p in self.min_precision_levels if p >= min_precision - 1e-9]
        if not above:
            top = max(self.levels) if self.levels else None
            raise InputError(
                f"min_precision must be at most {top} (the highest precision this model's "
                f"thresholds were chosen for), got {min_precision}",
                field="min_precision",
            )
        return above[0]

    def cuts(
        self,
        *,
        min_precision: float | None = None,
        override: Any = None,
        index: dict[str, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(remove, add) thresholds for a request: the bundle's, those of ``min_precision``'s
        level, then a request's ``threshold`` override (one number, or {label id: number}; see
        model.labels.parse_thresholds) on both. With rule ``cleaned`` both are the cleaned-score
        thresholds."""
        if self.rule == "cleaned":
            if min_precision is not None:
                self.level(min_precision)  # raises
            t = parse_thresholds(override, index or {}, self.cleaned)
            return t, t
        remove, add = self.remove, self.add
        if min_precision is not None:
            remove, add = self.levels[self.level(min_precision)]
        if override is None or (isinstance(override, str) and not override.strip()):
            return remove, add
        return parse_thresholds(override, index or {}, remove), parse_thresholds(
            override, index or {}, add
        )

    def passes(
        self,
        noisy: np.ndarray,
        cleaned: np.ndarray,
        issue: np.ndarray,
        remove: np.ndarray,
        add: np.ndarray,
    ) -> np.ndarray:
        """Which labels the rule puts in the set, before the hierarchy: any shape (..., d)."""
        listed = noisy > 0
        if self.rule == "cleaned":
            return cleaned >= remove
        return np.where(listed, issue < remove, issue >= add)

    def summary(self) -> dict[str, Any]:
        """The rule, its objective and thresholds, without the levels' (GET /model, report.json)."""
        return {
            "rule": self.rule,
            "objective": self.objective,
            "remove": [float(x) for x in self.remove],
            "add": [float(x) for x in self.add],
            "per_class": [bool(x) for x in self.per_class],
        }

    def to_dict(self) -> dict[str, Any]:
        """bundle.json's ``decision``: the summary and every level's thresholds."""
        return {
            **self.summary(),
            "levels": [
                {"min_precision": p, "remove": [float(x) for x in r], "add": [float(x) for x in a]}
                for p, (r, a) in sorted(self.levels.items())
            ],
        }

    @classmethod
    def paper(cls, cleaned: Any) -> Decision:
        """The paper's rule on c at these thresholds, for a model without fitted issue
        thresholds (a checkpoint from before the decision rule)."""
        t = _array(cleaned, len(cleaned), "thresholds.cleaned")
        return cls("cleaned", "f1", t, t, t, np.zeros(len(t), bool), {})

    @classmethod
    def from_dict(cls, data: dict[str, Any], cleaned: Any, d: int) -> Decision:
        """Read bundle.json's ``decision``; ``cleaned``: its ``thresholds.cleaned``."""
        rule = data.get("rule")
        if rule not in RULES:
            raise ValueError(f"decision.rule must be one of {', '.join(RULES)}, not {rule!r}")
        levels = {}
        for entry in data.get("levels", []):
            p = float(entry["min_precision"])
            if not (0 < p <= 1 and math.isfinite(p)):
                raise ValueError(f"decision.levels: min_precision {p} is not in (0, 1]")
            levels[p] = (
                _array(entry["remove"], d, f"decision.levels[{p}].remove"),
                _array(entry["add"], d, f"decision.levels[{p}].add"),
            )
        per_class = np.asarray(data.get("per_class", [False] * d), dtype=bool)
        if per_class.shape != (d,):
            raise ValueError(f"decision.per_class: expected {d} booleans")
        return cls(
            rule=rule,
            objective=str(data.get("objective", "f1")),
            remove=_array(data["remove"], d, "decision.remove"),
            add=_array(data["add"], d, "decision.add"),
            cleaned=_array(cleaned, d, "thresholds.cleaned"),
            per_class=per_class,
            levels=levels,
        )


def parse_min_precision(value: Any, field: str = "min_precision") -> float | None:
    """A request's minimum precision: None when absent, else a number in (0, 1]."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        got = str(value)[:40]
        raise InputError(f"{field} must be a number, got {got!r}", field=field) from None
    if isinstance(value, bool) or not (math.isfinite(x) and 0 < x <= 1):
        raise InputError(f"{field} must be above 0 and at most 1, got {value}", field=field)
    return x
