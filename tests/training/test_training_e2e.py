"""Every mode end to end on a tiny real-image data set, through the CLI a user runs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from labelclean.model.bundle import load_bundle
from labelclean.model.issue_head import FEATURES
from labelclean.training.checkpoint import weights_digest
from labelclean.training.loop import MODES
from labelclean.training.metrics import ap_all, mean_ap

from labelclean.cli import main

from ..conftest import FAST_TRAIN


@pytest.fixture(scope="module")
def bench(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    assert (
        main(
            ["benchmark", "--data", str(tiny_data), "--out", str(out), "--seeds", "0", *FAST_TRAIN]
        )
        == 0
    )
    return out


def report(bench: Path, folder: str) -> dict:
    return json.loads((bench / "seed-0" / folder / "report.json").read_text())


def test_benchmark_runs_every_mode_and_writes_the_table(bench: Path):
    results = json.loads((bench / "results.json").read_text())
    table = (bench / "results.md").read_text()
    assert list(results["modes"]) == list(MODES)
    for mode in MODES:
        run = bench / "seed-0" / mode
        measured = report(bench, mode)["metrics"]
        bundle = load_bundle(run / "bundle")
        assert bundle.mode == mode  # every mode exported a loadable bundle
        # each number is the one its run measured on its own test predictions
        arrays = dict(np.load(run / "test_predictions.npz"))
        recomputed = {
            "AP_all": 100 * ap_all(arrays["scores"], arrays["human"], arrays["known"]),
            "MAP": 100 * mean_ap(arrays["scores"], arrays["human"], arrays["known"]),
        }
        row = results["modes"][mode]
        for metric in ("AP_all", "MAP"):
            value = measured[metric]
            assert value == pytest.approx(recomputed[metric], abs=1e-9)
            assert bundle.metrics[metric] == value
            assert row[metric]["per_seed"] == {"0": value}
            assert (row[metric]["mean"], row[metric]["spread"]) == (value, 0.0)
        assert (
            f"| {mode} | {row['AP_all']['mean']:.2f} ± 0.00 | {row['MAP']['mean']:.2f} ± " in table
        )
    for mode, cleaner in results["cleaner_on_test"].items():
        measured = report(bench, mode)["metrics"]
        assert {k: v["per_seed"] for k, v in cleaner.items()} == {
            k: {"0": measured[f"cleaner_{k}"]} for k in cleaner
        }
    assert (bench / "cleaned_vs_noisy_pr.png").read_bytes()[:4] == b"\x89PNG"
    # the short fine-tune on V is reported next to the table, not as one of its modes
    (reference,) = results["reference"]
    assert reference.startswith("finetune-clean") and "Reference, outside" in table
    short = report(bench, "finetune-clean-short")["metrics"]
    assert results["reference"][reference]["AP_all"]["per_seed"] == {"0": short["AP_all"]}


def test_findings_follow_from_the_per_seed_numbers(bench: Path):
    """Each finding compares two numbers of results.json seed by seed: its differences are
    theirs, its verdict agrees with their signs, and the table shows it."""
    from labelclean.training.benchmark import (
        BASELINES,
        CLEANER_CLAIMS,
        DETECTION_CLAIMS,
        FINAL_CLAIMS,
        OURS,
        detection_claim,
    )

    results = json.loads((bench / "results.json").read_text())
    table = (bench / "results.md").read_text()
    pairs = {}
    for ours in OURS:
        for baseline in BASELINES:
            for metric in ("AP_all", "MAP"):
                pairs[f"{ours} vs {baseline} on {metric}"] = (
                    results["modes"][ours][metric],
                    results["modes"][baseline][metric],
                )
        for claim, (mine, theirs) in CLEANER_CLAIMS.items():
            cleaner = results["cleaner_on_test"][ours]
            pairs[f"{ours}, test images, {claim}"] = (cleaner[mine], cleaner[theirs])
        for claim, (mine, theirs) in FINAL_CLAIMS.items():  # the decision's final label sets
            final = results["final_on_test"][ours]
            pairs[f"{ours}, test images, {claim}"] = (final[mine], final[theirs])
        scorers = results["detection"]["scorers"]  # label-issue detection on the test split
        for claim, (mine, theirs, metric) in DETECTION_CLAIMS.items():
            for kind in ("wrong", "missing"):
                a = scorers[f"{mine}/{ours}"][kind][metric]
                b = scorers.get(f"{theirs}/{ours}", scorers.get(theirs))[kind][metric]
                pairs[detection_claim(ours, kind, claim)] = (a, b)
    assert set(results["findings"]) == set(pairs)
    for claim, finding in results["findings"].items():
        a, b = pairs[claim]
        differences = {s: a["per_seed"][s] - b["per_seed"][s] for s in a["per_seed"]}
        assert finding["per_seed_difference"] == pytest.approx(differences, nan_ok=True)
        mean = np.mean(list(differences.values()))
        assert finding["difference"] == pytest.approx(mean, nan_ok=True)
        if finding["verdict"] == "better":
            assert all(d > 0 for d in differences.values())
        elif finding["verdict"] == "worse":
            assert all(d < 0 for d in differences.values())
        else:
            assert finding["verdict"] == "within seed spread"
        assert f"**{finding['verdict']}**: {claim}: {finding['difference']:+.3f}" in table


FINE_TUNED = {  # folder -> the phases it trains after starting from the noisy model
    "finetune-clean": ["clean"],
    "finetune-mixed": ["mixed"],
    "pretrain": ["cleaner", "joint"],
    "joint": ["joint"],
    "finetune-clean-short": ["clean"],
}


def test_modes_other_than_noisy_start_from_the_noisy_model(bench: Path):
    noisy_path = bench / "seed-0" / "noisy" / "checkpoint.pt"
    noisy = torch.load(noisy_path, weights_only=False)
    assert [p for p, _ in noisy["phases"]] == ["noisy"] and noisy["start"]["init"] is None
    noisy_digest = weights_digest(noisy["state_dict"])
    for folder, phases in FINE_TUNED.items():
        ckpt = torch.load(bench / "seed-0" / folder / "checkpoint.pt", weights_only=False)
        assert [p for p, _ in ckpt["phases"]] == phases  # the noisy phase was not retrained
        # the first phase started from the noisy model's exact weights, and training moved them
        for start in (ckpt["start"], report(bench, folder)["start"]):
            assert start["init"] == str(noisy_path)
            assert start["weights_sha256"] == noisy_digest
        assert weights_digest(ckpt["state_dict"]) != noisy_digest
    # the noisy phase never trains the cleaner, nor do the baselines: it is still the noisy
    # model's, whose last layer is zero (it returns y)
    cleaner = {k: v for k, v in noisy["state_dict"].items() if k.startswith("cleaner.")}
    assert torch.count_nonzero(cleaner["cleaner.out.weight"]) == 0
    for folder in ("finetune-clean", "finetune-mixed", "finetune-clean-short"):
        state = torch.load(bench / "seed-0" / folder / "checkpoint.pt", weights_only=False)
        assert all(torch.equal(state["state_dict"][k], v) for k, v in cleaner.items())
    joint = torch.load(bench / "seed-0/joint/checkpoint.pt", weights_only=False)
    assert torch.count_nonzero(joint["state_dict"]["cleaner.out.weight"]) > 0


def test_evaluate_scores_the_bundle_like_training_did(bench: Path, tiny_data: Path, capsys):
    run = bench / "seed-0" / "joint"
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run / "bundle"),
                "--data",
                str(tiny_data),
                "--json",
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    onnx_metrics = json.loads(capsys.readouterr().out)
    torch_metrics = json.loads((run / "report.json").read_text())["metrics"]
    assert onnx_metrics["AP_all"] == pytest.approx(torch_metrics["AP_all"], abs=0.05)
    assert onnx_metrics["MAP"] == pytest.approx(torch_metrics["MAP"], abs=0.05)
    for key in ("issue_wrong_ap", "issue_wrong_f1", "issue_missing_f1"):
        assert onnx_metrics[key] == pytest.approx(torch_metrics[key], abs=0.05), key
    # a handful of missing labels among 60 test images: float noise between the runtimes
    # reorders near-equal scores, and one swap moves that AP by tenths
    assert onnx_metrics["issue_missing_ap"] == pytest.approx(
        torch_metrics["issue_missing_ap"], abs=1
    )
    assert onnx_metrics["provider"] == "CPUExecutionProvider"


def test_same_seed_same_model_and_resume_continues_exactly(
    tiny_data: Path, tmp_path: Path, monkeypatch
):
    args = ["train", "--data", str(tiny_data), "--mode", "noisy", "--no-export", *FAST_TRAIN]
    args += ["--device", "cpu"]  # bit-for-bit equality is a CPU promise (CUDA kernels vary)
    args[args.index("--epochs") + 1] = "2"
    assert main([*args, "--out", str(tmp_path / "a")]) == 0

    import labelclean.training.run as run

    real_save = run.save_checkpoint
    calls = []

    def crash_after_first_epoch(*a, **kw):
        real_save(*a, **kw)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(run, "save_checkpoint", crash_after_first_epoch)
    assert main([*args, "--out", str(tmp_path / "b")]) == 130  # interrupted after epoch 1
    monkeypatch.setattr(run, "save_checkpoint", real_save)
    ckpt = tmp_path / "b" / "checkpoint.pt"
    assert torch.load(ckpt, weights_only=False)["epoch"] == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--resume", str(ckpt)]) == 0
    a, b = (
        torch.load(tmp_path / r / "checkpoint.pt", weights_only=False)["state_dict"]
        for r in ("a", "b")
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_undecodable_images_are_skipped_and_listed(tiny_data: Path, tmp_path: Path):
    data = copy_data(tiny_data, tmp_path / "data")
    images = sorted((data / "images").iterdir())
    images[0].write_bytes(b"not a png")
    images[1].write_bytes(images[1].read_bytes()[:40])  # truncated
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "run"),
                "--mode",
                "noisy",
                *FAST_TRAIN,
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    skipped = {s["image_id"] for s in report["skipped_images"]}
    assert skipped == {images[0].stem, images[1].stem}


def test_mode_needing_verified_images_fails_clearly_without_them(tiny_data, tmp_path, capsys):
    data = copy_data(tiny_data, tmp_path / "data")
    (data / "train-annotations-human-imagelabels.csv").write_text(
        "ImageID,Source,LabelName,Confidence\n"
    )
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST_TRAIN])
    err = capsys.readouterr().err
    assert code == 2
    assert "mode 'joint' needs human-verified training images" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["missing-dir", "unknown-label", "bad-row"])
def test_bad_data_is_a_one_line_error(case, tiny_data, tmp_path, capsys):
    data = tmp_path / "nowhere"
    if case != "missing-dir":
        data = copy_data(tiny_data, tmp_path / "data")
        path = data / "test-annotations-machine-imagelabels.csv"
        extra = "x,machine,/m/unicorn,0.5\n" if case == "unknown-label" else "x,machine\n"
        path.write_text(path.read_text() + extra)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST_TRAIN])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    expected = {
        "missing-dir": "class-descriptions.csv: file not found",
        "unknown-label": "not in the class file: /m/unicorn",
        "bad-row": "test-annotations-machine-imagelabels.csv:",
    }[case]
    assert expected in err
    assert not (tmp_path / "run" / "bundle").exists()


def test_classes_written_to_bundle_match_data(bench: Path, tiny_data: Path):
    with (tiny_data / "class-descriptions.csv").open(newline="") as fh:
        rows = [r for r in csv.reader(fh)][1:]
    bundle = load_bundle(bench / "seed-0" / "joint" / "bundle")
    assert [(c.id, c.name) for c in bundle.classes] == [tuple(r) for r in rows]


def test_export_command_rebuilds_the_bundle_from_a_checkpoint(bench: Path, tiny_data, tmp_path):
    run = bench / "seed-0" / "joint"
    out = tmp_path / "exported"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(run / "checkpoint.pt"),
                "--out",
                str(out),
                "--data",
                str(tiny_data),
            ]
        )
        == 0
    )
    exported, trained = load_bundle(out), load_bundle(run / "bundle")
    assert exported.thresholds_cleaned == trained.thresholds_cleaned
    assert exported.classes == trained.classes and exported.mode == "joint"
    # the fitted issue score travels in the checkpoint: both graphs give the same outputs
    from labelclean.model.runtime import OnnxModel

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 1, 28, 28)).astype(np.float32)
    y = (rng.random((6, len(trained.classes))) > 0.7).astype(np.float32)
    for a, b in zip(OnnxModel(exported, device="cpu").run(x, y),
                    OnnxModel(trained, device="cpu").run(x, y), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, atol=1e-6)


def collisions(values: np.ndarray) -> int:
    """Pairs whose score another pair already has: len(values) - distinct values."""
    return len(values) - len(np.unique(values))


@pytest.fixture(scope="module")
def l1_run(bench: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The joint model with the paper's cleaner (--cleaner-loss l1), from the bench's noisy one."""
    out = tmp_path_factory.mktemp("l1") / "joint"
    noisy = bench / "seed-0" / "noisy" / "checkpoint.pt"
    args = ["train", "--data", str(tiny_data), "--out", str(out), "--mode", "joint"]
    assert main([*args, "--init", str(noisy), "--cleaner-loss", "l1", *FAST_TRAIN]) == 0
    return out


