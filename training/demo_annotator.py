"""The demo data set's machine annotator (a small, deliberately imperfect CNN tagger) and
the quality of its labels.

It is trained for a few epochs on single Fashion-MNIST items, augmented exactly as the
items of the demo mosaics are (:func:`render_cells`), and its per-class thresholds are set
on a held-out calibration pool for about 95 % recall: a tagger tuned for coverage, so its
labels are noisy in a way that follows real visual confusions (shirt / T-shirt / pullover
/ coat). :mod:`labelclean.training.demo_data` builds the data set around it.

Example::

    rng = np.random.default_rng(0)
    annotator = train_annotator(items, targets, cal_items, cal_targets, seed=0, epochs=3)
    cells = render_cells(test_items, rng)           # (M, 28, 28) uint8
    scores = annotator.score(cells)                 # (M, C) float32 in [0, 1]
    labels = scores >= annotator.thresholds         # (M, C) bool
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

CELL = 28
"""Side of one mosaic cell (and of one Fashion-MNIST item), in full-resolution pixels."""
MIN_SCALE, MAX_SCALE = CELL // 2, CELL
"""An item is drawn at a side of MIN_SCALE..MAX_SCALE pixels (0.5 to 1 of the cell)."""
MIN_CONTRAST, MAX_CONTRAST = 0.4, 1.0
"""Pixel intensities of an item are multiplied by a factor in this range."""
TARGET_RECALL = 0.95
"""Per-class thresholds keep about this share of the calibration positives."""

_BATCH = 64


def render_cells(items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw each item into its own black cell at a random scale, position and contrast.

    Args:
        items: (M, 28, 28) uint8 Fashion-MNIST items.
        rng: source of the augmentation draws (scale, offset, contrast, in that order).

    Returns:
        (M, 28, 28) uint8 cells, the item resized with PIL's antialiased bilinear filter.
    """
    m = len(items)
    sizes = rng.integers(MIN_SCALE, MAX_SCALE + 1, size=m)
    offsets = rng.random((m, 2))
    contrasts = rng.uniform(MIN_CONTRAST, MAX_CONTRAST, size=m)
    cells = np.zeros((m, CELL, CELL), dtype=np.uint8)
    for i in range(m):
        s = int(sizes[i])
        small = Image.fromarray(items[i]).resize((s, s), Image.Resampling.BILINEAR)
        y, x = (offsets[i] * (CELL - s + 1)).astype(int)
        pixels = np.asarray(small, dtype=np.float32) * contrasts[i]
        cells[i, y : y + s, x : x + s] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return cells


