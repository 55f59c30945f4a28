"""Build a small noisy multi-label image data set in Open Images' file layout.

Each image is a 2x2 mosaic of Fashion-MNIST items (56x56 at full resolution, stored as a
28x28 thumbnail). Every training image carries *machine* labels from an imperfect CNN
tagger (:mod:`labelclean.training.demo_annotator`) that saw the full-resolution items; a
small verified subset V and all test images also carry *human* labels (all 15 classes
verified) taken from the truth. The 15 classes are the 10 Fashion-MNIST items plus 5
super-classes (tops, long-sleeve, clothing, footwear, accessory) forming a hierarchy.

Example::

    from pathlib import Path
    from labelclean.training.demo_data import build_demo_data

    stats = build_demo_data(Path("demo/data"), seed=0)
    print(stats.per_class["/lc/shirt"]["train_precision"])

Files written to ``out``: ``class-descriptions.csv``, ``{train,test}-annotations-
{machine,human}-imagelabels.csv``, ``images/<ImageID>.png``, ``demo-stats.json`` and
``hierarchy.json`` (the classes' is-a hierarchy, in Open Images' format; see ``hierarchy``).
"""

from __future__ import annotations

import csv
import gzip
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import demo_annotator as ann
from .demo_annotator import CELL

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
ITEMS = [
    ("tshirt", "T-shirt/top"), ("trouser", "Trouser"), ("pullover", "Pullover"),
    ("dress", "Dress"), ("coat", "Coat"), ("sandal", "Sandal"), ("shirt", "Shirt"),
    ("sneaker", "Sneaker"), ("bag", "Bag"), ("ankle_boot", "Ankle boot"),
]  # fmt: skip
"""Fashion-MNIST's items, in the order of its label ids 0..9."""
SUPER_CLASSES = [
    ("tops", "Tops", (0, 2, 4, 6)),
    ("long_sleeve", "Long-sleeve", (2, 4, 6)),
    ("clothing", "Clothing", (0, 1, 2, 3, 4, 6)),
    ("footwear", "Footwear", (5, 7, 9)),
    ("accessory", "Accessory", (5, 7, 8, 9)),
]
"""(name, display name, item ids): an image has a super-class iff it has one of its items."""
LABEL_NAMES = [f"/lc/{n}" for n, _ in ITEMS] + [f"/lc/{n}" for n, _, _ in SUPER_CLASSES]
DISPLAY_NAMES = [d for _, d in ITEMS] + [d for _, d, _ in SUPER_CLASSES]
ITEM_TARGETS = np.zeros((len(ITEMS), len(LABEL_NAMES)), dtype=bool)
"""(10, 15) bool: row i is the multi-hot label vector of a single item of class i."""
ITEM_TARGETS[np.arange(len(ITEMS)), np.arange(len(ITEMS))] = True
for _col, (_, _, _members) in enumerate(SUPER_CLASSES, start=len(ITEMS)):
    ITEM_TARGETS[list(_members), _col] = True

ROOT = "/lc/entity"
"""The top of hierarchy.json: like Open Images' /m/0bl9f, not a class."""


def hierarchy_edges() -> list[tuple[str, str]]:
    """(parent, child) label pairs: P is above C when every item of C is one of P's items (a
    proper subset); only the nearest such P are parents (Shirt -> Long-sleeve, not -> Tops)."""
    members = [frozenset([i]) for i in range(len(ITEMS))]
    members += [frozenset(items) for _, _, items in SUPER_CLASSES]
    above = [{p for p, mp in enumerate(members) if mc < mp} for mc in members]
    return [
        (LABEL_NAMES[p], LABEL_NAMES[c])
        for c, parents in enumerate(above)
        for p in sorted(parents)
        if not any(p in above[q] for q in parents)  # p is above another parent: not nearest
    ]


def hierarchy() -> dict[str, Any]:
    """The classes' hierarchy as Open Images' nested {"LabelName", "Subcategory"} JSON under
    ROOT (a class with several parents appears under each)."""
    edges = hierarchy_edges()
    children: dict[str, list[str]] = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    has_parent = {child for _, child in edges}

    def node(label: str) -> dict[str, Any]:
        out: dict[str, Any] = {"LabelName": label}
        if label in children:
            out["Subcategory"] = [node(c) for c in children[label]]
        return out

    return {"LabelName": ROOT, "Subcategory": [node(n) for n in LABEL_NAMES if n not in has_parent]}


