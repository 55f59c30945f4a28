"""Cross-fitting: an out-of-sample view of every human-verified training image (V).

    oof = cross_fit(start, data, cfg, phases, device, folder=RUN / "crossfit")
    oof.inputs   # (N, d, F): the issue head's inputs of each V image, from a network that
                 # did not train on that image

V is split into ``cfg.folds`` folds. For each fold, a copy of the network as it stood before its
first V-using phase (``start``) runs those phases on T and the other folds' V, then reads its own
fold. The issue head and the decision thresholds are fitted on these reads (training.issue_fit,
training.decision_fit): every V image is scored by a network that never saw its human labels,
as the deployed network scores new images, and all of V counts, not a held-out fifth. The
deployed network itself trains on all of V (training.run).

Each fold is saved when it is done (``folder/fold-J.npz``, keyed by the starting weights, the
fold's images and the schedule), so an interrupted run does not train it again.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..model.network import LabelCleaningNet
from .batches import Part, TrainingData, eval_batches
from .loop import Phase, TrainConfig, run_phase

INNER_FOLDS = 5  # folds of the images for fits on a single held-out part (OutOfFold.fit_folds)


@dataclass
class OutOfFold:
    """Out-of-sample reads of V's images, all rows aligned (N images, d classes)."""

    image_ids: list[str]
    inputs: np.ndarray  # (N, d, F) float32: IssueHead.inputs
    noisy: np.ndarray  # (N, d) float32: machine labels y as the network reads them
    human: np.ndarray  # (N, d) float32: human labels v (0 where unknown)
    known: np.ndarray  # (N, d) bool: verified pairs
    fold: np.ndarray  # (N,) int: the fold of each image (all 0 for a single held-out part)
    cleaner_loss: str = "bce"

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def scores(self) -> np.ndarray:
        """(N, d) the classifier's probabilities: sigmoid of its logit (FEATURES[2])."""
        return sigmoid(self.inputs[..., 2])

    @property
    def cleaned(self) -> np.ndarray:
        """(N, d) the cleaner's c from its raw output (FEATURES[1])."""
        raw = self.inputs[..., 1]
        return sigmoid(raw) if self.cleaner_loss == "bce" else np.clip(raw, 0.0, 1.0)

    def fit_folds(self, seed: int = 0) -> np.ndarray:
        """(N,) the folds that fits on these reads leave out in turn: the cross-fit's, or
        INNER_FOLDS random folds of the images when the reads are one held-out part."""
        if len(np.unique(self.fold)) > 1:
            return self.fold
        return fold_ids(len(self), INNER_FOLDS, seed)

    def save(self, path: Path, key: str = "") -> None:
        """Write atomically (a temporary file, then a rename)."""
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp, image_ids=np.asarray(self.image_ids), inputs=self.inputs, noisy=self.noisy,
            human=self.human, known=self.known, fold=self.fold,
            cleaner_loss=np.asarray(self.cleaner_loss), key=np.asarray(key),
        )  # fmt: skip
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> OutOfFold:
        with np.load(path) as z:
            return cls(
                [str(i) for i in z["image_ids"]], z["inputs"], z["noisy"], z["human"],
                z["known"].astype(bool), z["fold"], str(z["cleaner_loss"]),
            )  # fmt: skip

    @classmethod
    def join(cls, parts: Sequence[OutOfFold]) -> OutOfFold:
        return cls(
            [i for p in parts for i in p.image_ids],
            *(np.concatenate([getattr(p, k) for p in parts]) for k in
              ("inputs", "noisy", "human", "known", "fold")),
            parts[0].cleaner_loss if parts else "bce",
        )  # fmt: skip


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 sigmoid, computed in float64 without overflow."""
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float64)))).astype(np.float32)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) fold of each image: a seeded shuffle dealt round-robin (sizes differ by at most 1)."""
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % max(folds, 1)
    return out


@torch.no_grad()
def read_part(
    net: LabelCleaningNet, part: Part, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """(N, d, F) float32: the issue head's inputs for every image of ``part``, in float32 as the
    exported graph computes them (no autocast)."""
    net.eval()
    out = [
        net.issue_inputs(x, noisy).float().cpu().numpy()
        for x, noisy in eval_batches(part, net.config.input, device, batch_size)
    ]
    d, f = net.config.num_classes, net.issue_head.weight.shape[-1]
    return np.concatenate(out) if out else np.zeros((0, d, f), np.float32)


def out_of_sample(
    net: LabelCleaningNet, part: Part, device: torch.device, fold: int = 0
) -> OutOfFold:
    """``net``'s reads of ``part``, images it did not train on."""
    return OutOfFold(
        list(part.image_ids),
        read_part(net, part, device),
        part.noisy.cpu().numpy(),
        part.human.cpu().numpy(),
        part.known.cpu().numpy() > 0,
        np.full(len(part), fold, dtype=np.int64),
        net.cleaner.loss,
    )


def _key(start_digest: str, cfg: TrainConfig, phases: list, image_ids: list[str]) -> str:
    h = hashlib.sha256(json.dumps([start_digest, cfg.to_dict(), phases]).encode())
    h.update("\n".join(image_ids).encode())
    return h.hexdigest()


def cross_fit(
    start: LabelCleaningNet,
    start_digest: str,
    data: TrainingData,
    cfg: TrainConfig,
    phases: list[tuple[Phase, int]],
    device: torch.device,
    *,
    folder: Path,
    first_phase_index: int = 0,
    progress: bool = True,
) -> OutOfFold:
    """Train one copy of ``start`` per fold of V through ``phases`` (the V-using phases of the
    run, numbered from ``first_phase_index``) on T and the other folds; read each fold with its
    own copy. ``data.verified`` is all of V here. Returns the folds joined, in V's order."""
    verified = data.verified
    folds = fold_ids(len(verified), cfg.folds, cfg.seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for j in range(cfg.folds):
        held = np.flatnonzero(folds == j)
        fold_part = verified.rows(held)
        fold_cfg = replace(cfg, seed=cfg.seed + 7919 * (j + 1))
        key = _key(start_digest, fold_cfg, phases, fold_part.image_ids)
        path = folder / f"fold-{j}.npz"
        if path.exists() and _saved_key(path) == key:
            parts.append(OutOfFold.load(path))
            continue
        net = copy.deepcopy(start).to(device)
        rest = data.with_verified(verified.rows(np.flatnonzero(folds != j)))
        for offset, (phase, epochs) in enumerate(phases):
            run_phase(
                net, rest, fold_cfg, phase, epochs, device,
                phase_index=first_phase_index + offset,
                progress=progress, label=f"fold {j + 1}/{cfg.folds} ",
            )  # fmt: skip
        read = out_of_sample(net, fold_part, device, fold=j)
        read.save(path, key)
        parts.append(read)
        del net
    joined = OutOfFold.join(parts)
    order = np.argsort(np.concatenate([np.flatnonzero(folds == j) for j in range(cfg.folds)]))
    return _take(joined, order)


def _saved_key(path: Path) -> str | None:
    try:
        with np.load(path) as z:
            return str(z["key"]) if "key" in z.files else None
    except (OSError, ValueError):  # a damaged file: train the fold again
        return None


def _take(oof: OutOfFold, rows: np.ndarray) -> OutOfFold:
    return OutOfFold(
        [oof.image_ids[i] for i in rows],
        *(getattr(oof, k)[rows] for k in ("inputs", "noisy", "human", "known", "fold")),
        oof.cleaner_loss,
    )
