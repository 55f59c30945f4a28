"""Choose the issue head's features, its shrinkage and the decision thresholds' pooling on V's
validation reads alone (never the test split).

    python benchmarks/select_defaults.py --runs bce=RUN_SEED0,RUN_SEED1 --runs l1=RUN_L1_0,RUN_L1_1

Each RUN is a finished ``labelclean train`` folder: RUN/crossfit/oof.npz holds the out-of-sample
reads of every V image (training.crossfit) and RUN/bundle its hierarchy. For every variant the
head is fitted again on them (training.issue_fit: its own predictions are out-of-fold) and the
thresholds are chosen on all folds but one and applied to the one left out
(training.validation), so each figure is an estimate on images no fit saw. Printed: the F1 of
the final label sets (the issue rule, then the hierarchy), the issue score's AP on wrong and
missing labels, and, once per group of runs, the machine's confidences at their thresholds and
the paper's rule on c. Mean over the runs of a group, then each run.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from labelclean.model.bundle import load_bundle
from labelclean.model.issue_head import FEATURES, OWN
from labelclean.training.crossfit import OutOfFold
from labelclean.training.decision_fit import MIN_CLASS_OUTCOMES
from labelclean.training.issue_fit import LAMBDAS, fit_issue
from labelclean.training.validation import validate

HEADS = {
    "own evidence, pooled": (FEATURES[:OWN], (math.inf,)),
    "own evidence, per-class terms": (FEATURES[:OWN], LAMBDAS),
    "own + hierarchy, pooled": (FEATURES, (math.inf,)),
    "own + hierarchy, per-class terms": (FEATURES, LAMBDAS),
}
THRESHOLDS = {
    "pooled thresholds": math.inf,
    **{f"per class at {m} of each outcome": m for m in (30, 100, 300)},
}


def fitted(run: Path, features, lambdas):
    oof = OutOfFold.load(run / "crossfit" / "oof.npz")
    ancestors = load_bundle(run / "bundle").ancestor_columns
    return oof, ancestors, fit_issue(oof, features=features, lambdas=lambdas)


def figures(oof, ancestors, fit, min_outcomes: float) -> dict[str, float]:
    v = validate(oof, fit.oof_issue, ancestors, min_class_outcomes=min_outcomes)
    return {
        "final F1": v["final"]["f1"],
        "wrong AP": v["issue"]["wrong"]["ap"],
        "missing AP": v["issue"]["missing"]["ap"],
        "wrong F1": v["issue"]["wrong"]["f1"],
        "missing F1": v["issue"]["missing"]["f1"],
        "machine thresholded F1": v["machine_thresholded"]["f1"],
        "paper rule F1": v["paper_rule"]["f1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", action="append", required=True,
        help="NAME=RUN[,RUN...]: finished training runs (one per seed) of one setting",
    )  # fmt: skip
    parser.add_argument(
        "--default-only", action="store_true",
        help="only the defaults (all features, per-class terms, per-class thresholds at "
        "MIN_CLASS_OUTCOMES): to compare settings that need training (cleaner loss, label floor)",
    )  # fmt: skip
    args = parser.parse_args()
    heads = {"own + hierarchy, per-class terms": HEADS["own + hierarchy, per-class terms"]}
    cut_options = {f"per class at {MIN_CLASS_OUTCOMES} of each outcome": MIN_CLASS_OUTCOMES}
    if not args.default_only:
        heads, cut_options = HEADS, THRESHOLDS
    columns = ["final F1", "wrong AP", "missing AP", "wrong F1", "missing F1"]
    print("| runs | head | thresholds | " + " | ".join(columns) + " | per run (final F1) |")
    print("|---" * (len(columns) + 4) + "|")
    for spec in args.runs:
        name, _, dirs = spec.partition("=")
        runs = [Path(d) for d in dirs.split(",")]
        baseline = None
        for head, (features, lambdas) in heads.items():
            fits = [fitted(r, features, lambdas) for r in runs]
            for cuts, min_outcomes in cut_options.items():
                per_run = [figures(*f, min_outcomes) for f in fits]
                mean = {k: float(np.mean([f[k] for f in per_run])) for k in per_run[0]}
                baseline = mean
                cells = [f"{mean[c]:.4f}" if "F1" in c else f"{mean[c]:.2f}" for c in columns]
                seeds = " / ".join(f"{f['final F1']:.4f}" for f in per_run)
                print(f"| {name} | {head} | {cuts} | " + " | ".join(cells) + f" | {seeds} |")
        assert baseline is not None
        print(
            f"| {name} | machine confidences at per-class thresholds | | "
            f"{baseline['machine thresholded F1']:.4f} | | | | | |"
        )
        print(f"| {name} | the paper's rule on c | | {baseline['paper rule F1']:.4f} | | | | | |")


if __name__ == "__main__":
    main()
