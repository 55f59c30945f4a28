"""Shared fixtures: a tiny real-image data set (Fashion-MNIST mosaics) and helpers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TINY = dict(
    n_train=150,
    n_verified=40,
    n_test=60,
    annotator_epochs=1,
    annotator_items=2000,
    calibration_items=500,
    progress=False,
)
# Smallest schedule and network that still exercise every phase.
FAST_TRAIN = [
    "--epochs",
    "1",
    "--finetune-epochs",
    "1",
    "--clean-epochs",
    "1",
    "--cleaner-epochs",
    "1",
    "--width",
    "4",
    "--feature-dim",
    "16",
    "--quiet",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data set in Open Images layout built from the installed Fashion-MNIST."""
    from labelclean.training.demo_data import build_demo_data

    out = tmp_path_factory.mktemp("tiny") / "data"
    build_demo_data(out, seed=0, **TINY)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