class AnnotatorNet(nn.Module):
    """Three conv layers and a linear head: (B, 1, 28, 28) float -> (B, C) logits."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 3x3
        )
        self.head = nn.Linear(32 * 3 * 3, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _as_input(cells: np.ndarray) -> torch.Tensor:
    """(M, 28, 28) uint8 -> (M, 1, 28, 28) float32 in [0, 1]."""
    return torch.from_numpy(cells).unsqueeze(1).float().div_(255.0)


@dataclass
class MachineAnnotator:
    """A trained tagger and its per-class thresholds, shape (C,)."""

    net: AnnotatorNet
    thresholds: np.ndarray

    @torch.no_grad()
    def score(
        self, cells: np.ndarray, batch_size: int = 1024, progress: bool = False
    ) -> np.ndarray:
        """Per-class sigmoid scores of (M, 28, 28) uint8 cells -> (M, C) float32."""
        self.net.eval()
        starts = tqdm(range(0, len(cells), batch_size), desc="scoring", disable=not progress)
        out = [
            torch.sigmoid(self.net(_as_input(cells[i : i + batch_size]))).numpy() for i in starts
        ]
        n_classes = self.net.head.out_features
        return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)


def recall_thresholds(scores: np.ndarray, targets: np.ndarray, recall: float) -> np.ndarray:
    """Per-class thresholds that keep about `recall` of the positives.

    Args:
        scores: (M, C) float scores; targets: (M, C) {0, 1} true labels.

    Returns:
        (C,) float32; a class without positives gets 0.5.
    """
    thresholds = np.full(scores.shape[1], 0.5, dtype=np.float32)
    for c in range(scores.shape[1]):
        positives = scores[targets[:, c] > 0, c]
        if len(positives):
            thresholds[c] = np.quantile(positives, 1.0 - recall, method="lower")
    return thresholds


def _fit(
    net: AnnotatorNet,
    items: np.ndarray,
    targets: np.ndarray,
    rng: np.random.Generator,
    gen: torch.Generator,
    epochs: int,
    progress: bool,
) -> None:
    """Train `net` with BCE on freshly augmented (N, 28, 28) items, (N, C) multi-hot targets."""
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    y_all = torch.from_numpy(targets.astype(np.float32))
    net.train()
    for epoch in range(epochs):
        x_all = _as_input(render_cells(items, rng))
        order = torch.randperm(len(items), generator=gen)
        batches = range(0, len(items), _BATCH)
        bar = tqdm(batches, desc=f"annotator epoch {epoch + 1}/{epochs}", disable=not progress)
        for start in bar:
            idx = order[start : start + _BATCH]
            opt.zero_grad()
            loss = loss_fn(net(x_all[idx]), y_all[idx])
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)


def train_annotator(
    items: np.ndarray,
    targets: np.ndarray,
    cal_items: np.ndarray,
    cal_targets: np.ndarray,
    *,
    seed: int,
    epochs: int,
    progress: bool = False,
) -> MachineAnnotator:
    """Train the tagger on augmented single items and calibrate its thresholds.

    Args:
        items: (N, 28, 28) uint8 training items; targets: (N, C) {0, 1} multi-hot labels.
        cal_items: (K, 28, 28) uint8 calibration items; cal_targets: (K, C) multi-hot.
        seed: seeds the weights, batch order and augmentation; the global torch RNG state
            is left as it was.
        epochs: passes over `items`, each with fresh augmentation.
        progress: show a tqdm bar per epoch.

    Returns:
        The trained net with thresholds for about :data:`TARGET_RECALL` recall per class.
    """
    aug_rng, cal_rng = np.random.default_rng(np.random.SeedSequence([seed, 1])).spawn(2)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = AnnotatorNet(targets.shape[1])
    _fit(net, items, targets, aug_rng, gen, epochs, progress)
    annotator = MachineAnnotator(net, np.zeros(targets.shape[1], dtype=np.float32))
    cal_scores = annotator.score(render_cells(cal_items, cal_rng))
    annotator.thresholds = recall_thresholds(cal_scores, cal_targets, TARGET_RECALL)
    return annotator


def _quality(labels: np.ndarray, machine: np.ndarray, axis: int | None) -> dict[str, Any]:
    """Counts and rates of (N, C) bool machine labels against the truth, summed over axis."""
    tp, n_pos, n_mach = (labels & machine).sum(axis), labels.sum(axis), machine.sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {"precision": tp / n_mach, "recall": tp / n_pos, "prevalence": n_pos / len(labels)}
    return {"n_positive": n_pos, "n_machine": n_mach} | rates


def _num(v: Any) -> float | int | None:
    """JSON-friendly number: NaN (an undefined rate) -> None."""
    if isinstance(v, np.integer):
        return int(v)
    return None if np.isnan(v) else round(float(v), 4)


def label_quality(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    names: list[str],
    display_names: list[str],
    thresholds: np.ndarray,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Machine-label precision, recall and class prevalence, per class and overall (micro).

    Args:
        splits: {split: ((N, C) bool true labels, (N, C) bool machine labels)}.
        names, display_names: C class ids (the keys of the per-class dict) and names.
        thresholds: (C,) the annotator's thresholds, reported per class.

    Returns:
        per_class {name: {"display_name", "threshold", f"{split}_{key}"}} and overall
        {f"{split}_{key}"}, key in n_positive, n_machine, precision, recall, prevalence
        (overall: true labels per image); an undefined rate is None.
    """
    per_class: dict[str, dict[str, Any]] = {
        name: {"display_name": disp, "threshold": round(float(t), 4)}
        for name, disp, t in zip(names, display_names, thresholds, strict=True)
    }
    overall: dict[str, Any] = {}
    for split, (labels, machine) in splits.items():
        for key, values in _quality(labels, machine, axis=0).items():
            for name, v in zip(names, values, strict=True):
                per_class[name][f"{split}_{key}"] = _num(v)
        for key, v in _quality(labels, machine, axis=None).items():
            overall[f"{split}_{key}"] = _num(v)
    return per_class, overall


def format_quality(per_class: dict[str, dict[str, Any]], overall: dict[str, Any]) -> str:
    """The dicts of :func:`label_quality` as a table: prevalence, precision, recall per split."""
    splits = [k.removesuffix("_precision") for k in overall if k.endswith("_precision")]

    def f(v: float | None) -> str:
        return "     -" if v is None else f"{v:6.3f}"

    def row(name: str, thr: str, d: dict[str, Any], prev: bool) -> str:
        return f"{name:<13}{thr:>7}" + "".join(
            f" | {f(d[f'{s}_prevalence']) if prev else '':>11}"
            f" {f(d[f'{s}_precision'])} {f(d[f'{s}_recall'])}"
            for s in splits
        )

    lines = [f"{'class':<13}{'thresh':>7}" + "".join(
        f" | {s + ' prev':>11} {'prec':>6} {'recall':>6}" for s in splits
    )]  # fmt: skip
    for d in per_class.values():
        lines.append(row(d["display_name"], f"{d['threshold']:.4f}", d, True))
    lines.append(row("overall", "", overall, False))
    return "\n".join(lines)
