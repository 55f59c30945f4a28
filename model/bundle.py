"""The model bundle: a folder that holds everything the service needs, verified on load.

    BUNDLE/
      model.onnx     inputs image (N,C,H,W) float32, noisy_labels (N,d); outputs scores, cleaned,
                     issue (each (N,d) float32)
      classes.csv    LabelName,DisplayName in the model's class order
      bundle.json    format version, input spec, thresholds, the decision rule and its
                     thresholds ("decision", model/decision.py), training mode, metrics, sha256,
                     and optionally the class hierarchy: "hierarchy": [[parent, child], ...]
                     (model/hierarchy.py; a bundle without the key has none)

Torch-free: the service loads bundles with this module alone.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .classes import LabelClass
from .config import InputSpec
from .decision import Decision
from .hierarchy import Hierarchy

BUNDLE_FORMAT = 3  # 2: the graph has the ``issue`` output; 3: the decision rule on it
OUTPUTS = ("scores", "cleaned", "issue")  # the ONNX graph's outputs, in this order
MODEL_FILE = "model.onnx"
CLASSES_FILE = "classes.csv"
META_FILE = "bundle.json"


class BundleError(ValueError):
    """A bundle that is missing, malformed, of another format version or tampered with."""


@dataclass
class Bundle:
    path: Path
    classes: list[LabelClass]
    input: InputSpec
    thresholds_cleaned: list[float]  # per class: cleaned score >= threshold means "label present"
    thresholds_scores: list[float]  # per class: classifier score >= threshold means "present"
    mode: str = "joint"
    metrics: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    hierarchy: Hierarchy | None = None
    decision: Decision | None = None  # always set by load_bundle

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # Built once per loaded bundle, not per request: with Open Images' 6,012 classes the index
    # alone took 1.25 ms to build, two thirds of a /clean request (benchmarks/RESULTS.md).
    @cached_property
    def index(self) -> dict[str, int]:
        """``label_index(self.classes)``."""
        return label_index(self.classes)

    @cached_property
    def score_thresholds(self) -> np.ndarray:
        """``thresholds_scores`` as a read-only (d,) float32 array."""
        return _read_only(self.thresholds_scores)

    @cached_property
    def ancestor_columns(self) -> list[np.ndarray] | None:
        """Per class column: its ancestors' columns in the hierarchy (None without one)."""
        return self.hierarchy.ancestor_columns(self.index) if self.hierarchy else None

    @cached_property
    def cleaned_thresholds(self) -> np.ndarray:
        """``thresholds_cleaned`` as a read-only (d,) float32 array."""
        return _read_only(self.thresholds_cleaned)

    def metadata(self) -> dict[str, Any]:
        """What /model reports: everything in bundle.json plus the classes."""
        return {
            "format": BUNDLE_FORMAT,
            "mode": self.mode,
            "input": self.input.to_dict(),
            "classes": [{"id": c.id, "name": c.name} for c in self.classes],
            "thresholds": {"cleaned": self.thresholds_cleaned, "scores": self.thresholds_scores},
            "decision": self.decision_summary(),
            "metrics": self.metrics,
            "sha256": self.sha256,
        }

    def decision_summary(self) -> dict[str, Any]:
        """The decision rule, its objective, its thresholds and the minimum precisions a
        request may ask for (GET /model)."""
        decision = self.require_decision()
        return {**decision.summary(), "min_precision_levels": decision.min_precision_levels}

    def require_decision(self) -> Decision:
        if self.decision is None:
            raise BundleError(f"{self.path}: no decision rule")
        return self.decision


def label_index(classes: Sequence[LabelClass]) -> dict[str, int]:
    """Label id -> column of the model's (N, d) inputs and outputs."""
    return {c.id: i for i, c in enumerate(classes)}


