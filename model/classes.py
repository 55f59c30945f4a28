"""The model's classes: a label id and its display name, in the model's column order.

Its own module so that the bundle (model/bundle.py) and the class hierarchy
(model/hierarchy.py), which both name it, import it without importing each other. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelClass:
    id: str  # e.g. Open Images' "/m/01g317"
    name: str  # display name
