"""Read a data set laid out with Open Images' own file names.

    DATA/
      class-descriptions.csv                   LabelName,DisplayName (header optional)
      train-annotations-machine-imagelabels.csv ImageID,Source,LabelName,Confidence
      train-annotations-human-imagelabels.csv   human verifications (V): Confidence 1 or 0
      test-annotations-machine-imagelabels.csv
      test-annotations-human-imagelabels.csv
      images/<ImageID>.<ext>
      hierarchy.json or hierarchy.csv          optional class hierarchy (model/hierarchy.py)

Labels are dense arrays of shape (N, d) in the class file's order. Human labels come with a mask
``known`` (N, d): a class nobody verified on an image is unknown, not negative.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classes import LabelClass
from .hierarchy import Hierarchy, find_hierarchy, read_hierarchy

ANNOTATION_COLUMNS = ("ImageID", "LabelName", "Confidence")


class DataError(ValueError):
    """A data set that cannot be read; the message names the file (and line)."""


@dataclass
class DataFiles:
    """Where each part of a data set lives; every name can be overridden."""

    root: Path
    classes: str = "class-descriptions.csv"
    train_machine: str = "train-annotations-machine-imagelabels.csv"
    train_human: str = "train-annotations-human-imagelabels.csv"
    test_machine: str = "test-annotations-machine-imagelabels.csv"
    test_human: str = "test-annotations-human-imagelabels.csv"
    images: str = "images"  # a folder under root, or a URI such as s3://bucket/prefix
    hierarchy: str | None = None  # None: hierarchy.json or .csv under root when present
    # More human labels of training images (reviews: `labelclean import-reviews`), read after
    # train_human: a later file's (image, label) wins; under root, or absolute paths.
    train_human_extra: tuple[str, ...] = ()

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def hierarchy_path(self) -> Path | None:
        """The class hierarchy file: the one named, else the default one if present, else None."""
        return self.path(self.hierarchy) if self.hierarchy else find_hierarchy(self.root)

    @property
    def images_uri(self) -> str:
        return self.images if "://" in self.images else str(self.root / self.images)


@dataclass
class Annotations:
    """Labels of a set of images: ``values`` (N, d) float32 and ``known`` (N, d) bool."""

    image_ids: list[str]
    values: np.ndarray
    known: np.ndarray

    def subset(self, rows: np.ndarray) -> Annotations:
        return Annotations([self.image_ids[i] for i in rows], self.values[rows], self.known[rows])

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class Split:
    """Images with noisy machine labels and (where verified) human labels, aligned by row."""

    image_ids: list[str]
    noisy: np.ndarray  # (N, d) float32: machine confidence, 0 where the machine said nothing
    human: np.ndarray  # (N, d) float32: 1 / 0 where verified, 0 elsewhere
    known: np.ndarray  # (N, d) bool: verified by a human

    def subset(self, rows: np.ndarray) -> Split:
        rows = np.asarray(rows, dtype=np.int64)
        return Split(
            [self.image_ids[i] for i in rows], self.noisy[rows], self.human[rows], self.known[rows]
        )

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class Dataset:
    classes: list[LabelClass]
    train_noisy: Split  # T: training images without verification
    verified: Split  # V: training images with human verification
    test: Split  # held-out images with human labels
    unknown_labels: dict[str, int] = field(default_factory=dict)  # ignored label -> row count
    hierarchy: Hierarchy | None = None


def read_classes(path: Path) -> list[LabelClass]:
    """LabelName,DisplayName rows (standard CSV quoting, header optional)."""
    rows = list(_rows(path))
    if rows and rows[0][1] == ["LabelName", "DisplayName"]:
        rows = rows[1:]
    classes, seen = [], set()
    for line, row in rows:
        if len(row) < 2 or not row[0].strip():
            raise DataError(f"{path}:{line}: expected LabelName,DisplayName, got {row!r}")
        if row[0] in seen:
            raise DataError(f"{path}:{line}: label {row[0]!r} is listed twice")
        seen.add(row[0])
        classes.append(LabelClass(row[0], row[1]))
    if not classes:
        raise DataError(f"{path}: no classes")
    return classes


def read_annotations(
    path: Path,
    class_index: dict[str, int],
    *,
    ignore_unknown: bool = False,
    unknown: dict[str, int] | None = None,
) -> Annotations:
    """Read ImageID,Source,LabelName,Confidence rows into dense (N, d) arrays.

    Labels missing from ``class_index`` raise DataError listing them, unless ``ignore_unknown``
    (then they are counted in ``unknown``).
    """
    rows = _rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataError(f"{path}: empty file (expected a header row)") from None
    missing = [c for c in ANNOTATION_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)}; got {header}")
    col = {name: header.index(name) for name in ANNOTATION_COLUMNS}
    index: dict[str, int] = {}
    entries: list[tuple[int, int, float]] = []
    bad_labels: dict[str, int] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: expected {len(header)} fields, got {len(row)}")
        image_id, label = row[col["ImageID"]], row[col["LabelName"]]
        try:
            confidence = float(row[col["Confidence"]])
        except ValueError:
            raise DataError(
                f"{path}:{line}: Confidence {row[col['Confidence']]!r} is not a number"
            ) from None
        if not (0.0 <= confidence <= 1.0) or not image_id:
            raise DataError(f"{path}:{line}: need an ImageID and a Confidence in [0, 1]")
        if label not in class_index:
            bad_labels[label] = bad_labels.get(label, 0) + 1
            continue
        entries.append((index.setdefault(image_id, len(index)), class_index[label], confidence))
    if bad_labels and not ignore_unknown:
        names = ", ".join(sorted(bad_labels)[:20]) + (" ..." if len(bad_labels) > 20 else "")
        raise DataError(
            f"{path}: {len(bad_labels)} label(s) not in the class file: {names} "
            "(pass --ignore-unknown-labels to skip them)"
        )
    if unknown is not None:
        for label, count in bad_labels.items():
            unknown[label] = unknown.get(label, 0) + count
    values = np.zeros((len(index), len(class_index)), dtype=np.float32)
    known = np.zeros(values.shape, dtype=bool)
    if entries:
        r, c, v = (np.asarray(x) for x in zip(*entries, strict=True))
        values[r, c] = v
        known[r, c] = True
    return Annotations(list(index), values, known)


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-empty CSV row; a clear error for a missing file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            for row in reader:
                if row:
                    yield reader.line_num, row
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from exc


def overlay(base: Annotations, extra: Annotations) -> Annotations:
    """``base`` with ``extra``'s known labels written over it: the images of both (base's
    first), each (image, label) that ``extra`` knows taking its value."""
    ids = list(dict.fromkeys([*base.image_ids, *extra.image_ids]))
    row = {k: i for i, k in enumerate(ids)}
    values = np.zeros((len(ids), base.values.shape[1]), np.float32)
    known = np.zeros(values.shape, bool)
    values[: len(base)], known[: len(base)] = base.values, base.known
    rows = np.asarray([row[k] for k in extra.image_ids], dtype=np.int64)
    if len(rows):
        values[rows] = np.where(extra.known, extra.values, values[rows])
        known[rows] |= extra.known
    return Annotations(ids, values, known)


def _join(machine: Annotations, human: Annotations, ids: list[str]) -> Split:
    d = machine.values.shape[1]
    m_row = {k: i for i, k in enumerate(machine.image_ids)}
    h_row = {k: i for i, k in enumerate(human.image_ids)}
    noisy = np.zeros((len(ids), d), np.float32)
    labels = np.zeros((len(ids), d), np.float32)
    known = np.zeros((len(ids), d), bool)
    for i, image_id in enumerate(ids):
        if image_id in m_row:
            noisy[i] = machine.values[m_row[image_id]]
        if image_id in h_row:
            labels[i] = human.values[h_row[image_id]]
            known[i] = human.known[h_row[image_id]]
    return Split(ids, noisy, (labels >= 0.5).astype(np.float32), known)


def load_dataset(files: DataFiles, *, ignore_unknown: bool = False) -> Dataset:
    """Read every CSV of a data set. T = training images without verification; V = with."""
    classes = read_classes(files.path(files.classes))
    hierarchy_file = files.hierarchy_path
    hierarchy = read_hierarchy(hierarchy_file, classes) if hierarchy_file else None
    class_index = {c.id: i for i, c in enumerate(classes)}
    unknown: dict[str, int] = {}

    def read(name: str) -> Annotations:
        return read_annotations(
            files.path(name), class_index, ignore_unknown=ignore_unknown, unknown=unknown
        )

    train_m, train_h = read(files.train_machine), read(files.train_human)
    for extra in files.train_human_extra:
        train_h = overlay(train_h, read(extra))
    test_m, test_h = read(files.test_machine), read(files.test_human)
    verified_ids = set(train_h.image_ids)
    t_ids = [i for i in train_m.image_ids if i not in verified_ids]
    return Dataset(
        classes=classes,
        train_noisy=_join(train_m, train_h, t_ids),
        verified=_join(train_m, train_h, train_h.image_ids),
        test=_join(test_m, test_h, test_h.image_ids),
        unknown_labels=unknown,
        hierarchy=hierarchy,
    )
