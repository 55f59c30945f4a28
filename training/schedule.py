"""A training run's schedule, torch-free: the modes and their phases, the options of a run
(``TrainConfig``, whose defaults are the CLI's), and how many steps and V images each phase's
batches take. The loop that runs the phases is training.loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Literal

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


def uses(phase: Phase) -> tuple[bool, bool]:
    """(whether ``phase``'s batches hold T images, whether they hold V images)."""
    return phase in ("noisy", "mixed", "joint"), phase in NEEDS_VERIFIED


def _v_share(cfg: TrainConfig, phase: Phase) -> Fraction:
    """The share of V images in a batch of ``phase``, as an exact fraction (0.1 -> 1/10)."""
    uses_t, uses_v = uses(phase)
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
    if uses(phase)[0]:
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
