"""Shared fixtures: a tiny real-image data set (Fashion-MNIST mosaics) and helpers."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def missing_system_packages() -> list[str]:
    """The Debian packages the suite needs that are not installed (`make deps` installs them)."""
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        missing.append("dataset-fashion-mnist")
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop the run at once when a system package is missing: skips are for a missing GPU only."""
    missing = missing_system_packages()
    if missing:
        pytest.exit(
            f"the tests need system packages that are missing: {', '.join(missing)}. "
            "Run `make test` (it installs them as root), or: "
            f"apt-get update && apt-get install -y {' '.join(missing)}",
            returncode=3,
        )


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
    "--folds",
    "2",
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
