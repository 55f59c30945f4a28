"""A class hierarchy: which labels imply which (a Shirt is a Top), read from a file.

    hierarchy = read_hierarchy(Path("data/hierarchy.json"), classes)
    hierarchy.edges                       # (("/lc/tops", "/lc/shirt"), ...): (parent, child)
    hierarchy.ancestors("/lc/shirt")      # ("/lc/long_sleeve", "/lc/tops", "/lc/clothing")

Two file formats, told apart by the suffix:

- ``.json``: Open Images' ``bbox_labels_600_hierarchy.json``: nested objects
  ``{"LabelName": id, "Subcategory": [child objects]}`` (a list of such objects is read as
  their union). A class may appear under several parents (a DAG). The top object may be a root
  that is not a class (Open Images' ``/m/0bl9f``): it is dropped, with its edges. ``"Part"``
  entries (part-of, not is-a) are ignored.
- ``.csv``: ``parent,child`` rows; a first row ``parent,child`` is a header.

Every other id must be one of the classes (an error names the unknown ones and the file), and
the edges must not form a cycle (an error shows one). Torch-free.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classes import LabelClass

FILE_NAMES = ("hierarchy.json", "hierarchy.csv")
"""Where training looks for a hierarchy in a data folder when none is named, in this order."""
Edge = tuple[str, str]


class HierarchyError(ValueError):
    """A hierarchy file that cannot be read, names unknown classes or has a cycle."""


@dataclass(frozen=True)
class Hierarchy:
    """Directed is-a edges (parent, child) between class ids, without duplicates or cycles."""

    edges: tuple[Edge, ...]
    _parents: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parents: dict[str, list[str]] = {}
        for parent, child in self.edges:
            parents.setdefault(child, []).append(parent)
        object.__setattr__(self, "_parents", {k: tuple(v) for k, v in parents.items()})

    @classmethod
    def build(
        cls, edges: Iterable[Edge], classes: Sequence[LabelClass], *, source: str = "hierarchy"
    ) -> Hierarchy:
        """Deduplicate ``edges`` and check them against ``classes``; raises HierarchyError."""
        unique = tuple(dict.fromkeys((str(p), str(c)) for p, c in edges))
        known = {c.id for c in classes}
        unknown = sorted({i for edge in unique for i in edge if i not in known})
        if unknown:
            shown = ", ".join(unknown[:10]) + (
                f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            )
            raise HierarchyError(
                f"{source}: {len(unknown)} label id(s) not in the class list: {shown}"
            )
        hierarchy = cls(unique)
        cycle = hierarchy.find_cycle()
        if cycle:
            raise HierarchyError(f"{source}: the hierarchy has a cycle: {' -> '.join(cycle)}")
        return hierarchy

    def parents(self, label: str) -> tuple[str, ...]:
        return self._parents.get(label, ())

    def ancestors(self, label: str) -> tuple[str, ...]:
        """Every class above ``label`` (parents, their parents, ...), nearest first, once each."""
        seen: dict[str, None] = {}
        frontier = list(self.parents(label))
        while frontier:
            nxt = []
            for p in frontier:
                if p not in seen:
                    seen[p] = None
                    nxt.extend(self.parents(p))
            frontier = nxt
        return tuple(seen)

    def find_cycle(self) -> list[str]:
        """One cycle as [a, b, ..., a] (each a parent of the one before), or [] when none."""
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for start in self._parents:
            if start in state:
                continue
            path: list[str] = [start]
            stack = [iter(self.parents(start))]
            state[start] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    return path[path.index(nxt) :] + [nxt]
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(self.parents(nxt)))
        return []

    def ancestor_columns(self, index: dict[str, int]) -> list[np.ndarray]:
        """Per column of ``index``: the columns of its ancestors (int64, maybe empty)."""
        out = [np.zeros(0, np.int64)] * len(index)
        for label, column in index.items():
            if label in self._parents:
                out[column] = np.array([index[a] for a in self.ancestors(label)], np.int64)
        return out

    def relative_columns(self, index: dict[str, int]) -> tuple[list[list[int]], list[list[int]]]:
        """(parents, children): per column of ``index``, the columns of its direct parents and
        of its direct children (what the issue head reads, model.issue_head)."""
        parents: list[list[int]] = [[] for _ in index]
        children: list[list[int]] = [[] for _ in index]
        for parent, child in self.edges:
            parents[index[child]].append(index[parent])
            children[index[parent]].append(index[child])
        return parents, children

    def to_list(self) -> list[list[str]]:
        """[[parent, child], ...]: how a bundle stores it."""
        return [list(edge) for edge in self.edges]


def json_edges(tree: Any, known: set[str], *, source: str = "hierarchy") -> list[Edge]:
    """(parent, child) edges of an Open Images hierarchy (decoded JSON); see the module doc.

    The top object is dropped when its LabelName is not in ``known``."""
    tops = tree if isinstance(tree, list) else [tree]
    edges: list[Edge] = []
    stack: list[tuple[Any, str | None]] = []
    for top in tops:
        label = _label(top, source)
        if label in known:
            stack.append((top, None))
        else:  # a root that is not a class: its subcategories are top classes
            stack.extend((child, None) for child in _children(top, source))
    while stack:
        node, parent = stack.pop()
        label = _label(node, source)
        if parent is not None:
            edges.append((parent, label))
        stack.extend((child, label) for child in reversed(_children(node, source)))
    return edges


def _label(node: Any, source: str) -> str:
    if not isinstance(node, dict) or not isinstance(node.get("LabelName"), str):
        raise HierarchyError(
            f'{source}: expected {{"LabelName": ..., "Subcategory": [...]}}, got {str(node)[:80]}'
        )
    return node["LabelName"]


def _children(node: dict[str, Any], source: str) -> list[Any]:
    children = node.get("Subcategory", [])
    if not isinstance(children, list):
        raise HierarchyError(f"{source}: Subcategory of {node['LabelName']} is not a list")
    return children


def csv_edges(text: str, *, source: str = "hierarchy") -> list[Edge]:
    """(parent, child) edges from ``parent,child`` rows (blank lines skipped, header optional)."""
    edges: list[Edge] = []
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        row = [cell.strip() for cell in row]
        if not any(row):
            continue
        if line == 1 and [cell.lower() for cell in row] == ["parent", "child"]:
            continue
        if len(row) != 2 or not all(row):
            raise HierarchyError(f"{source}:{line}: expected parent,child, got {row!r}")
        edges.append((row[0], row[1]))
    return edges


def read_hierarchy(path: Path, classes: Sequence[LabelClass]) -> Hierarchy:
    """Read a ``.json`` (Open Images) or ``.csv`` (parent,child) hierarchy of ``classes``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise HierarchyError(f"{path}: cannot read the hierarchy ({exc})") from exc
    if path.suffix.lower() == ".json":
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HierarchyError(f"{path}: not valid JSON ({exc})") from exc
        edges = json_edges(tree, {c.id for c in classes}, source=str(path))
    elif path.suffix.lower() == ".csv":
        edges = csv_edges(text, source=str(path))
    else:
        raise HierarchyError(
            f"{path}: a hierarchy is a .json (Open Images) or .csv (parent,child) file"
        )
    return Hierarchy.build(edges, classes, source=str(path))


def find_hierarchy(folder: Path) -> Path | None:
    """``folder/hierarchy.json`` or ``folder/hierarchy.csv``, the first that exists, or None."""
    for name in FILE_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None
