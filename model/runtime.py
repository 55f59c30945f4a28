"""ONNX Runtime wrapper: one session per bundle, CUDA when asked or available, CPU otherwise.

Torch-free. ``providers`` reports what the session actually uses: onnxruntime drops a CUDA
provider that fails to load with only a log line, so callers check it rather than assume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from .bundle import OUTPUTS, Bundle

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

log = logging.getLogger(__name__)


def gpu_present() -> bool:
    """Whether an NVIDIA driver is visible (onnxruntime-gpu lists CUDA even where none is)."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def _requested_providers(device: Device) -> list[str]:
    if device == "cpu":
        return [CPU]
    auto_cuda = CUDA in ort.get_available_providers() and gpu_present()
    if device == "cuda" or auto_cuda:
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:
                preload()  # CUDA/cuDNN from NVIDIA's pip packages, when installed that way
            except Exception as exc:  # noqa: BLE001 - a missing library only means no CUDA
                log.info("onnxruntime.preload_dlls failed: %s", exc)
        return [CUDA, CPU]
    return [CPU]


class OnnxModel:
    """A loaded bundle ready to run batches."""

    def __init__(
        self, bundle: Bundle, *, device: Device = "auto", threads: int = 0, spin: bool = True
    ) -> None:
        """``spin=False`` stops ONNX Runtime's idle threads from spinning between runs (a server
        needs those cycles for HTTP and decoding; a tight loop of runs is faster with them)."""
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.bundle = bundle
        self.device = device
        self.session = ort.InferenceSession(
            str(bundle.model_path), sess_options=options, providers=_requested_providers(device)
        )
        self.providers: list[str] = list(self.session.get_providers())

    @property
    def provider(self) -> str:
        """The provider that runs the model (the first one in use)."""
        return self.providers[0]

    @property
    def ready(self) -> bool:
        """False when CUDA was demanded but the session fell back to CPU."""
        return self.device != "cuda" or self.provider == CUDA

    def run(
        self, images: np.ndarray, noisy_labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, C, H, W) float32 and (N, d) float32 -> (scores, cleaned, issue), each (N, d)."""
        scores, cleaned, issue = self.session.run(
            list(OUTPUTS),
            {
                "image": np.ascontiguousarray(images, dtype=np.float32),
                "noisy_labels": np.ascontiguousarray(noisy_labels, dtype=np.float32),
            },
        )
        return scores, cleaned, issue
