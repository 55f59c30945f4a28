"""Fixtures of the Label Studio tests: the service (real uvicorn, the tiny bundle of the service
tests) with its /label-studio backend, and a review export of real Fashion-MNIST images."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from labelclean.cli import main

from ...conftest import API_KEY, Server, bundle_dir, server_factory  # noqa: F401 - fixtures
from ..test_review import FAST, write_data


@dataclass
class Export:
    """`labelclean review --format label-studio` of a data folder, images as file:// URIs."""

    data: Path
    images: Path
    tasks: list[dict]
    config: str
    given: dict  # ImageID -> the machine's labels as /clean takes them


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Export:  # noqa: F811
    root = tmp_path_factory.mktemp("ls-export")
    data, given, _ = write_data(root / "data", n=12)
    images = (data / "images").resolve()
    out = root / "out"
    code = main(["review", "--model", str(bundle_dir), "--data", str(data), "--out", str(out),
                 "--format", "label-studio", "--image-url", f"file://{images}/",
                 *FAST])  # fmt: skip
    assert code == 0
    tasks = json.loads((out / "label-studio-tasks.json").read_text())
    for n, task in enumerate(tasks, 1):  # as Label Studio sends them: with ids
        task["id"] = n
    config = (out / "label-studio-config.xml").read_text()
    return Export(data, images, tasks, config, given)


def service_env(images: Path, reviews: Path | None, **extra: str) -> dict[str, str]:
    env = {
        "LABELCLEAN_API_KEYS": API_KEY,
        "LABELCLEAN_DEVICE": "cpu",
        "LABELCLEAN_STORAGE_ROOTS": f"file://{images}/",
        "LABELCLEAN_MAX_IMAGES": "4",  # /predict cleans a few tasks at a time
        **extra,
    }
    if reviews is not None:
        env["LABELCLEAN_LABEL_STUDIO_REVIEWS"] = str(reviews)
    return env


@pytest.fixture(scope="module")
def backend(
    export: Export, server_factory: Callable[..., Server], bundle_dir: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Server, Path]:  # fmt: skip
    """The service with the backend on: keys on, images under the export's folder, reviews
    kept in a fresh folder. (server, the reviews folder)."""
    reviews = tmp_path_factory.mktemp("reviews") / "store"
    return server_factory(bundle_dir, service_env(export.images, reviews)), reviews
