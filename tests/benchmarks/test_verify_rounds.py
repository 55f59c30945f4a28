"""benchmarks/verify_rounds.py's bookkeeping, without training: the machine's errors in the
chosen images, the round at which a strategy reaches a figure, and the report over seeds, one
of them still under way."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "verify_rounds.py"


def load():
    spec = importlib.util.spec_from_file_location("verify_rounds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(ap: list[float], mp: list[float]) -> list[dict]:
    return [
        {"round": r, "verified": 500 + 100 * r, "added": 100 * r, "AP_all": a, "MAP": m,
         "final_f1": 0.9, "machine_errors": 200 + r}
        for r, (a, m) in enumerate(zip(ap, mp, strict=True))
    ]  # fmt: skip


def test_machine_errors_count_pairs_where_the_listing_differs_from_the_truth():
    vr = load()
    truth = {"a": np.array([True, False, True]), "b": np.array([False, False, False])}
    listed = {("a", "/x"), ("a", "/y"), ("b", "/z")}  # a: y wrong, z missing; b: z wrong
    assert vr.machine_errors(["a", "b"], truth, ["/x", "/y", "/z"], listed) == 3
    assert vr.machine_errors([], truth, ["/x", "/y", "/z"], listed) == 0


def test_report_claims_fewer_images_only_per_seed_and_skips_a_seed_under_way():
    vr = load()
    results = {
        "strategies": ["suggest", "random", "control"], "train_args": ["--folds", "1"],
        "seeds": {
            "0": {"suggest": rows([97.0, 97.1, 97.2], [89.0, 89.1, 89.3]),
                  "random": rows([97.0, 97.05, 97.1], [89.0, 89.2, 89.3]),
                  "control": rows([97.0, 96.9, 96.8], [89.0, 89.0, 89.0])},
            "1": {"suggest": rows([97.0, 97.0, 97.1], [89.0, 89.1, 89.2]),
                  "random": rows([97.0, 97.05, 97.1], [89.0, 89.05, 89.1])},  # control not begun
        },
    }  # fmt: skip
    assert vr.rounds_to_reach(results["seeds"]["0"]["suggest"][1:], 97.1) == 1
    assert vr.rounds_to_reach(results["seeds"]["0"]["suggest"][1:], 97.3) is None
    text = vr.render(results)
    assert text.startswith("Seeds 0;")  # seed 1 has no control rounds yet
    assert "| 2 | 700 | 97.20 | 89.30 | 90.00 | 97.10 | 89.30 |" in text
    assert "AP_all: suggest needs fewer verified images than random for random's final AP_all " \
           "in 1 of 1 seeds" in text  # fmt: skip
    assert "MAP: suggest needs fewer verified images than random for random's final MAP in 0 " \
           "of 1 seeds" in text  # fmt: skip
    results["strategies"] = ["suggest", "random"]
    text = vr.render(results)
    assert text.startswith("Seeds 0, 1;") and "in 1 of 2 seeds" in text
