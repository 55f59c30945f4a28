"""The benchmark's findings: ours against every baseline on both metrics, with the seed spread."""

from labelclean.training.benchmark import BASELINES, compare, findings


def stats(*values: float) -> dict:
    return {
        "mean": sum(values) / len(values),
        "spread": max(values) - min(values),
        "per_seed": {str(s): v for s, v in enumerate(values)},
    }


def test_better_only_when_every_seed_agrees_and_the_gap_exceeds_the_spread():
    seeds = [0, 1]
    assert compare(stats(96.0, 96.2), stats(95.0, 95.1), seeds)["verdict"] == "better"
    assert compare(stats(95.0, 95.1), stats(96.0, 96.2), seeds)["verdict"] == "worse"
    # one seed each way: no verdict, whatever the mean says
    mixed = compare(stats(97.0, 95.0), stats(95.5, 95.2), seeds)
    assert mixed["verdict"] == "within seed spread" and mixed["difference"] > 0
    assert mixed["per_seed_difference"] == {"0": 1.5, "1": -0.20000000000000284}
    # every seed agrees, but the gap (0.15) is inside the seed spread (±0.5)
    assert compare(stats(96.1, 97.2), stats(96.0, 97.0), seeds)["verdict"] == "within seed spread"


def test_every_baseline_on_both_metrics_for_each_of_our_modes():
    seeds = [0, 1]
    modes = {
        m: {"AP_all": stats(90.0 + i, 90.5 + i), "MAP": stats(80.0 - i, 80.2 - i)}
        for i, m in enumerate(["noisy", "finetune-clean", "finetune-mixed", "joint", "pretrain"])
    }
    out = findings(modes, {}, seeds)
    expected = {
        f"{ours} vs {base} on {metric}"
        for ours in ("joint", "pretrain")
        for base in BASELINES
        for metric in ("AP_all", "MAP")
    }
    assert set(out) == expected
    assert out["joint vs noisy on AP_all"]["verdict"] == "better"
    assert out["joint vs noisy on MAP"]["verdict"] == "worse"
    assert out["pretrain vs finetune-mixed on AP_all"]["difference"] == 2.0
