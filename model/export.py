"""Export a trained network to a model bundle, checked against ONNX Runtime.

    bundle = export_bundle(net, out_dir, classes, sample=(images, noisy), thresholds..., mode=...)

The graph has inputs ``image`` (N, C, H, W) float32 and ``noisy_labels`` (N, d) float32 and
outputs ``scores`` (classifier probabilities), ``cleaned`` (c) and ``issue`` (the label-issue
score: P(listed label wrong) or P(unlisted label missing)), with a dynamic batch axis.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from .bundle import MODEL_FILE, OUTPUTS, Bundle, write_bundle
from .classes import LabelClass
from .decision import Decision
from .hierarchy import Hierarchy
from .network import LabelCleaningNet

PARITY_ATOL = 1e-4
OPSET = 17


class ExportError(RuntimeError):
    """ONNX Runtime disagrees with PyTorch on the exported graph."""


def export_onnx(net: LabelCleaningNet, path: Path, sample: tuple[np.ndarray, np.ndarray]) -> None:
    """Write the inference graph of ``net`` (a CPU float32 copy, eval mode) to ``path``."""
    net = copy.deepcopy(net).float().cpu().eval()
    images, noisy = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in sample)
    batch = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (images, noisy),
            str(path),
            input_names=["image", "noisy_labels"],
            output_names=list(OUTPUTS),
            dynamic_axes={name: batch for name in ("image", "noisy_labels", *OUTPUTS)},
            opset_version=OPSET,
            dynamo=False,
        )


def check_parity(net: LabelCleaningNet, path: Path, sample: tuple[np.ndarray, np.ndarray]) -> float:
    """Max absolute difference between PyTorch and ONNX Runtime (CPU) on ``sample``.

    Raises ExportError when it exceeds PARITY_ATOL.
    """
    net = copy.deepcopy(net).float().cpu().eval()
    images, noisy = (np.ascontiguousarray(a, dtype=np.float32) for a in sample)
    with torch.no_grad():
        expected = [t.numpy() for t in net(torch.from_numpy(images), torch.from_numpy(noisy))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(list(OUTPUTS), {"image": images, "noisy_labels": noisy})
    diff = max(float(np.max(np.abs(e - a))) for e, a in zip(expected, actual, strict=True))
    if not diff <= PARITY_ATOL:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {diff:.3g} (allowed {PARITY_ATOL:g}) "
            f"on a batch of {len(images)}; the bundle was not written"
        )
    return diff


def export_bundle(
    net: LabelCleaningNet,
    out: Path,
    classes: list[LabelClass],
    *,
    sample: tuple[np.ndarray, np.ndarray],
    thresholds_cleaned: list[float],
    thresholds_scores: list[float],
    mode: str,
    metrics: dict[str, Any],
    decision: Decision,
    hierarchy: Hierarchy | None = None,
) -> Bundle:
    """Export, verify parity on ``sample`` (a real batch), then write the bundle folder.

    Nothing is left in ``out`` when the parity check fails.
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_model = Path(tmp) / MODEL_FILE
        export_onnx(net, tmp_model, sample)
        diff = check_parity(net, tmp_model, sample)
        tmp_model.replace(out / MODEL_FILE)
    metrics = {**metrics, "onnx_parity_max_abs_diff": diff}
    return write_bundle(
        out,
        out / MODEL_FILE,
        classes,
        net.config.input,
        thresholds_cleaned=thresholds_cleaned,
        thresholds_scores=thresholds_scores,
        mode=mode,
        metrics=metrics,
        model_config=net.config.to_dict(),
        decision=decision,
        hierarchy=hierarchy,
    )
