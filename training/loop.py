"""The training loop: every mode is a sequence of phases run by one ``run_phase``.

Phases (what a batch holds -> the loss):
    noisy    T images                 BCE(h, y)
    clean    V images                 BCE(h, v) on verified classes
    mixed    T and V, 9:1             BCE(h, y) on T + BCE(h, v) on V
    cleaner  V images, backbone fixed 0.1 * L_clean(c, v)    (g alone)
    joint    T and V, 9:1             0.1 * L_clean(c, v) on V + BCE(h, c.detach()) on T
                                      + BCE(h, v) on V

L_clean is the paper's L1 |c - v| when the model's ``cleaner_loss`` is "l1", and binary
cross-entropy on the cleaner's logits (c = sigmoid(logit(y) + g)) when it is "bce".

Only human-verified classes (``known``) enter the V terms. Each term is summed over its images
and classes; ``loss_reduction`` says what the sums are divided by (see ``reduce_terms``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..model.network import LabelCleaningNet
from .batches import Batch, Cycler, TrainingData, to_input

Mode = Literal["noisy", "finetune-clean", "finetune-mixed", "pretrain", "joint"]
MODES: tuple[Mode, ...] = ("noisy", "finetune-clean", "finetune-mixed", "pretrain", "joint")
Phase = Literal["noisy", "clean", "mixed", "cleaner", "joint"]
NEEDS_VERIFIED = {"clean", "mixed", "cleaner", "joint"}
LossReduction = Literal["batch", "per-set"]
LOSS_REDUCTIONS: tuple[LossReduction, ...] = ("batch", "per-set")


@dataclass
class TrainConfig:
    mode: Mode = "joint"
    epochs: int = 6  # first phase: passes over T with its noisy labels
    finetune_epochs: int = 3  # mixed / joint phases: passes over T
    clean_epochs: int | None = None  # finetune-clean: passes over V; None = the joint step count
    cleaner_epochs: int = 20  # pretrain: passes over V training the cleaner alone
    batch_size: int = 64  # images per step, T and V together
    lr: float = 2e-3  # first phase (AdamW, cosine decay)
    finetune_lr: float = 5e-4  # every later phase
    cleaner_lr: float = 1e-3  # the cleaner g (a new head: it learns faster than the network)
    weight_decay: float = 1e-4
    clean_weight: float = 0.1  # weight of L_clean
    classify_weight: float = 1.0  # weight of L_classify
    verified_share: float = 0.1  # share of V images in a mixed batch (9:1), exact over batches
    # "batch": every loss term / the batch size (the paper's weights); "per-set": L_clean / |V|
    loss_reduction: LossReduction = "batch"
    # Folds of V for cross-fitting the issue head and the decision thresholds (training.crossfit):
    # one network per fold trains the V-using phases without it. 1 = hold out a fifth of V
    # instead (faster; the head and thresholds then see 100 of the demo's 500 V images).
    folds: int = 5
    # The objective of the decision thresholds (training.decision_fit): None = the F1 of the
    # final label sets; a number = the most true labels at this precision of the final sets.
    min_precision: float | None = None
    # The bundle's decision rule (model.decision): "issue" (the default) or "cleaned" (the
    # paper's: verdicts on c at per-class thresholds).
    rule: str = "issue"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        if self.rule not in ("issue", "cleaned"):
            raise ValueError(f"rule must be issue or cleaned, not {self.rule!r}")
        if self.min_precision is not None and not 0 < self.min_precision < 1:
            raise ValueError(f"min_precision must be above 0 and below 1, not {self.min_precision}")
        if self.folds < 1:
            raise ValueError(f"folds must be at least 1, not {self.folds}")
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, "
                f"not {self.loss_reduction!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def phases_for(cfg: TrainConfig, *, from_noisy: bool = False) -> list[tuple[Phase, int]]:
    """The (phase, epochs) sequence of a mode; ``from_noisy`` skips the shared first phase."""
    later: dict[Mode, list[tuple[Phase, int]]] = {
        "noisy": [],
        "finetune-clean": [("clean", cfg.clean_epochs)],
        "finetune-mixed": [("mixed", cfg.finetune_epochs)],
        "joint": [("joint", cfg.finetune_epochs)],
        "pretrain": [("cleaner", cfg.cleaner_epochs), ("joint", cfg.finetune_epochs)],
    }
    first: list[tuple[Phase, int]] = [] if from_noisy else [("noisy", cfg.epochs)]
    return [p for p in first + later[cfg.mode] if p[1] > 0]


def _uses(phase: Phase) -> tuple[bool, bool]:
    return phase in ("noisy", "mixed", "joint"), phase in NEEDS_VERIFIED


def _v_share(cfg: TrainConfig, phase: Phase) -> Fraction:
    """The share of V images in a batch of ``phase``, as an exact fraction (0.1 -> 1/10)."""
    uses_t, uses_v = _uses(phase)
    if not uses_v:
        return Fraction(0)
    return Fraction(cfg.verified_share).limit_denominator(1000) if uses_t else Fraction(1)


def verified_in_first(cfg: TrainConfig, phase: Phase, steps: int) -> int:
    """V images in the first ``steps`` batches of ``phase``: floor(steps * batch * share).

    Batches of a mixed phase hold 6 or 7 V images of 64 so that the running count stays as
    close to the share as integers allow: exactly 9:1 after every 5 batches of 64."""
    return int(steps * cfg.batch_size * _v_share(cfg, phase))


def batch_split(cfg: TrainConfig, phase: Phase, step: int = 0) -> tuple[int, int]:
    """(T images, V images) in batch ``step`` (counted from 0 in each epoch) of ``phase``."""
    v = verified_in_first(cfg, phase, step + 1) - verified_in_first(cfg, phase, step)
    return cfg.batch_size - v, v


def steps_per_epoch(cfg: TrainConfig, phase: Phase, n_t: int, n_v: int) -> int:
    """Optimizer steps in one epoch: a pass over T when the phase uses T (the most batches
    whose T images add up to at most n_t), else over V (the last batch may repeat images)."""
    if _uses(phase)[0]:
        t_per_batch = cfg.batch_size * (1 - _v_share(cfg, phase))  # on average
        return int(n_t / t_per_batch) if t_per_batch else 0
    return -(-n_v // cfg.batch_size)


def resolve_schedule(cfg: TrainConfig, n_t: int, n_v: int) -> TrainConfig:
    """Fill in ``clean_epochs`` when it is None: finetune-clean then takes as many optimizer
    steps as the joint / mixed phase, so every fine-tuning baseline gets the same step budget
    (all of it on V, where the joint model spends a tenth of each batch on V)."""
    if cfg.clean_epochs is not None:
        return cfg
    budget = cfg.finetune_epochs * steps_per_epoch(cfg, "joint", n_t, n_v)
    per_epoch = steps_per_epoch(cfg, "clean", n_t, n_v)
    epochs = max(1, round(budget / per_epoch)) if budget and per_epoch else 20
    return replace(cfg, clean_epochs=epochs)


def _bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (loss * mask).sum() if mask is not None else loss.sum()


class Stepper:
    """Draws a phase's batches and computes its loss."""

    def __init__(
        self,
        net: LabelCleaningNet,
        data: TrainingData,
        cfg: TrainConfig,
        phase: Phase,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.net, self.data, self.cfg, self.phase, self.device = net, data, cfg, phase, device
        self.spec = net.config.input
        self.channels_last = device.type == "cuda"
        n_t, n_v = len(data.noisy_train), len(data.verified)
        self.uses_t, self.uses_v = _uses(phase)
        self.steps = steps_per_epoch(cfg, phase, n_t, n_v)
        self.generator = generator
        self.start_epoch(generator.initial_seed())

    def start_epoch(self, seed: int) -> None:
        """Reshuffle from ``seed``: an epoch's batches depend on nothing else (resume-safe)."""
        self.generator.manual_seed(seed)
        n_t, n_v = len(self.data.noisy_train), len(self.data.verified)
        self.t_rows = Cycler(n_t, self.generator) if self.uses_t else None
        self.v_rows = Cycler(n_v, self.generator) if self.uses_v else None
        self.step = 0

    def batch(self) -> tuple[Batch | None, Batch | None]:
        n_t, n_v = batch_split(self.cfg, self.phase, self.step)
        self.step += 1
        t = self.data.noisy_train.take(self.t_rows.draw(n_t), self.device) if self.t_rows else None
        v = self.data.verified.take(self.v_rows.draw(n_v), self.device) if self.v_rows else None
        return t, v

    def loss(self, t: Batch | None, v: Batch | None) -> torch.Tensor:
        net, cfg = self.net, self.cfg
        pixels = torch.cat([b.pixels for b in (t, v) if b is not None])
        x = to_input(pixels, self.spec, self.channels_last)
        n = len(x)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            if self.phase == "cleaner":
                with torch.no_grad():
                    features = net.features(x)
            else:
                features = net.features(x)
            logits = net.logits(features) if self.phase != "cleaner" else None
        features = features.float()
        n_t = len(t.pixels) if t is not None else 0
        l_clean = None
        if self.phase in ("cleaner", "joint"):
            l_clean = clean_loss(net, v.noisy, features[n_t:], v.human, v.known)
        if self.phase == "cleaner":
            return reduce_terms(cfg, l_clean, None, n, n - n_t)
        classify = torch.zeros((), device=self.device)
        if t is not None:
            target_t = t.noisy
            if self.phase == "joint":
                with torch.no_grad():  # c is a constant target: no gradient into g
                    target_t = net.cleaner(t.noisy, features[:n_t])
            classify = classify + _bce(logits[:n_t], target_t)
        if v is not None:  # V images learn their human labels v, on verified classes only
            classify = classify + _bce(logits[n_t:], v.human, v.known)
        return reduce_terms(cfg, l_clean, classify, n, n - n_t)


def clean_loss(
    net: LabelCleaningNet,
    noisy: torch.Tensor,
    features: torch.Tensor,
    human: torch.Tensor,
    known: torch.Tensor,
) -> torch.Tensor:
    """L_clean summed over V's images and verified classes: L1 |c - v| (``l1``, the paper's) or
    BCE(logit(y) + g, v) (``bce``)."""
    raw = net.cleaner.raw(noisy, features)
    if net.cleaner.loss == "bce":
        return _bce(raw, human, known)
    return ((net.cleaner.squash(raw) - human).abs() * known).sum()


def reduce_terms(
    cfg: TrainConfig,
    clean_sum: torch.Tensor | None,
    classify_sum: torch.Tensor | None,
    n: int,
    n_v: int,
) -> torch.Tensor:
    """clean_weight * L_clean + classify_weight * L_classify from the terms' sums over images.

    ``batch``: both sums / n, the batch size (the paper: each image counts the same, so the
    weights 0.1 and 1.0 compare the terms as given). ``per-set``: L_clean / n_v, the batch's
    V images (about 10x the weight of ``batch`` at 9:1), L_classify / n.
    """
    terms = []
    if clean_sum is not None:
        per = n if cfg.loss_reduction == "batch" else max(n_v, 1)
        terms.append(cfg.clean_weight * clean_sum / per)
    if classify_sum is not None:
        terms.append(cfg.classify_weight * classify_sum / max(n, 1))
    return torch.stack(terms).sum()


def make_optimizer(net: LabelCleaningNet, phase: Phase, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; the cleaner, a new head next to a trained network, learns at cleaner_lr."""
    cleaner = {"params": list(net.cleaner.parameters()), "lr": cfg.cleaner_lr}
    if phase == "cleaner":
        groups = [cleaner]
    else:
        lr = cfg.lr if phase == "noisy" else cfg.finetune_lr
        ids = {id(p) for p in cleaner["params"]}
        rest = {"params": [p for p in net.parameters() if id(p) not in ids], "lr": lr}
        groups = [rest, cleaner] if phase == "joint" else [rest]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def run_phase(
    net: LabelCleaningNet,
    data: TrainingData,
    cfg: TrainConfig,
    phase: Phase,
    epochs: int,
    device: torch.device,
    *,
    phase_index: int = 0,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
    on_epoch_end: Callable[[int, torch.optim.Optimizer, object], None] | None = None,
    progress: bool = True,
    label: str = "",
) -> dict[str, float]:
    """Train ``epochs`` passes of one phase; returns its images/s and last loss."""
    generator = torch.Generator().manual_seed(cfg.seed * 1009 + phase_index)
    stepper = Stepper(net, data, cfg, phase, device, generator)
    optimizer = make_optimizer(net, phase, cfg)
    total = max(1, stepper.steps * epochs)
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
        if phase == "noisy"
        else torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    )
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])
    images, seconds, last = 0, 0.0, float("nan")
    for epoch in range(start_epoch, epochs):
        stepper.start_epoch(cfg.seed * 1009 + phase_index * 101 + epoch)
        net.train()
        if phase == "cleaner":
            net.backbone.eval()
        bar = tqdm(
            range(stepper.steps),
            desc=f"{label}{phase} {epoch + 1}/{epochs}",
            unit="step",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        for _ in bar:
            t, v = stepper.batch()
            loss = stepper.loss(t, v)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            images += cfg.batch_size
            if bar.n % 20 == 0:
                last = float(loss.detach())
                rate = images / max(seconds + time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{last:.4f}", img_s=f"{rate:.0f}")
        seconds += time.perf_counter() - started
        last = float(loss.detach()) if stepper.steps else last
        if on_epoch_end is not None:
            on_epoch_end(epoch, optimizer, scheduler)
    return {"images_per_s": images / seconds if seconds else 0.0, "loss": last, "seconds": seconds}
