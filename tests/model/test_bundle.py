"""Export: ONNX Runtime matches PyTorch; bundles round-trip and refuse tampering."""

import json

import numpy as np
import pytest
import torch
from labelclean.model.bundle import BundleError, LabelClass, load_bundle
from labelclean.model.config import ModelConfig
from labelclean.model.decision import Decision
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
        decision=Decision.paper([0.5] * 5),
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


def test_a_bundle_from_before_the_decision_rule_is_refused_with_what_rebuilds_it(bundle):
    meta_file = bundle.path / "bundle.json"
    meta = json.loads(meta_file.read_text())
    meta["format"] = 2
    del meta["decision"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format 2 predates the decision rule") as info:
        load_bundle(bundle.path)
    assert "labelclean train" in str(info.value) and "labelclean export" in str(info.value)


def test_the_decision_travels_in_the_bundle(tmp_path, net, sample):
    remove, add = np.linspace(0.1, 0.5, 5), np.linspace(0.9, 0.5, 5)
    levels = {0.9: (np.full(5, 0.2), np.full(5, 0.8)), 0.5: (np.full(5, 0.6), np.full(5, 0.4))}
    per_class = np.array([True, False, False, True, False])
    decision = Decision("issue", "min_precision=0.8", remove, add, np.full(5, 0.4), per_class,
                        levels)  # fmt: skip
    saved = export_bundle(
        net, tmp_path / "b", CLASSES, sample=sample, thresholds_cleaned=[0.4] * 5,
        thresholds_scores=[0.6] * 5, decision=decision, mode="joint", metrics={},
    )  # fmt: skip
    loaded = load_bundle(saved.path).require_decision()
    assert (loaded.rule, loaded.objective) == ("issue", "min_precision=0.8")
    np.testing.assert_allclose(loaded.remove, remove, rtol=1e-6)
    np.testing.assert_allclose(loaded.add, add, rtol=1e-6)
    assert loaded.per_class.tolist() == per_class.tolist()
    assert loaded.min_precision_levels == [0.5, 0.9]
    assert loaded.level(0.6) == 0.9 and loaded.level(0.5) == 0.5 and loaded.level(0.1) == 0.5
    np.testing.assert_allclose(loaded.cuts(min_precision=0.85)[0], 0.2)
    summary = load_bundle(saved.path).metadata()["decision"]
    assert summary["rule"] == "issue" and summary["min_precision_levels"] == [0.5, 0.9]
    meta_file = saved.path / "bundle.json"
    meta = json.loads(meta_file.read_text())
    for field, bad in (("rule", "vote"), ("remove", [0.5] * 4), ("add", None)):
        broken = {**meta, "decision": {**meta["decision"], field: bad}}
        meta_file.write_text(json.dumps(broken))
        with pytest.raises(BundleError, match="malformed field"):
            load_bundle(saved.path)


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
            decision=Decision.paper([0.5] * 5),
            mode="joint",
            metrics={},
        )
    assert list((tmp_path / "b").iterdir()) == []