FILL_PROB = 0.6
ANNOTATION_HEADER = ["ImageID", "Source", "LabelName", "Confidence"]


class DemoDataError(ValueError):
    """The source data is missing or corrupt, the output exists, or an argument is invalid."""


@dataclass
class DemoStats:
    """Sizes, per-class machine-label quality (keyed by LabelName) and build time."""

    n_train: int
    n_verified: int
    n_test: int
    per_class: dict[str, dict[str, Any]]
    overall: dict[str, Any]
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Mosaics:
    """Images and what is in them: N images, M filled cells (items)."""

    canvases: np.ndarray  # (N, 56, 56) uint8 full-resolution images
    cells: np.ndarray  # (M, 28, 28) uint8 rendered items, one per filled cell
    cell_image: np.ndarray  # (M,) int, the image each cell belongs to
    labels: np.ndarray  # (N, C) bool true labels


class Split(NamedTuple):
    """N images: ids, mosaics, (N, C) float32 scores; the first n_verified are verified."""

    ids: list[str]
    mosaics: Mosaics
    scores: np.ndarray
    n_verified: int


def _read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Read a gzipped IDX file whose magic number and item shape are known -> uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DemoDataError(f"Fashion-MNIST file corrupt (not gzip?): {path}: {e}") from e
    ndim = len(shape) + 1
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise DemoDataError(f"Fashion-MNIST file corrupt (bad IDX header): {path}")
    dims = np.frombuffer(data[4:header], dtype=">u4").astype(int)
    if tuple(dims[1:]) != shape or len(data) != header + int(np.prod(dims)):
        raise DemoDataError(f"Fashion-MNIST file corrupt (unexpected size {dims}): {path}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(source: Path) -> dict[str, np.ndarray]:
    """Load the four files -> train_x (60000, 28, 28), train_y (60000,), test_x, test_y."""
    for name in FILES.values():  # report a missing file before decompressing anything
        if not (source / name).is_file():
            raise DemoDataError(f"Fashion-MNIST file missing: {source / name}")
    out = {}
    for key, name in FILES.items():
        is_x = key.endswith("_x")
        out[key] = _read_idx(source / name, 2051 if is_x else 2049, (CELL, CELL) if is_x else ())
    for split in ("train", "test"):
        x, y = out[f"{split}_x"], out[f"{split}_y"]
        if len(x) != len(y) or (len(y) and y.max() >= len(ITEMS)):
            raise DemoDataError(f"Fashion-MNIST {split} images and labels do not match: {source}")
    return out


def _draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices from `pool`, each pass a fresh permutation (reuse only once it is used up)."""
    reps = -(-n // len(pool)) if n else 0
    return np.concatenate([rng.permutation(pool) for _ in range(reps)] + [pool[:0]])[:n]


def make_mosaics(
    x: np.ndarray, y: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator
) -> Mosaics:
    """Compose n 2x2 mosaics from items x[pool] (x: (K, 28, 28) uint8, y: (K,) labels)."""
    filled = rng.random((n, 4)) < FILL_PROB
    empty = ~filled.any(axis=1)
    filled[np.flatnonzero(empty), rng.integers(0, 4, size=int(empty.sum()))] = True
    cell_image, cell_pos = np.nonzero(filled)
    item_idx = _draw(pool, len(cell_image), rng)
    cells = ann.render_cells(x[item_idx], rng)
    canvases = np.zeros((n, 2, CELL, 2, CELL), dtype=np.uint8)
    canvases[cell_image, cell_pos // 2, :, cell_pos % 2, :] = cells
    labels = np.zeros((n, len(LABEL_NAMES)), dtype=bool)
    np.logical_or.at(labels, cell_image, ITEM_TARGETS[y[item_idx]])
    return Mosaics(canvases.reshape(n, 2 * CELL, 2 * CELL), cells, cell_image, labels)


def image_scores(
    annotator: ann.MachineAnnotator, mosaics: Mosaics, progress: bool = False
) -> np.ndarray:
    """Per-image score per class = max over its filled cells -> (N, C) float32."""
    scores = np.zeros(mosaics.labels.shape, dtype=np.float32)
    cell_scores = annotator.score(mosaics.cells, progress=progress)
    np.maximum.at(scores, mosaics.cell_image, cell_scores)
    return scores


def _image_ids(n: int, rng: np.random.Generator) -> list[str]:
    """n unique 16-hex-digit ImageIDs, like Open Images'."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        for v in np.frombuffer(rng.bytes(8 * (n - len(ids))), dtype=">u8"):
            if (s := f"{int(v):016x}") not in seen:
                seen.add(s)
                ids.append(s)
    return ids


def _write_rows(path: Path, rows: list[list[str]], header: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _machine_rows(ids: list[str], scores: np.ndarray, thresholds: np.ndarray) -> list[list[str]]:
    """Rows for labels with score >= threshold; (N, C) scores, (C,) thresholds."""
    rows = []
    for i, c in zip(*np.nonzero(scores >= thresholds), strict=True):
        conf = min(max(float(scores[i, c]), 1e-4), 0.9999)  # fractional, like Open Images'
        rows.append([ids[i], "machine", LABEL_NAMES[c], f"{conf:.4f}"])
    return rows


def _human_rows(ids: list[str], labels: np.ndarray) -> list[list[str]]:
    """One verified row per image and class from (N, C) bool true labels."""
    return [
        [image_id, "verification", name, str(int(v))]
        for image_id, row in zip(ids, labels, strict=True)
        for name, v in zip(LABEL_NAMES, row, strict=True)
    ]


def _write_annotations(out: Path, splits: dict[str, Split], thresholds: np.ndarray) -> None:
    """Write {split}-annotations-{machine,human}-imagelabels.csv for each split."""
    for name, sp in splits.items():
        machine = _machine_rows(sp.ids, sp.scores, thresholds)
        human = _human_rows(sp.ids[: sp.n_verified], sp.mosaics.labels[: sp.n_verified])
        _write_rows(out / f"{name}-annotations-machine-imagelabels.csv", machine, ANNOTATION_HEADER)
        _write_rows(out / f"{name}-annotations-human-imagelabels.csv", human, ANNOTATION_HEADER)


def _write_images(out: Path, splits: list[Split], progress: bool) -> None:
    """Save the (N, 56, 56) uint8 canvases as 28x28 box-filtered grayscale PNG thumbnails."""
    pairs = [p for sp in splits for p in zip(sp.ids, sp.mosaics.canvases, strict=True)]
    for image_id, canvas in tqdm(pairs, desc="images", disable=not progress):
        thumb = Image.fromarray(canvas).resize((CELL, CELL), Image.Resampling.BOX)
        thumb.save(out / f"{image_id}.png")


def compute_stats(
    splits: dict[str, Split], thresholds: np.ndarray
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-class (keyed by LabelName) and overall machine-label quality of each split."""
    labels = {k: (sp.mosaics.labels, sp.scores >= thresholds) for k, sp in splits.items()}
    return ann.label_quality(labels, LABEL_NAMES, DISPLAY_NAMES, thresholds)


def format_stats(stats: DemoStats) -> str:
    """A readable table of machine-label precision/recall and prevalence per class."""
    head = f"train images: {stats.n_train} (T) + {stats.n_verified} (V); test: {stats.n_test}"
    table = ann.format_quality(stats.per_class, stats.overall)
    return f"{head}\n{table}\nbuilt in {stats.elapsed_s:.1f} s"


def _prepare_out(out: Path, overwrite: bool) -> Path:
    """Create out/ and out/images/; refuse an existing data set unless overwrite."""
    if (out / "class-descriptions.csv").exists():
        if not overwrite:
            raise DemoDataError(f"{out} already holds a data set; pass overwrite=True")
        (out / "class-descriptions.csv").unlink()
        for old in (out / "images").glob("*.png"):
            old.unlink()
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    return images


def _check_sizes(n_train: int, n_verified: int, n_test: int, n_annot: int, n_cal: int) -> None:
    if min(n_train, n_verified, n_test) < 0 or n_train + n_verified < 1:
        raise DemoDataError("n_train, n_verified, n_test must be >= 0, with n_train+n_verified > 0")
    if n_annot < 1 or n_cal < 1 or n_annot + n_cal > 50000:
        raise DemoDataError("annotator_items and calibration_items: >= 1 each, 50000 at most")


def build_demo_data(
    out: Path,
    *,
    source: Path = DEFAULT_SOURCE,
    seed: int = 0,
    n_train: int = 20000,
    n_verified: int = 500,
    n_test: int = 5000,
    annotator_epochs: int = 3,
    annotator_items: int = 12000,
    calibration_items: int = 3000,
    progress: bool = True,
    overwrite: bool = False,
) -> DemoStats:
    """Write the demo data set to `out` and return (and, with progress, print) its stats.

    Training images are n_verified (V, human-verified, listed first) + n_train (T) mosaics
    of items from Fashion-MNIST's train split; test images are n_test mosaics of its test
    split. The annotator learns from a separate pool of annotator_items + calibration_items
    train-split items, so no item is shared between the annotator, train and test images.
    The same seed gives byte-identical CSVs and images. class-descriptions.csv is written
    last: a directory without it holds no finished data set.
    """
    start = time.perf_counter()
    _check_sizes(n_train, n_verified, n_test, annotator_items, calibration_items)
    out = Path(out)
    data = load_fashion_mnist(Path(source))
    images_dir = _prepare_out(out, overwrite)
    pool_rng, train_rng, test_rng, id_rng = np.random.default_rng(seed).spawn(4)

    x, y = data["train_x"], data["train_y"]
    order = pool_rng.permutation(len(x))
    annot, cal = order[:annotator_items], order[annotator_items:][:calibration_items]
    annotator = ann.train_annotator(
        x[annot], ITEM_TARGETS[y[annot]], x[cal], ITEM_TARGETS[y[cal]],
        seed=seed, epochs=annotator_epochs, progress=progress,
    )  # fmt: skip

    n_all = n_verified + n_train
    mosaic_pool = order[annotator_items + calibration_items :]
    train = make_mosaics(x, y, mosaic_pool, n_all, train_rng)
    test_pool = np.arange(len(data["test_x"]))
    test = make_mosaics(data["test_x"], data["test_y"], test_pool, n_test, test_rng)
    ids = _image_ids(n_all + n_test, id_rng)
    splits = {
        "train": Split(ids[:n_all], train, image_scores(annotator, train, progress), n_verified),
        "test": Split(ids[n_all:], test, image_scores(annotator, test, progress), n_test),
    }
    _write_images(images_dir, list(splits.values()), progress)
    _write_annotations(out, splits, annotator.thresholds)

    stats = DemoStats(n_train, n_verified, n_test, *compute_stats(splits, annotator.thresholds))
    stats.elapsed_s = round(time.perf_counter() - start, 2)
    (out / "demo-stats.json").write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
    (out / "hierarchy.json").write_text(json.dumps(hierarchy(), indent=2) + "\n")
    classes = [list(r) for r in zip(LABEL_NAMES, DISPLAY_NAMES, strict=True)]
    _write_rows(out / "class-descriptions.csv", classes, ["LabelName", "DisplayName"])
    if progress:
        print(format_stats(stats))
    return stats


def training_truth(
    out: Path,
    *,
    source: Path = DEFAULT_SOURCE,
    seed: int = 0,
    annotator_items: int = 12000,
    calibration_items: int = 3000,
) -> tuple[list[str], np.ndarray]:
    """The true labels of every training image of the demo data set at ``out`` (V and T), as a
    reviewer who verified them all would give them: (ImageIDs, (N, C) bool), rebuilt from
    Fashion-MNIST and ``seed`` (the one ``out`` was built with; its sizes are read from
    demo-stats.json). The data set itself stores human labels of V only; benchmarks that
    simulate reviewers (benchmarks/verify_rounds.py) take T's answers from here. ``seed``,
    ``annotator_items`` and ``calibration_items`` must be the build's. Raises DemoDataError when
    the rebuilt V differs from the human labels file (another seed, source or item counts)."""
    stats = json.loads((Path(out) / "demo-stats.json").read_text())
    n_verified, n_all = stats["n_verified"], stats["n_verified"] + stats["n_train"]
    data = load_fashion_mnist(Path(source))
    pool_rng, train_rng, _, id_rng = np.random.default_rng(seed).spawn(4)
    x, y = data["train_x"], data["train_y"]
    order = pool_rng.permutation(len(x))  # as build_demo_data: annotator, calibration, mosaics
    mosaic_pool = order[annotator_items + calibration_items :]
    labels = make_mosaics(x, y, mosaic_pool, n_all, train_rng).labels
    ids = _image_ids(n_all + stats["n_test"], id_rng)[:n_all]
    with (Path(out) / "train-annotations-human-imagelabels.csv").open(newline="") as f:
        given = [row for row in csv.reader(f)][1:]
    if given != _human_rows(ids[:n_verified], labels[:n_verified]):
        raise DemoDataError(f"{out}: not built from {source} with seed {seed}")
    return ids, labels
