"""Training options from the command line to the data and the checkpoint: the noisy-label
encoding (the paper's binary y, or the machine's confidence) and the loss reduction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from labelclean.model.config import ModelConfig
from labelclean.model.network import LabelCleaningNet
from labelclean.model.preprocess import encode_noisy
from labelclean.training.loop import Stepper, TrainConfig
from PIL import Image

from labelclean import commands
from labelclean.cli import build_parser

CLASSES = ["/m/a", "/m/b", "/m/c"]
# ImageID -> machine confidences per class (0 = not listed)
MACHINE = {
    "t0": [0.3, 0.0, 0.9],
    "t1": [0.0, 0.55, 0.0],
    "t2": [1.0, 0.2, 0.0],
    "t3": [0.0, 0.0, 0.7],
    "v0": [0.4, 0.0, 0.0],
    "v1": [0.0, 0.8, 0.6],
}
HUMAN = {"v0": [1, 0, None], "v1": [None, 1, 0]}  # None: not verified
TEST = {"x0": ([0.6, 0.0, 0.0], [1, 0, 0]), "x1": ([0.0, 0.3, 0.0], [0, 1, 1])}
ALL_MACHINE = {**MACHINE, **{i: m for i, (m, _) in TEST.items()}}


def _write_csv(path, rows) -> None:
    lines = ["ImageID,Source,LabelName,Confidence"]
    lines += [f"{i},src,{CLASSES[c]},{v}" for i, vals in rows for c, v in enumerate(vals) if v]
    path.write_text("\n".join(lines) + "\n")


def _write_human(path, rows) -> None:
    lines = ["ImageID,Source,LabelName,Confidence"]
    lines += [
        f"{i},verification,{CLASSES[c]},{v}"
        for i, vals in rows
        for c, v in enumerate(vals)
        if v is not None
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id in [*MACHINE, *TEST]:
        pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(root / "images" / f"{image_id}.png")
    (root / "class-descriptions.csv").write_text("".join(f"{c},{c[3:]}\n" for c in CLASSES))
    _write_csv(root / "train-annotations-machine-imagelabels.csv", MACHINE.items())
    _write_human(root / "train-annotations-human-imagelabels.csv", HUMAN.items())
    test_machine, test_human = [(i, m) for i, (m, _) in TEST.items()], TEST.items()
    _write_csv(root / "test-annotations-machine-imagelabels.csv", test_machine)
    _write_human(
        root / "test-annotations-human-imagelabels.csv", [(i, h) for i, (_, h) in test_human]
    )
    return root


def test_binary_encoding_is_one_for_every_listed_label():
    confidences = np.array([[0.3, 0.0, 1.0], [0.55, 0.02, 0.0]], dtype=np.float32)
    binary = encode_noisy(confidences, "binary")
    assert binary.dtype == np.float32
    assert binary.tolist() == [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert encode_noisy(confidences, "confidence").tolist() == confidences.tolist()
    with pytest.raises(ValueError, match="binary"):
        encode_noisy(confidences, "scores")


def _load(data_dir, tmp_path, *flags):
    args = build_parser().parse_args(
        ["train", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--quiet", *flags]
    )
    model_cfg, train_cfg = commands._configs(args, len(CLASSES))
    return model_cfg, train_cfg, commands._load_data(args, model_cfg, train_cfg.seed)


@pytest.mark.parametrize("encoding", ["binary", "confidence"])
def test_training_reads_noisy_labels_as_asked(data_dir, tmp_path, encoding):
    flags = ["--noisy-labels", encoding] if encoding == "binary" else []
    model_cfg, _, data = _load(data_dir, tmp_path, *flags)
    assert model_cfg.noisy_labels == encoding  # saved with the model: serving encodes alike
    assert data.noisy_train.image_ids == ["t0", "t1", "t2", "t3"]
    for part in (data.noisy_train, data.verified, data.test):
        np.testing.assert_array_equal(part.noisy.numpy(), _expected(part.image_ids, encoding))
    # the training loop draws these as y
    cfg = TrainConfig(batch_size=4, device="cpu")
    generator = torch.Generator().manual_seed(0)
    stepper = Stepper(_net(), data, cfg, "joint", torch.device("cpu"), generator)
    t, v = stepper.batch()  # the first batch of 4 holds all of T (and no V: 0.4 rounds down)
    assert len(t.noisy) == 4 and len(v.noisy) == 0
    assert sorted(t.noisy.tolist()) == sorted(
        _expected(["t0", "t1", "t2", "t3"], encoding).tolist()
    )


def _expected(image_ids: list[str], encoding: str) -> np.ndarray:
    confidences = np.array([ALL_MACHINE[i] for i in image_ids], dtype=np.float32)
    return (confidences > 0).astype(np.float32) if encoding == "binary" else confidences


def _net() -> LabelCleaningNet:
    return LabelCleaningNet(ModelConfig(num_classes=len(CLASSES), width=4, feature_dim=8))


@pytest.mark.parametrize("command", ["train", "benchmark"])
def test_loss_reduction_flag(data_dir, tmp_path, command):
    base = [command, "--data", str(data_dir), "--out", str(tmp_path / "out")]
    default = commands._configs(build_parser().parse_args(base), len(CLASSES))[1]
    assert default.loss_reduction == "batch"
    args = build_parser().parse_args([*base, "--loss-reduction", "per-set"])
    assert commands._configs(args, len(CLASSES))[1].loss_reduction == "per-set"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--loss-reduction", "mean"])


def test_checkpoint_records_the_loss_reduction(data_dir, tmp_path):
    from labelclean.training.run import train

    model_cfg, train_cfg, data = _load(
        data_dir, tmp_path, "--mode", "noisy", "--epochs", "1", "--batch-size", "2",
        "--width", "4", "--feature-dim", "8", "--loss-reduction", "per-set", "--device", "cpu",
    )  # fmt: skip
    train(data, tmp_path / "run", train_cfg, model_cfg, export=False, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["train_config"]["loss_reduction"] == "per-set"


@pytest.mark.parametrize("command", ["train", "benchmark"])
def test_cleaner_loss_flag(data_dir, tmp_path, command):
    """bce by default (the better one on the demo benchmark), the paper's l1 by flag."""
    base = [command, "--data", str(data_dir), "--out", str(tmp_path / "out")]
    assert commands._configs(build_parser().parse_args(base), len(CLASSES))[0].cleaner_loss == "bce"
    args = build_parser().parse_args([*base, "--cleaner-loss", "l1"])
    assert commands._configs(args, len(CLASSES))[0].cleaner_loss == "l1"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--cleaner-loss", "l2"])
