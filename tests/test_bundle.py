"""Export: ONNX Runtime matches PyTorch; bundles round-trip and refuse tampering."""

import json

import numpy as np
import pytest
import torch
from labelclean.model.bundle import BundleError, LabelClass, load_bundle
from labelclean.model.config import ModelConfig
from labelclean.model.export import ExportError, export_bundle
from labelclean.model.network import LabelCleaningNet
from labelclean.model.runtime import OnnxModel

CLASSES = [LabelClass(f"/m/{i}", f"class, {i}") for i in range(5)]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = LabelCleaningNet(ModelConfig(num_classes=5, width=4, feature_dim=16))
    torch.nn.init.normal_(net.cleaner.out.weight, std=0.3)  # a cleaner that does something
    return net.eval()


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((6, 1, 28, 28)).astype(np.float32),
        (rng.random((6, 5)) > 0.6).astype(np.float32),
    )


@pytest.fixture()
def bundle(tmp_path, net, sample):
    return export_bundle(
        net,
        tmp_path / "b",
        CLASSES,
        sample=sample,
        thresholds_cleaned=[0.4] * 5,
        thresholds_scores=[0.6] * 5,
        mode="joint",
        metrics={"AP_all": 90.0},
    )


def test_onnx_matches_pytorch_at_other_batch_sizes(bundle, net):
    model = OnnxModel(load_bundle(bundle.path), device="cpu")
    rng = np.random.default_rng(1)
    for n in (1, 3, 17):  # the batch axis is dynamic
        x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        y = (rng.random((n, 5)) > 0.5).astype(np.float32)
        scores, cleaned, issue = model.run(x, y)
        with torch.no_grad():
            ts, tc, ti = net(torch.from_numpy(x), torch.from_numpy(y))
        np.testing.assert_allclose(scores, ts.numpy(), atol=1e-4)
        np.testing.assert_allclose(cleaned, tc.numpy(), atol=1e-4)
        np.testing.assert_allclose(issue, ti.numpy(), atol=1e-4)
    assert model.provider == "CPUExecutionProvider" and model.ready


def test_bundle_round_trip(bundle):
    loaded = load_bundle(bundle.path)
    assert loaded.classes == CLASSES  # commas in names survive the CSV
    assert loaded.thresholds_cleaned == [0.4] * 5 and loaded.thresholds_scores == [0.6] * 5
    assert loaded.input.height == 28 and loaded.input.channels == 1
    assert loaded.mode == "joint" and loaded.metrics["AP_all"] == 90.0
    assert loaded.metrics["onnx_parity_max_abs_diff"] <= 1e-4


def test_tampered_model_is_rejected(bundle):
    with (bundle.path / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(bundle.path)


def test_other_format_version_is_rejected(bundle):
    meta_file = bundle.path / "bundle.json"
    meta = json.loads(meta_file.read_text())
    meta["format"] = 99
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format 99 is not supported"):
        load_bundle(bundle.path)


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_parity_failure_writes_nothing(tmp_path, net, sample, monkeypatch):
    import labelclean.model.export as export

    monkeypatch.setattr(export, "PARITY_ATOL", -1.0)  # any difference, even 0, now fails
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_bundle(
            net,
            tmp_path / "b",
            CLASSES,
            sample=sample,
            thresholds_cleaned=[0.5] * 5,
            thresholds_scores=[0.5] * 5,
            mode="joint",
            metrics={},
        )
    assert list((tmp_path / "b").iterdir()) == []
