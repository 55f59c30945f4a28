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

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..model.network import LabelCleaningNet
from .batches import Batch, Cycler, TrainingData, to_input
from .schedule import (  # noqa: F401 - the schedule's names, as training code and tests import them
    LOSS_REDUCTIONS,
    MODES,
    NEEDS_VERIFIED,
    LossReduction,
    Mode,
    Phase,
    TrainConfig,
    batch_split,
    phases_for,
    resolve_schedule,
    steps_per_epoch,
    uses,
    verified_in_first,
)


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
        self.uses_t, self.uses_v = uses(phase)
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
