"""Request-side label handling, shared by the HTTP service, the bulk worker and the offline CLI.

    index = bundle.index                      # model.bundle.label_index, built once
    y = parse_labels('["/m/01g317", {"label": "/m/0k4j", "confidence": 0.7}]', index)  # (d,)
    t = parse_thresholds('{"/m/0k4j": 0.8}', index, bundle.cleaned_thresholds)      # (d,)

Torch-free. Problems raise InputError, whose ``code``, ``field`` and ``unknown`` say what is
wrong; the service turns it into a 422.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


class InputError(ValueError):
    """A request value that cannot be used; ``unknown`` lists label ids not in the model."""

    def __init__(
        self, message: str, *, code: str = "invalid_input", field: str | None = None,
        unknown: Sequence[str] = (),
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.code = code
        self.field = field
        self.unknown = list(unknown)


def _json(value: str | Any, field: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{field} is not valid JSON: {exc}", field=field) from exc


def _unit_number(value: Any, what: str, field: str, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{what} must be a number, got {json.dumps(value)[:60]}", field=field)
    x = float(value)
    low_ok = x >= 0 if allow_zero else x > 0
    if not (math.isfinite(x) and low_ok and x <= 1):
        bound = "between 0 and 1" if allow_zero else "above 0 and at most 1"
        raise InputError(f"{what} must be {bound}, got {value}", field=field)
    return x


def parse_labels(
    value: str | list[Any], index: dict[str, int], *, field: str = "labels"
) -> tuple[np.ndarray, list[str]]:
    """One image's noisy labels -> ((d,) float32 vector y, unknown ids).

    ``value`` is a JSON array (or the decoded list) of label ids, or of
    ``{"label": id, "confidence": x}`` with 0 < x <= 1 (an absent label is left out; a bare id
    means confidence 1). Unknown ids are returned, not raised, so that a caller can list all of a
    request's unknown ids in one error. Other problems raise InputError naming ``field``.
    """
    items = _json(value, field)
    if not isinstance(items, list):
        raise InputError(
            f'{field} must be a JSON array of label ids or of {{"label": id, "confidence": x}}',
            field=field,
        )
    y = np.zeros(len(index), dtype=np.float32)
    seen: set[str] = set()
    unknown: list[str] = []
    for item in items:
        if isinstance(item, str):
            label, confidence = item, 1.0
        elif isinstance(item, dict):
            extra = sorted(set(item) - {"label", "confidence"})
            if extra or not isinstance(item.get("label"), str):
                raise InputError(
                    f'{field}: each object needs a string "label" and an optional "confidence" '
                    f"(got keys {sorted(item)})",
                    field=field,
                )
            label = item["label"]
            confidence = _unit_number(
                item.get("confidence", 1.0), f"{field}: confidence of {label!r}", field,
                allow_zero=False,
            )  # fmt: skip
        else:
            raise InputError(
                f"{field}: items must be label ids (strings) or objects, got "
                f"{json.dumps(item)[:60]}",
                field=field,
            )
        if label in seen:
            raise InputError(f"{field}: label {label!r} is listed twice", field=field)
        seen.add(label)
        column = index.get(label)
        if column is None:
            unknown.append(label)
        else:
            y[column] = confidence
    return y, unknown


def unknown_labels_error(unknown: Sequence[str], field: str = "labels") -> InputError:
    """The error for label ids the model does not know, listing each once."""
    listed = list(dict.fromkeys(unknown))
    shown = ", ".join(repr(u) for u in listed[:20]) + (" ..." if len(listed) > 20 else "")
    return InputError(
        f"{len(listed)} unknown label id(s): {shown} (GET /model lists the model's classes)",
        code="unknown_labels", field=field, unknown=listed,
    )  # fmt: skip


def parse_thresholds(
    value: str | float | dict[str, Any] | None,
    index: dict[str, int],
    defaults: Sequence[float] | np.ndarray,
    *,
    field: str = "threshold",
) -> np.ndarray:
    """Per-class thresholds (d,) float32: the bundle's ``defaults`` with a request's override.

    ``value``: None (the defaults), one number in [0, 1] for every class, or a JSON object
    ``{label id: number}`` overriding those classes. Unknown ids raise InputError listing them.
    Without an override the result may be ``defaults`` itself: do not write to it.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return np.asarray(defaults, dtype=np.float32)  # a bundle's read-only array as it is
    thresholds = np.array(defaults, dtype=np.float32)  # a copy to override
    parsed = _json(value, field)
    if isinstance(parsed, dict):
        unknown = [k for k in parsed if k not in index]
        if unknown:
            raise unknown_labels_error(unknown, field)
        for label, number in parsed.items():
            thresholds[index[label]] = _unit_number(number, f"{field} of {label!r}", field)
        return thresholds
    thresholds[:] = _unit_number(parsed, field, field)
    return thresholds