def test_issue_scores_rank_without_the_ties_of_c(l1_run: Path):
    """Clipping puts many cleaned scores at exactly 0 or 1; the issue score reads the cleaner
    before the clip and the classifier's logit (and its relatives' in the hierarchy), and was
    fitted on V's cross-fitted reads."""
    arrays = dict(np.load(l1_run / "test_predictions.npz"))
    known = arrays["known"]
    c, issue = arrays["cleaned"][known], arrays["issue"][known]
    assert collisions(c) > 100 and collisions(issue) <= collisions(c) / 20
    assert ((issue >= 0) & (issue <= 1)).all()
    fit = json.loads((l1_run / "report.json").read_text())["issue_fit"]
    assert fit["listed"]["fitted"] and fit["features"] == list(FEATURES)
    state = torch.load(l1_run / "checkpoint.pt", weights_only=False)
    assert state["model_config"]["cleaner_loss"] == "l1"  # --cleaner-loss over the default


def test_bce_cleaner_is_the_default_and_keeps_a_ranking(bench: Path, l1_run: Path):
    """The bench ran with the default cleaner loss, bce: c = sigmoid(logit(y) + g), carried into
    the checkpoint and the bundle, strictly inside (0, 1) and with few ties."""
    run = bench / "seed-0" / "joint"
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["model_config"]["cleaner_loss"] == "bce"
    assert load_bundle(run / "bundle").model_config["cleaner_loss"] == "bce"
    bce = dict(np.load(run / "test_predictions.npz"))
    l1 = dict(np.load(l1_run / "test_predictions.npz"))
    known = bce["known"]
    # (what ties remain: classes whose cleaner rows got identical updates on this tiny V)
    assert collisions(bce["cleaned"][known]) < collisions(l1["cleaned"][known]) / 5
    assert collisions(bce["issue"][known]) <= collisions(l1["cleaned"][known]) / 10
    assert ((bce["cleaned"] > 0) & (bce["cleaned"] < 1)).all()  # a sigmoid, never clipped


