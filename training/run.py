"""Train one mode end to end: data, phases, thresholds, evaluation, checkpoint, bundle.

    labelclean train --data DATA --out RUN --mode joint            # CPU-sized demo: minutes
    labelclean train --data DATA --out RUN --backbone resnet50 --device cuda

RUN/ gets checkpoint.pt (resumable), report.json and bundle/ (the ONNX model bundle).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..model.config import ModelConfig
from ..model.network import LabelCleaningNet
from ..model.openimages import DataError
from .batches import TrainingData
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    rebuild,
    save_checkpoint,
    weights_digest,
)
from .finish import finish, first_verified_phase, save_start
from .loop import NEEDS_VERIFIED, TrainConfig, phases_for, resolve_schedule, run_phase

GPU_RESIDENT_SHARE = 0.25  # keep the decoded data on the GPU when it takes less than this


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def place_data(data: TrainingData, device: torch.device) -> TrainingData:
    """On CUDA, move the decoded images to the GPU when they fit comfortably."""
    if device.type != "cuda":
        return data
    total = sum(p.nbytes for p in data.parts().values())
    if total < GPU_RESIDENT_SHARE * torch.cuda.get_device_properties(device).total_memory:
        return data.to(device)
    return data


def build_network(
    model_cfg: ModelConfig, data: TrainingData, init: Path | None, backbone_weights: Path | None
) -> LabelCleaningNet:
    if init is None:
        net = LabelCleaningNet(model_cfg, backbone_weights)
    else:
        net, classes = rebuild(load_checkpoint(init))
        if [c.id for c in classes] != [c.id for c in data.classes]:
            raise CheckpointError(f"{init}: its classes differ from the data set's class file")
        if net.config.label_floor != model_cfg.label_floor:  # the run's, not init's
            net.config.label_floor = net.cleaner.eps = model_cfg.label_floor
            net.issue_head.eps = model_cfg.label_floor
        if net.config.cleaner_loss != model_cfg.cleaner_loss:
            net.set_cleaner_loss(model_cfg.cleaner_loss)  # the run's --cleaner-loss, not init's
    if data.hierarchy is not None:  # the issue head reads each label's parents and children
        index = {c.id: i for i, c in enumerate(data.classes)}
        net.issue_head.set_hierarchy(*data.hierarchy.relative_columns(index))
    return net


def check_verified(data: TrainingData, cfg: TrainConfig, phases: list) -> None:
    if any(p in NEEDS_VERIFIED for p, _ in phases) and len(data.verified) == 0:
        raise DataError(
            f"mode {cfg.mode!r} needs human-verified training images (V), but the data set has "
            "none that decoded (train-annotations-human-imagelabels.csv)"
        )
    if len(data.noisy_train) == 0 and any(p in ("noisy", "mixed", "joint") for p, _ in phases):
        raise DataError("the data set has no training images with machine labels only (T)")


def train(
    data: TrainingData,
    out: Path,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    *,
    init: Path | None = None,
    resume: Path | None = None,
    backbone_weights: Path | None = None,
    export: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg.mode`` (from ``init``, a noisy-phase checkpoint, when given); write RUN/.

    ``resume`` continues the checkpoint's own schedule (see ``resume_schedule``).
    """
    torch.manual_seed(cfg.seed)
    if cfg.folds > 1:  # cross-fitting uses all of V (training.crossfit)
        data = data.with_verified(data.all_verified())
    cfg = resolve_schedule(cfg, len(data.noisy_train), len(data.verified))
    device = resolve_device(cfg.device)
    state = load_checkpoint(resume) if resume else None
    if state:
        phases = resume_schedule(state, resume, cfg, model_cfg, data, init, backbone_weights)
    else:
        phases = phases_for(cfg, from_noisy=init is not None)
    check_verified(data, cfg, phases)
    if state:
        net, start = rebuild(state)[0], state.get("start")
    else:
        net = build_network(model_cfg, data, init, backbone_weights)
        start = starting_point(net, init, backbone_weights)
    net.to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    data = place_data(data, device)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings = run_phases(net, data, cfg, phases, device, out, state, start, progress)
    report = finish(net, data, cfg, out, device, phases, start, export=export, progress=progress)
    report["timings"] = {**timings, "total_seconds": time.perf_counter() - started}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_phases(
    net: LabelCleaningNet, data: TrainingData, cfg: TrainConfig, phases: list, device: torch.device,
    out: Path, state: dict[str, Any] | None, start: dict[str, Any] | None, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Run the schedule's phases (from the checkpoint ``state``'s phase and epoch when resuming),
    saving RUN/checkpoint.pt after every epoch and, before the first phase that reads V, where
    the cross-fit's fold networks start; returns each phase's timings."""
    ckpt = out / "checkpoint.pt"
    start_phase, start_epoch = (state["phase_index"], state["epoch"] + 1) if state else (0, 0)
    timings: dict[str, Any] = {}
    first_v = first_verified_phase(phases)
    for index, (phase, epochs) in enumerate(phases):
        if index < start_phase:
            continue
        first = index == start_phase
        if index == first_v and not (first and start_epoch > 0):
            save_start(out, net, data, cfg)  # where the cross-fit's fold networks start

        def save(epoch: int, optimizer, scheduler, index=index) -> None:
            save_checkpoint(
                ckpt,
                net,
                data.classes,
                train_config=cfg.to_dict(),
                phases=phases,
                phase_index=index,
                epoch=epoch,
                optimizer={
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
                start=start,
            )

        timings[phase] = run_phase(
            net,
            data,
            cfg,
            phase,
            epochs,
            device,
            phase_index=index,
            start_epoch=start_epoch if first else 0,
            optimizer_state=state["optimizer"] if (state and first) else None,
            on_epoch_end=save,
            progress=progress,
        )
    return timings


def starting_point(
    net: LabelCleaningNet, init: Path | None, backbone_weights: Path | None
) -> dict[str, Any]:
    """Where a run's training starts, kept in its checkpoints and report: the model it was
    initialised from (``init``), the backbone weights file given (unused with ``init``), and the
    digest of the weights the first phase starts from (the init checkpoint's digest when
    starting from one)."""
    return {
        "init": str(init) if init is not None else None,
        "backbone_weights": str(backbone_weights) if backbone_weights is not None else None,
        "weights_sha256": weights_digest(net.state_dict()),
    }


# Settings that may differ between a run and its resumption: where it runs.
RESUME_MAY_CHANGE = {"device"}
# The model's input normalisation is the backbone's default, not a flag: the checkpoint's holds.
MODEL_NOT_FLAGS = {"input.mean", "input.std", "dropout"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def resume_schedule(
    state: dict[str, Any],
    path: Path,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    data: TrainingData,
    init: Path | None,
    backbone_weights: Path | None,
) -> list:
    """The phases a resumed run continues: the checkpoint's own.

    ``--init`` and ``--backbone-weights`` say where a run starts; a resumed run starts from its
    checkpoint, so they may be left out (a run begun with ``--init`` resumes without it and
    does not train the noisy phase again). Everything given must agree with the checkpoint:
    the schedule and model settings, the classes, and ``--init`` / ``--backbone-weights`` when
    given. A difference stops the run with each one named (CheckpointError).
    """
    saved_cfg, now_cfg = state.get("train_config", {}), cfg.to_dict()
    saved_model, now_model = _flat(state["model_config"]), _flat(model_cfg.to_dict())
    differences = [
        f"{key}: {saved[key]!r} in the checkpoint, {now[key]!r} now"
        for saved, now, skip in (
            (saved_cfg, now_cfg, RESUME_MAY_CHANGE),
            (saved_model, now_model, MODEL_NOT_FLAGS),
        )
        for key in now
        if key in saved and key not in skip and saved[key] != now[key]
    ]
    if [i for i, _ in state["classes"]] != [c.id for c in data.classes]:
        differences.append("classes: the data set's class file lists other classes")
    phases = [(phase, epochs) for phase, epochs in state["phases"]]
    start = state.get("start") or {}
    if init is not None:
        if phases != phases_for(cfg, from_noisy=True):
            differences.append(
                f"--init {init}: the run did not start from a model (its phases are "
                f"{_phases(phases)}); resume without --init"
            )
        elif "weights_sha256" in start:
            given = weights_digest(load_checkpoint(init)["state_dict"])
            if given != start["weights_sha256"]:
                differences.append(
                    f"--init {init}: not the model the run started from ({start['init']})"
                )
    elif phases not in (phases_for(cfg, from_noisy=False), phases_for(cfg, from_noisy=True)):
        differences.append(
            f"phases: {_phases(phases)} in the checkpoint, {_phases(phases_for(cfg))} now"
        )
    if (
        backbone_weights is not None
        and "backbone_weights" in start
        and start["backbone_weights"] != str(backbone_weights)
    ):
        differences.append(
            f"--backbone-weights {backbone_weights}: the run started from "
            f"{start['backbone_weights'] or 'no backbone weights file'}"
        )
    if differences:
        raise CheckpointError(
            f"{path}: cannot resume with settings that differ from the run's (resume with the "
            f"flags it was started with, or start a new run): {'; '.join(differences)}"
        )
    return phases


def _phases(phases: list) -> str:
    return ", ".join(f"{phase} x{epochs}" for phase, epochs in phases) or "none"
