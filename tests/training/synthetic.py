"""A tiny synthetic data set in Open Images layout whose machine labels have LEARNABLE noise.

    splits = write_synthetic(Path("data"), seed=0)    # {"train"|"test": (truth, confidences)}

Images (15x15 greyscale PNGs): a dark noisy background and, for each class present, that class's
own 4x4 texture (horizontal bars, vertical bars, a checker board, a solid block, a frame, a
cross) in a random cell of a 3x3 grid, one pixel apart from its neighbours. Each of the six
classes is present independently with probability ``prevalence``; a small CNN learns them.

The machine annotator sees the truth and makes two kinds of mistakes:

- **systematic**, the noise the method must learn to fix: the ``RULES``. A ``wrong`` rule lists
  an absent class whenever a trigger class is present (every image with a block gets vertical
  bars); a ``missing`` rule drops a present class whenever a trigger class is present (no image
  with a frame gets its checker board). A wrong label's confidence comes from the same
  distribution as a right label's, and a missing label is not listed at all, so no cut on the
  machine's confidences, per class or not, tells these mistakes from right labels. They are a
  function of the image, though: a model that sees the image (is the trigger there? is the
  class's own texture there?) next to the machine's labels can learn from V's human labels
  which labels the machine gets wrong, and fix them on new images.
- **random**, a little, as real annotators have: a present class is missed with probability
  ``miss`` (fixable only from the image); an absent class is listed with probability
  ``false_alarm`` at a LOW confidence (0.2 to 0.5, right labels have 0.55 to 1), which a
  per-class threshold on the confidences cuts: the thresholded baseline has something to fix
  and is a fair one.

Training images are V (verified by a human on every class, listed first, ``n_verified``) and T
(machine labels only, ``n_train``); the ``n_test`` test images are verified on every class. An
image the machine gives no label has no row in the machine CSV: training reads T from that file,
so such images are not in T (as with any Open Images-style data).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 15  # image side in pixels
CELL = 5  # the grid's cell side: a 3x3 grid of cells, each pattern 4x4 in its cell's corner
PATTERNS = {
    "hbars": [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]],
    "vbars": [[1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]],
    "checker": [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]],
    "block": [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
    "frame": [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]],
    "cross": [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]],
}
CLASSES = list(PATTERNS)
LABEL_IDS = [f"/syn/{name}" for name in CLASSES]


@dataclass(frozen=True)
class Rule:
    """The machine's systematic mistake: when ``trigger`` is present, ``target`` is listed
    although absent (``kind`` "wrong") or left out although present ("missing")."""

    kind: str
    trigger: str
    target: str


RULES = (
    Rule("wrong", trigger="block", target="vbars"),
    Rule("wrong", trigger="cross", target="hbars"),
    Rule("missing", trigger="frame", target="checker"),
    Rule("missing", trigger="vbars", target="block"),
)


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, SIZE, SIZE) uint8: each present class's pattern at its own random cell, on noise."""
    n, d = labels.shape
    out = rng.normal(0.12, 0.07, size=(n, SIZE, SIZE))
    kernels = [np.asarray(PATTERNS[c], dtype=float) for c in CLASSES]
    cells = SIZE // CELL
    for i in range(n):
        present = np.flatnonzero(labels[i])
        spots = rng.permutation(cells * cells)[: len(present)]
        for k, spot in zip(present, spots, strict=True):
            r, c = (spot // cells) * CELL, (spot % cells) * CELL
            patch = out[i, r : r + 4, c : c + 4]
            out[i, r : r + 4, c : c + 4] = np.maximum(patch, kernels[k] * rng.uniform(0.6, 1.0))
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)


def machine_labels(
    truth: np.ndarray,
    rng: np.random.Generator,
    *,
    rules: tuple[Rule, ...] = RULES,
    miss: float = 0.03,
    false_alarm: float = 0.03,
) -> np.ndarray:
    """(N, d) float32 machine confidences (0 = not listed) from (N, d) bool ``truth``."""
    n, d = truth.shape
    right = rng.uniform(0.55, 1.0, size=(n, d))  # a listed label's confidence, right or wrong
    listed = truth & (rng.random((n, d)) >= miss)
    confidence = np.where(listed, right, 0.0)
    alarms = ~truth & (rng.random((n, d)) < false_alarm)
    confidence = np.where(alarms, rng.uniform(0.2, 0.5, size=(n, d)), confidence)
    for rule in rules:
        t, k = CLASSES.index(rule.trigger), CLASSES.index(rule.target)
        fires = truth[:, t]
        if rule.kind == "wrong":
            add = fires & ~truth[:, k]
            confidence[add, k] = right[add, k]
        else:
            confidence[fires & truth[:, k], k] = 0.0
    return confidence.astype(np.float32)


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["ImageID", "Source", "LabelName", "Confidence"])
        writer.writerows(rows)


def write_synthetic(
    out: Path,
    *,
    seed: int = 0,
    n_train: int = 600,
    n_verified: int = 400,
    n_test: int = 400,
    prevalence: float = 0.35,
    **noise: float,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the data set to ``out``; return {"train", "test"}: (truth, machine confidences).

    ``noise`` goes to ``machine_labels`` (``miss``, ``false_alarm``). The same seed writes the
    same files."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    d = len(CLASSES)
    sizes = {"train": n_verified + n_train, "test": n_test}
    verified = {"train": n_verified, "test": n_test}
    result = {}
    for split, n in sizes.items():
        truth = rng.random((n, d)) < prevalence
        noisy = machine_labels(truth, rng, **noise)
        pixels = _images(truth, rng)
        ids = [f"{split}{i:05d}" for i in range(n)]
        for image_id, image in zip(ids, pixels, strict=True):
            Image.fromarray(image).save(out / "images" / f"{image_id}.png")
        machine = [
            [ids[i], "machine", LABEL_IDS[k], f"{noisy[i, k]:.4f}"]
            for i, k in zip(*np.nonzero(noisy > 0), strict=True)
        ]
        human = [
            [ids[i], "verification", LABEL_IDS[k], str(int(truth[i, k]))]
            for i in range(verified[split])
            for k in range(d)
        ]
        _write_rows(out / f"{split}-annotations-machine-imagelabels.csv", machine)
        _write_rows(out / f"{split}-annotations-human-imagelabels.csv", human)
        result[split] = (truth, noisy)
    with (out / "class-descriptions.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(
            [["LabelName", "DisplayName"], *zip(LABEL_IDS, CLASSES, strict=True)]
        )
    return result
