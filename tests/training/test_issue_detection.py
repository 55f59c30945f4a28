"""Label-issue detection in the benchmark: metrics by hand, the scorers' direction, cleanlab, the
findings and ``labelclean benchmark-report`` on small benchmark folders written here (no
training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from labelclean.training.benchmark import DETECTION_CLAIMS, detection_claim, findings, summarize
from labelclean.training.issue_detection import (
    cleanlab_flags,
    cleanlab_issue,
    detect_seed,
    detection_metrics,
    flags_at_thresholds,
    issue_from_probability,
    tied_pairs,
)
from labelclean.training.metrics import ap_all, cleaning_report, mean_ap

from labelclean.cli import main


def column(*values) -> np.ndarray:
    return np.array(values, dtype=np.float64)[:, None]


def test_metrics_by_hand_leave_out_unknown_pairs():
    # five listed known pairs, a listed unknown one, four unlisted known, an unlisted unknown
    noisy = column(0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0, 0, 0, 0, 0)
    human = column(0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1)
    known = column(1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0).astype(bool)
    issue = column(0.9, 0.8, 0.3, 0.2, 0.1, 0.95, 0.7, 0.6, 0.05, 0.05, 0.99)
    flags = column(1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1).astype(bool)
    out = detection_metrics(issue, flags, noisy, human, known)
    # wrong: ranked 0.9 (wrong), 0.8, 0.3 (wrong), 0.2, 0.1 -> AP (1/1 + 2/3) / 2
    assert out["wrong"] == {
        "ap": pytest.approx(100 * (1 + 2 / 3) / 2),
        "precision": 0.5, "recall": 0.5, "f1": 0.5,
        "positives": 2, "pairs": 5, "flagged": 2, "tied": 0,
    }  # fmt: skip
    # missing: 0.7, 0.6 (missing), then 0.05 twice (one missing): precision 1/2 at recall 1/2,
    # 2/4 at recall 1 -> AP 0.5; the one flag is wrong: F1 2 * 0 / (1 + 2)
    assert out["missing"] == {
        "ap": pytest.approx(50.0),
        "precision": 0.0, "recall": 0.0, "f1": 0.0,
        "positives": 2, "pairs": 4, "flagged": 1, "tied": 2,
    }  # fmt: skip


def test_nothing_flagged_has_no_precision_and_zero_f1():
    noisy, human = column(0.9, 0.2, 0), column(0, 1, 1)
    out = detection_metrics(column(1, 0, 1), np.zeros((3, 1), bool), noisy, human, noisy >= 0)
    assert np.isnan(out["wrong"]["precision"]) and out["wrong"]["recall"] == 0
    assert out["wrong"]["f1"] == 0 and out["missing"]["f1"] == 0
    none = detection_metrics(column(1, 0, 1), noisy > 0, noisy, column(1, 1, 0), noisy >= 0)
    assert np.isnan(none["wrong"]["ap"]) and none["wrong"]["positives"] == 0


def random_labels(seed: int, n: int = 200, d: int = 4):
    """Human labels, machine labels with 15% of pairs flipped, and the probability of a model
    that mostly sees the truth."""
    rng = np.random.default_rng(seed)
    human = (rng.random((n, d)) < 0.4).astype(np.float32)
    listed = (human > 0) ^ (rng.random((n, d)) < 0.15)
    noisy = np.where(listed, rng.uniform(0.2, 1.0, (n, d)), 0).astype(np.float32)
    probs = np.clip(0.8 * human + 0.1 + rng.normal(0, 0.1, (n, d)), 0.01, 0.99)
    return noisy, human, probs


def test_a_perfect_score_ranks_first_and_its_reverse_last():
    noisy, human, _ = random_labels(0)
    known = np.ones_like(human, bool)
    perfect = detection_metrics(
        issue_from_probability(human, noisy),
        flags_at_thresholds(human, noisy, [0.5] * 4),
        noisy, human, known,
    )  # fmt: skip
    reverse = detection_metrics(
        issue_from_probability(1 - human, noisy), np.zeros_like(known), noisy, human, known
    )
    for kind in ("wrong", "missing"):
        assert perfect[kind]["ap"] == pytest.approx(100)
        assert perfect[kind]["f1"] == 1 and perfect[kind]["positives"] > 5
        # the reverse ranks every issue last: AP at the positive rate or below
        rate = 100 * perfect[kind]["positives"] / perfect[kind]["pairs"]
        assert reverse[kind]["ap"] <= rate + 1e-9


def test_flags_cut_listed_below_and_unlisted_at_or_above_the_threshold():
    noisy = np.array([[0.9, 0.9, 0, 0]])
    p = np.array([[0.39, 0.4, 0.39, 0.4]])
    assert flags_at_thresholds(p, noisy, [0.4] * 4).tolist() == [[True, False, False, True]]
    np.testing.assert_allclose(issue_from_probability(p, noisy), [[0.61, 0.6, 0.39, 0.4]])


def test_cleanlab_scores_and_flags_on_a_small_real_input():
    import cleanlab.filter

    noisy, human, probs = random_labels(1)
    listed = noisy > 0
    issue = cleanlab_issue(noisy, probs)
    # self-confidence: the probability of the given label
    np.testing.assert_allclose(issue, 1 - np.where(listed, probs, 1 - probs))
    flags = cleanlab_flags(noisy, probs)
    for k in range(noisy.shape[1]):  # one binary find_label_issues per class
        binary = np.stack([1 - probs[:, k], probs[:, k]], axis=1)
        direct = cleanlab.filter.find_label_issues(listed[:, k].astype(int), binary, n_jobs=1)
        np.testing.assert_array_equal(flags[:, k], direct)
    truly = listed != (human > 0)
    assert flags.sum() > 10 and (flags & truly).sum() / flags.sum() > 0.8
    # a class listed on every image gets no flag instead of cleanlab's error
    noisy[:, 0] = 0.5
    again = cleanlab_flags(noisy, probs)
    assert not again[:, 0].any() and (again[:, 1:] == flags[:, 1:]).all()


def test_tied_pairs_counts_every_value_shared():
    assert tied_pairs(np.array([0, 0, 1, 0.5, 1, 0.2])) == 4
    assert tied_pairs(np.array([0.1, 0.2])) == 0


def stats(*values: float) -> dict:
    return {
        "mean": float(np.mean(values)),
        "spread": max(values) - min(values),
        "per_seed": {str(s): v for s, v in enumerate(values)},
    }


def test_findings_compare_the_issue_score_with_the_other_scorers():
    seeds = [0, 1]

    def scorer(wrong_ap, missing_ap, wrong_f1, missing_f1):
        return {
            "wrong": {"ap": stats(*wrong_ap), "f1": stats(*wrong_f1)},
            "missing": {"ap": stats(*missing_ap), "f1": stats(*missing_f1)},
        }

    detection = {
        "scorers": {
            "machine": scorer((80, 81), (2, 2), (0.7, 0.7), (0, 0)),
            "cleanlab-thresholds": scorer((82, 82), (45, 46), (0.6, 0.6), (0.3, 0.3)),
            "cleanlab-mixed-thresholds": scorer((85, 95), (30, 31), (0.7, 0.7), (0.5, 0.5)),
            "cleaned/joint": scorer((77, 78), (30, 34), (0.75, 0.76), (0.2, 0.2)),
            "issue/joint": scorer((90, 91), (40, 41), (0.8, 0.8), (0.3, 0.4)),
            "cleaned/pretrain": scorer((77, 78), (30, 34), (0.75, 0.76), (0.2, 0.2)),
        }
    }
    out = findings({}, {}, seeds, detection)
    verdicts = {
        (kind, theirs, metric): out[detection_claim("joint", kind, claim)]["verdict"]
        for claim, (_, theirs, metric) in DETECTION_CLAIMS.items()
        for kind in ("wrong", "missing")
    }
    assert verdicts == {
        ("wrong", "machine", "ap"): "better",
        ("missing", "machine", "ap"): "better",
        ("wrong", "cleanlab-thresholds", "ap"): "better",
        ("missing", "cleanlab-thresholds", "ap"): "worse",
        ("wrong", "cleaned", "ap"): "better",
        ("missing", "cleaned", "ap"): "better",
        ("wrong", "cleanlab-mixed-thresholds", "ap"): "within seed spread",
        ("missing", "cleanlab-mixed-thresholds", "ap"): "better",
        ("wrong", "machine", "f1"): "better",
        ("missing", "machine", "f1"): "better",
        ("wrong", "cleanlab-mixed-thresholds", "f1"): "better",
        ("missing", "cleanlab-mixed-thresholds", "f1"): "worse",
    }
    assert len(out) == 12  # joint only: pretrain has no issue score
    wrong = out[
        "joint, test images, label issues: wrong labels (AP): issue score vs machine confidences"
    ]
    assert wrong["difference"] == 10 and wrong["per_seed_difference"] == {"0": 10, "1": 10}


# ---- small benchmark folders, as `labelclean benchmark` writes them ---------------------------

D = 4


def write_run(run: Path, mode: str, seed: int, arrays: dict, loss: str) -> dict:
    run.mkdir(parents=True)
    np.savez_compressed(run / "test_predictions.npz", **arrays)
    noisy, human, known = arrays["noisy"], arrays["human"], arrays["known"]
    metrics = {
        "AP_all": 100 * ap_all(arrays["scores"], human, known),
        "MAP": 100 * mean_ap(arrays["scores"], human, known),
    }
    if mode != "noisy":
        report = cleaning_report(noisy, arrays["cleaned"], human, known, [0.5] * D, [0.5] * D)
        metrics.update({f"cleaner_{k}": v for k, v in report.items()})
    thresholds = {"cleaned": [0.5] * D, "scores": [0.5] * D, "noisy": [0.4] * D}
    (run / "report.json").write_text(
        json.dumps({"mode": mode, "seed": seed, "metrics": metrics, "thresholds": thresholds})
    )
    (run / "bundle").mkdir()
    (run / "bundle" / "bundle.json").write_text(
        json.dumps({"model_config": {"cleaner_loss": loss}})
    )
    return {"metrics": metrics, "seconds": 1.0}


def fake_benchmark(root: Path, loss: str, *, issue: str) -> Path:
    """Seeds 0 and 1 of noisy and joint; the joint issue score is ``perfect``, ``random`` or
    ``absent`` (a run from before it)."""
    runs: dict = {"noisy": {}, "joint": {}}
    for seed in (0, 1):
        noisy, human, probs = random_labels(10 + seed)
        rng = np.random.default_rng(seed)
        known = rng.random(human.shape) < 0.9
        shared = {"noisy": noisy, "human": human, "known": known}
        runs["noisy"][seed] = write_run(
            root / f"seed-{seed}" / "noisy", "noisy", seed,
            {**shared, "scores": probs, "cleaned": noisy}, loss,
        )  # fmt: skip
        cleaned = np.round(np.clip(probs + rng.normal(0, 0.2, probs.shape), 0, 1), 1)
        joint = {**shared, "scores": probs, "cleaned": cleaned}
        if issue == "perfect":
            # ranks every issue first, with distinct values
            noise = rng.uniform(0, 0.04, human.shape)
            joint["issue"] = issue_from_probability(human, noisy) * 0.9 + 0.05 + noise
        elif issue == "random":
            joint["issue"] = rng.random(human.shape)
        runs["joint"][seed] = write_run(root / f"seed-{seed}" / "joint", "joint", seed, joint, loss)
    (root / "results.json").write_text(json.dumps(summarize(runs, [0, 1])))
    return root


def test_detect_seed_reads_the_runs(tmp_path: Path):
    bench = fake_benchmark(tmp_path / "b", "bce", issue="perfect")
    result = detect_seed(bench / "seed-0")
    assert set(result["scorers"]) == {
        "machine", "cleanlab-thresholds", "cleanlab-find-issues", "cleaned/joint", "issue/joint",
    }  # fmt: skip
    assert result["scorers"]["issue/joint"]["wrong"]["ap"] == pytest.approx(100)
    assert result["scorers"]["issue/joint"]["missing"]["f1"] == 1.0
    assert result["cleaner_loss"] == {"joint": "bce"} and result["notes"] == []
    with np.load(bench / "seed-0" / "joint" / "test_predictions.npz") as npz:
        known, cleaned = npz["known"], npz["cleaned"]
    assert result["ties"]["joint"]["cleaned"] == tied_pairs(cleaned[known]) > 100
    assert result["ties"]["joint"]["issue"] < result["ties"]["joint"]["cleaned"]
    # the machine's flags are its confidences under their threshold (0.4 here)
    with np.load(bench / "seed-0" / "noisy" / "test_predictions.npz") as npz:
        noisy, known = npz["noisy"], npz["known"]
    expected = int(((noisy > 0) & (noisy < 0.4) & known).sum())
    assert result["scorers"]["machine"]["wrong"]["flagged"] == expected > 0


def test_report_command_compares_two_cleaner_losses(tmp_path: Path, capsys):
    bce = fake_benchmark(tmp_path / "bce", "bce", issue="perfect")
    l1 = fake_benchmark(tmp_path / "l1", "l1", issue="random")
    out = tmp_path / "report"
    assert main(["benchmark-report", "--runs", f"bce={bce}", "--runs", f"l1={l1}",
                 "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "results.json").read_text())
    markdown = (out / "results.md").read_text()
    assert capsys.readouterr().out.strip() == markdown.strip()
    assert list(report["modes"]) == ["noisy", "joint (bce)", "joint (l1)"]
    claim = report["findings"]["joint (bce) vs joint (l1) on wrong labels, AP of the issue score"]
    for seed in ("0", "1"):
        a = detect_seed(bce / f"seed-{seed}")["scorers"]["issue/joint"]["wrong"]["ap"]
        b = detect_seed(l1 / f"seed-{seed}")["scorers"]["issue/joint"]["wrong"]["ap"]
        assert claim["per_seed_difference"][seed] == pytest.approx(a - b)
    assert claim["verdict"] == "better"
    for what in ("AP_all", "MAP", "missing labels, AP of the issue score",
                 "wrong labels, F1 of the issue score's flags"):  # fmt: skip
        assert f"joint (bce) vs joint (l1) on {what}" in report["findings"]
    # within each folder, ours against its baselines and the other scorers
    assert "joint (l1) vs noisy on MAP" in report["findings"]
    key = "joint (bce), test images, label issues: missing labels (AP): issue score vs machine "
    assert report["findings"][key + "confidences"]["verdict"] == "better"
    assert "## bce" in markdown and "## l1" in markdown
    assert markdown.count("| issue score (joint) | issue >= 0.5 | 100.00 ± 0.00 |") == 1
    assert "cleaner loss in its bundles: bce" in markdown and "Note:" not in markdown


def test_report_of_a_folder_from_before_the_issue_score_says_so(tmp_path: Path):
    from labelclean.training.benchmark_report import build_report, render_report

    old = fake_benchmark(tmp_path / "old", "l1", issue="absent")
    report = build_report({"old": old})
    detection = report["per_run"]["old"]["detection"]
    assert "issue/joint" not in detection["scorers"] and "cleaned/joint" in detection["scorers"]
    assert len(detection["notes"]) == 2 and "has no issue score" in detection["notes"][0]
    assert not any("issue score vs" in claim for claim in report["findings"])
    markdown = render_report(report)
    assert "has no issue score" in markdown and "| cleaned labels c (joint) |" in markdown


def test_report_command_refuses_an_unfinished_folder(tmp_path: Path, capsys):
    (tmp_path / "running" / "seed-0").mkdir(parents=True)
    args = ["benchmark-report", "--runs", f"x={tmp_path / 'running'}", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert "no results.json" in capsys.readouterr().err