def test_export_of_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    code = main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)])
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_runs_report_their_label_issue_figures(bench: Path, capsys):
    """report.json and the bundle carry the run's own issue-score and machine-confidence AP and
    F1 on wrong and missing labels, recomputed here from its test predictions: the issue
    score's flags are the decision's (a listed label left out of the final set, an unlisted one
    put in), and the final sets are the decision rule's at the bundle's thresholds, then the
    hierarchy."""
    from labelclean.training.decision_fit import final_sets
    from labelclean.training.issue_detection import detection_metrics

    run = bench / "seed-0" / "joint"
    arrays = dict(np.load(run / "test_predictions.npz"))
    noisy, human, known = arrays["noisy"], arrays["human"], arrays["known"]
    issue = arrays["issue"]
    bundle = load_bundle(run / "bundle")
    final = final_sets(noisy, issue, bundle.decision.remove, bundle.decision.add,
                       bundle.ancestor_columns)  # fmt: skip
    np.testing.assert_array_equal(arrays["final"], final)
    flags = np.where(noisy > 0, ~final, final)
    want = detection_metrics(issue, flags, noisy, human, known)
    machine = np.where(noisy > 0, 1 - noisy, noisy)  # flags: y under its calibrated threshold
    cut = np.asarray(report(bench, "joint")["thresholds"]["noisy"])
    flags = np.where(noisy > 0, noisy < cut, noisy >= cut)
    want_machine = detection_metrics(machine, flags, noisy, human, known)
    measured = report(bench, "joint")["metrics"]
    for kind in ("wrong", "missing"):
        for metric in ("ap", "f1"):
            assert measured[f"issue_{kind}_{metric}"] == pytest.approx(want[kind][metric])
            got = measured[f"machine_{kind}_{metric}"]
            assert got == pytest.approx(want_machine[kind][metric])
    assert load_bundle(run / "bundle").metrics["issue_wrong_ap"] == measured["issue_wrong_ap"]
