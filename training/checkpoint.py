"""Checkpoints that carry everything needed to rebuild the model and to resume training."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..model.classes import LabelClass
from ..model.config import ModelConfig
from ..model.network import LabelCleaningNet

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit."""


def save_checkpoint(
    path: Path, net: LabelCleaningNet, classes: list[LabelClass], **fields: Any
) -> None:
    """Write atomically: a crash mid-write never leaves a half checkpoint behind."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "model_config": net.config.to_dict(),
        "state_dict": net.state_dict(),
        "classes": [[c.id, c.name] for c in classes],
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def init_checkpoint(path: Path) -> Path:
    """What ``--init`` names: a checkpoint, or the bundle folder of a run (``RUN/bundle``, as
    ``labelclean train`` writes it; a deployed model), whose run's ``checkpoint.pt`` training
    continues from: a bundle holds the ONNX model only, not the weights to train further."""
    if not (path.is_dir() and (path / "bundle.json").is_file()):
        return path
    run = path.resolve().parent
    found = run / "checkpoint.pt"
    try:
        exported = json.loads((run / "report.json").read_text()).get("bundle")
    except (OSError, ValueError):
        exported = None
    if found.is_file() and exported and Path(exported).resolve() == path.resolve():
        return found
    raise CheckpointError(
        f"{path}: a bundle holds the ONNX model only, not the weights training continues from, "
        f"and it is not the bundle of a run beside its checkpoint ({run}/checkpoint.pt, whose "
        "report.json names this bundle): pass --init RUN/checkpoint.pt of the run that made it"
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one user error
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a labelclean checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def rebuild(state: dict[str, Any]) -> tuple[LabelCleaningNet, list[LabelClass]]:
    """The network (weights loaded) and the classes of a checkpoint."""
    net = LabelCleaningNet(ModelConfig.from_dict(state["model_config"]))
    result = net.load_state_dict(state["state_dict"], strict=False)
    # Checkpoints made before the issue score have no issue head: it keeps its default.
    missing = [k for k in result.missing_keys if not k.startswith("issue_head.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"the checkpoint's weights do not fit its model: missing {missing}, "
            f"unexpected {list(result.unexpected_keys)}"
        )
    return net, [LabelClass(i, n) for i, n in state["classes"]]


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes: equal digests, equal weights."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
