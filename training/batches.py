"""Training data held as decoded pixels, and the batches the loop draws from it.

Every image is decoded once (``prepare_data``) into a uint8 array; batches are index lookups,
normalised on the training device. On CUDA the arrays sit in pinned memory and copies are
non-blocking, so the GPU does not wait on the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..model.classes import LabelClass
from ..model.config import InputSpec
from ..model.hierarchy import Hierarchy
from ..model.openimages import DataError, DataFiles, Split, load_dataset
from ..model.preprocess import encode_noisy
from .images import LoadFailure, load_images, open_source


@dataclass
class Part:
    """One set of images with labels, all rows aligned."""

    image_ids: list[str]
    pixels: torch.Tensor  # (N, H, W, C) uint8
    noisy: torch.Tensor  # (N, d) float32: machine labels y
    human: torch.Tensor  # (N, d) float32: human labels v (0 where unknown)
    known: torch.Tensor  # (N, d) float32: 1 where a human verified the class

    def __len__(self) -> int:
        return len(self.image_ids)

    def take(self, rows: torch.Tensor, device: torch.device) -> Batch:
        """The rows as a batch on ``device`` (staged through pinned memory for CUDA)."""
        tensors = (self.pixels, self.noisy, self.human, self.known)
        if self.pixels.device == device:
            rows = rows.to(device)
            return Batch(*(t[rows] for t in tensors))
        pin = device.type == "cuda"
        return Batch(*(_to(t[rows], device, pin) for t in tensors))

    def to(self, device: torch.device) -> Part:
        return Part(
            self.image_ids,
            *(t.to(device) for t in (self.pixels, self.noisy, self.human, self.known)),
        )

    @property
    def nbytes(self) -> int:
        return self.pixels.numel()

    def numpy(self, name: str) -> np.ndarray:
        return getattr(self, name).numpy()

    def rows(self, rows: np.ndarray) -> Part:
        """The part of these rows (numpy indices), in their order."""
        return _subset(self, rows)

    def cat(self, other: Part) -> Part:
        """This part's images followed by ``other``'s."""
        return Part(
            self.image_ids + other.image_ids,
            *(
                torch.cat([a, b.to(a.device)])
                for a, b in zip(
                    (self.pixels, self.noisy, self.human, self.known),
                    (other.pixels, other.noisy, other.human, other.known),
                    strict=True,
                )
            ),
        )


@dataclass
class Batch:
    pixels: torch.Tensor
    noisy: torch.Tensor
    human: torch.Tensor
    known: torch.Tensor


def _to(t: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    if pin:
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


@dataclass
class TrainingData:
    classes: list[LabelClass]
    noisy_train: Part  # T
    verified: Part  # V minus the calibration hold-out: trains the cleaner
    calibration: Part  # held-out part of V: sets the per-class thresholds
    test: Part
    failures: list[LoadFailure] = field(default_factory=list)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    hierarchy: Hierarchy | None = None  # carried into the bundle

    def parts(self) -> dict[str, Part]:
        return {
            "T": self.noisy_train,
            "V": self.verified,
            "calibration": self.calibration,
            "test": self.test,
        }

    def all_verified(self) -> Part:
        """Every human-verified training image: V and, when held out apart, its calibration
        part (cross-fitting uses all of V; training.crossfit)."""
        if self.calibration is self.verified or len(self.calibration) == 0:
            return self.verified
        return self.verified.cat(self.calibration)

    def with_verified(self, verified: Part, calibration: Part | None = None) -> TrainingData:
        """A copy whose V (and calibration part: by default V itself) are these."""
        return replace(
            self, verified=verified, calibration=verified if calibration is None else calibration
        )

    def to(self, device: torch.device) -> TrainingData:
        """A copy with every part on ``device`` (on CUDA, when it fits: no host copies)."""
        moved = {k: p.to(device) for k, p in self.parts().items()}
        return TrainingData(
            self.classes,
            moved["T"],
            moved["V"],
            moved["calibration"],
            moved["test"],
            self.failures,
            self.unknown_labels,
            self.hierarchy,
        )


def to_input(pixels: torch.Tensor, spec: InputSpec, channels_last: bool = False) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 normalised, as model.preprocess.normalize."""
    mean = torch.tensor(spec.mean, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=pixels.device).view(1, -1, 1, 1)
    x = pixels.permute(0, 3, 1, 2).float().mul_(1.0 / 255.0)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def eval_batches(
    part: Part, spec: InputSpec, device: torch.device, batch_size: int = 256
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(network input, noisy labels) of ``part``'s images in order, ``batch_size`` at a time."""
    for i in range(0, len(part), batch_size):
        batch = part.take(torch.arange(i, min(i + batch_size, len(part))), device)
        yield to_input(batch.pixels, spec, device.type == "cuda"), batch.noisy


def _part(split: Split, pixels: np.ndarray) -> Part:
    return Part(
        split.image_ids,
        torch.from_numpy(pixels),
        torch.from_numpy(split.noisy),
        torch.from_numpy(split.human),
        torch.from_numpy(split.known.astype(np.float32)),
    )


def _decoded(
    split: Split, spec: InputSpec, uri: str, name: str, progress: bool, failures: list[LoadFailure]
) -> Part:
    pixels, ok, failed = load_images(
        open_source(uri), split.image_ids, spec, desc=f"decode {name}", progress=progress
    )
    failures.extend(failed)
    rows = np.flatnonzero(ok)
    return _part(split.subset(rows), pixels[rows])


def prepare_data(
    files: DataFiles,
    spec: InputSpec,
    *,
    seed: int = 0,
    calibration_fraction: float = 0.2,
    ignore_unknown: bool = False,
    noisy_labels: str = "confidence",
    progress: bool = True,
) -> TrainingData:
    """Read the CSVs, decode every image once and split V into training and calibration parts.

    Images that are missing or fail to decode are dropped and listed in ``failures``.
    """
    data = load_dataset(files, ignore_unknown=ignore_unknown)
    if len(data.test) == 0:
        raise DataError(f"{files.path(files.test_human)}: no test images with human labels")
    failures: list[LoadFailure] = []
    uri = files.images_uri
    splits = {"T": data.train_noisy, "V": data.verified, "test": data.test}
    for split in splits.values():
        split.noisy = encode_noisy(split.noisy, noisy_labels)
    parts = {name: _decoded(s, spec, uri, name, progress, failures) for name, s in splits.items()}
    verified = parts["V"]
    order = np.random.default_rng(seed).permutation(len(verified))
    n_cal = int(round(len(verified) * calibration_fraction)) if len(verified) >= 5 else 0
    cal_rows, train_rows = np.sort(order[:n_cal]), np.sort(order[n_cal:])
    v_train = _subset(verified, train_rows)
    return TrainingData(
        classes=data.classes,
        noisy_train=parts["T"],
        verified=v_train,
        calibration=_subset(verified, cal_rows) if n_cal else v_train,
        test=parts["test"],
        failures=failures,
        unknown_labels=data.unknown_labels,
        hierarchy=data.hierarchy,
    )


def _subset(part: Part, rows: np.ndarray) -> Part:
    idx = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    return Part(
        [part.image_ids[i] for i in rows],
        part.pixels[idx],
        part.noisy[idx],
        part.human[idx],
        part.known[idx],
    )


class Cycler:
    """Draws batches of indices from a set without replacement, reshuffling when exhausted."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator
        self.order = torch.randperm(n, generator=generator)
        self.pos = 0

    def draw(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            if self.pos >= self.n:
                self.order, self.pos = torch.randperm(self.n, generator=self.generator), 0
            chunk = self.order[self.pos : self.pos + k]
            self.pos += len(chunk)
            k -= len(chunk)
            out.append(chunk)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