def _read_only(values: list[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    array.flags.writeable = False
    return array


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_bundle(
    out: Path,
    onnx_file: Path,
    classes: list[LabelClass],
    spec: InputSpec,
    *,
    thresholds_cleaned: list[float],
    thresholds_scores: list[float],
    mode: str,
    metrics: dict[str, Any],
    model_config: dict[str, Any],
    decision: Decision,
    hierarchy: Hierarchy | None = None,
) -> Bundle:
    """Write classes.csv and bundle.json beside ``onnx_file`` (which must be ``out/model.onnx``)."""
    if onnx_file != out / MODEL_FILE:
        raise ValueError(f"the ONNX file must be {out / MODEL_FILE}")
    for name, values in (("cleaned", thresholds_cleaned), ("scores", thresholds_scores)):
        if len(values) != len(classes):
            raise ValueError(f"{len(values)} {name} thresholds for {len(classes)} classes")
    with (out / CLASSES_FILE).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["LabelName", "DisplayName"])
        writer.writerows([c.id, c.name] for c in classes)
    meta = {
        "format": BUNDLE_FORMAT,
        "model_file": MODEL_FILE,
        "sha256": file_sha256(onnx_file),
        "input": spec.to_dict(),
        "num_classes": len(classes),
        "thresholds": {
            "cleaned": [float(t) for t in thresholds_cleaned],
            "scores": [float(t) for t in thresholds_scores],
        },
        "decision": decision.to_dict(),
        "mode": mode,
        "metrics": metrics,
        "model_config": model_config,
    }
    if hierarchy is not None:
        meta["hierarchy"] = hierarchy.to_list()
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return load_bundle(out)


def load_bundle(path: Path | str) -> Bundle:
    """Read and verify a bundle folder: format version, files present, ONNX checksum."""
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise BundleError(f"{path} is not a model bundle: {META_FILE} is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta_file}: not valid JSON ({exc})") from exc
    if meta.get("format") in (1, 2):
        raise BundleError(
            f"{meta_file}: bundle format {meta['format']} predates the decision rule on the "
            "label-issue score (format 3); train the model again (labelclean train --data DATA "
            "--out RUN, or --init a noisy-phase checkpoint), or export its checkpoint again "
            "for the paper's rule on the cleaned score (labelclean export --checkpoint "
            "RUN/checkpoint.pt --out BUNDLE)"
        )
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{meta_file}: bundle format {meta.get('format')!r} is not supported "
            f"(this labelclean reads format {BUNDLE_FORMAT})"
        )
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise BundleError(f"{path}: {MODEL_FILE} is missing")
    actual = file_sha256(model_file)
    if actual != meta.get("sha256"):
        raise BundleError(
            f"{model_file}: checksum mismatch (bundle.json says {meta.get('sha256')}, "
            f"file is {actual}); the model file was changed or corrupted"
        )
    classes = _read_classes(path / CLASSES_FILE)
    try:
        thresholds = meta["thresholds"]
        bundle = Bundle(
            path=path,
            classes=classes,
            input=InputSpec.from_dict(meta["input"]),
            thresholds_cleaned=[float(t) for t in thresholds["cleaned"]],
            thresholds_scores=[float(t) for t in thresholds["scores"]],
            mode=str(meta.get("mode", "")),
            metrics=dict(meta.get("metrics", {})),
            model_config=dict(meta.get("model_config", {})),
            sha256=actual,
        )
        bundle.decision = Decision.from_dict(
            meta["decision"], bundle.thresholds_cleaned, len(classes)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{meta_file}: malformed field ({exc!r})") from exc
    if meta.get("hierarchy") is not None:
        try:
            edges = [(str(p), str(c)) for p, c in meta["hierarchy"]]
            bundle.hierarchy = Hierarchy.build(edges, classes, source=f"{meta_file}: hierarchy")
        except (TypeError, ValueError) as exc:  # HierarchyError is a ValueError
            raise BundleError(f"{meta_file}: malformed hierarchy ({exc})") from exc
    if len(bundle.thresholds_cleaned) != len(classes) or len(bundle.thresholds_scores) != len(
        classes
    ):
        raise BundleError(f"{meta_file}: thresholds do not match the {len(classes)} classes")
    return bundle


def _read_classes(path: Path) -> list[LabelClass]:
    if not path.is_file():
        raise BundleError(f"{path} is missing")
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if rows and rows[0] == ["LabelName", "DisplayName"]:
        rows = rows[1:]
    if not rows or any(len(r) != 2 for r in rows):
        raise BundleError(f"{path}: expected LabelName,DisplayName rows")
    return [LabelClass(r[0], r[1]) for r in rows]
