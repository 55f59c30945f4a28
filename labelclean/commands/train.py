"""Training: ``demo-data`` (a data set to try it on), ``train`` (one mode, its bundle),
``benchmark`` (the paper's table) and ``benchmark-report`` (a report from finished benchmarks).
Each handler imports the training code it runs; nothing here does at import time."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Command
from .train_options import MODES, configs, data_args, data_files, load_data, train_args


def _demo_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument(
        "--source",
        type=Path,
        default=Path("/usr/share/datasets/fashion-mnist"),
        help="Fashion-MNIST folder (the *-ubyte.gz files)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=20000, help="size of T (default 20000)")
    p.add_argument("--verified", type=int, default=500, help="size of V (default 500)")
    p.add_argument("--test", type=int, default=5000, help="test images (default 5000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def demo_data(args: argparse.Namespace) -> int:
    from labelclean.training.demo_data import build_demo_data

    build_demo_data(
        args.out,
        source=args.source,
        seed=args.seed,
        n_train=args.train,
        n_verified=args.verified,
        n_test=args.test,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(f"data set written to {args.out}")
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="joint",
        help="joint (default), pretrain, or a baseline: noisy, finetune-clean, finetune-mixed",
    )
    p.add_argument(
        "--init", type=Path,
        help="start from this checkpoint instead of training the noisy phase: a noisy-phase "
        "one, or a finished run's RUN/checkpoint.pt (or its bundle folder RUN/bundle) to "
        "continue from that model (e.g. with --human-extra reviews)",
    )  # fmt: skip
    p.add_argument(
        "--resume",
        type=Path,
        help="continue an interrupted run from its checkpoint, with the phases it recorded "
        "(--init and --backbone-weights may be left out); repeat the run's schedule and model "
        "flags: one that differs from the checkpoint stops the run naming the difference",
    )
    p.add_argument("--no-export", action="store_true", help="skip writing RUN/bundle")
    train_args(p)


def train(args: argparse.Namespace) -> int:
    from labelclean.model.openimages import read_classes
    from labelclean.training.checkpoint import init_checkpoint
    from labelclean.training.run import train as run_training

    if args.init is not None:  # a run's bundle folder stands for its checkpoint
        args.init = init_checkpoint(args.init)
    files = data_files(args)
    model_cfg, train_cfg = configs(args, len(read_classes(files.path(files.classes))))
    data = load_data(args, model_cfg, train_cfg.seed)
    report = run_training(
        data,
        args.out,
        train_cfg,
        model_cfg,
        init=args.init,
        resume=args.resume,
        backbone_weights=args.backbone_weights,
        export=not args.no_export,
        progress=not args.quiet,
    )
    m = report["metrics"]
    print(f"{train_cfg.mode}: classifier on test AP_all {m['AP_all']:.2f}  MAP {m['MAP']:.2f}")
    if train_cfg.mode in ("joint", "pretrain"):
        print(
            f"cleaned test labels: F1 {m['cleaner_f1_cleaned']:.3f} (machine labels as listed "
            f"{m['cleaner_f1_noisy']:.3f}, machine confidences at calibrated thresholds "
            f"{m['cleaner_f1_noisy_thresholded']:.3f}); AP_all {m['cleaner_ap_all_cleaned']:.2f}, "
            f"ties ordered by the confidence {m['cleaner_ap_all_cleaned_tiebreak']:.2f} "
            f"(machine confidences {m['cleaner_ap_all_noisy']:.2f})"
        )
    print(
        "label issues on test (issue score vs machine confidences): wrong labels AP "
        f"{m['issue_wrong_ap']:.2f} vs {m['machine_wrong_ap']:.2f}, F1 {m['issue_wrong_f1']:.3f} "
        f"vs {m['machine_wrong_f1']:.3f}; missing labels AP {m['issue_missing_ap']:.2f} vs "
        f"{m['machine_missing_ap']:.2f}, F1 {m['issue_missing_f1']:.3f} vs "
        f"{m['machine_missing_f1']:.3f}"
    )
    print(
        f"run written to {args.out}"
        + (f"; bundle at {report['bundle']}" if "bundle" in report else "")
    )
    return 0


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    train_args(p)


def benchmark(args: argparse.Namespace) -> int:
    from labelclean.model.openimages import read_classes
    from labelclean.training.benchmark import run_benchmark

    files = data_files(args)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    model_cfg, train_cfg = configs(args, len(read_classes(files.path(files.classes))))
    data = load_data(args, model_cfg, seed=0)
    results = run_benchmark(
        data, args.out, train_cfg, model_cfg, seeds=seeds, modes=modes, progress=not args.quiet
    )
    print((args.out / "results.md").read_text())
    return 0 if results else 1


def _benchmark_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a benchmark folder and its name in the report (repeat; a bare DIR is named after "
        "its folder); the first is compared against the others",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for results.md and .json"
    )


def benchmark_report(args: argparse.Namespace) -> int:
    from labelclean.training.benchmark_report import parse_runs, write_report

    write_report(parse_runs(args.runs), args.out)
    print((args.out / "results.md").read_text())
    return 0


DEMO_DATA = Command(
    "demo-data",
    help="build the Fashion-MNIST multi-label demo data set",
    description="Write a multi-label data set in Open Images layout from "
    "Fashion-MNIST mosaics, noisy labels from a machine annotator.",
    add_args=_demo_data_args,
    run=demo_data,
)
TRAIN = Command(
    "train",
    help="train one mode and export its bundle",
    description="Train the joint cleaner + classifier (or a baseline). "
    "Writes RUN/checkpoint.pt, RUN/report.json, RUN/bundle/.",
    add_args=_train_args,
    run=train,
)
BENCHMARK = Command(
    "benchmark",
    help="train the five modes and write the paper's table",
    description="Train the noisy model once per seed, start the other four "
    "modes from it, and write results.md, results.json and "
    "a precision-recall plot.",
    add_args=_benchmark_args,
    run=benchmark,
)
BENCHMARK_REPORT = Command(
    "benchmark-report",
    help="one report from finished benchmark folders, e.g. two cleaner losses (no training)",
    description="Read folders written by `labelclean benchmark` (results.json and the runs' "
    "test predictions), compute label-issue detection from them, and write DIR/results.md "
    "and DIR/results.json: the classifier table (baselines from the first folder), each "
    "folder's cleaned-label and detection tables, and the findings, including each of our "
    "modes across folders (joint (bce) vs joint (l1)).",
    add_args=_benchmark_report_args,
    run=benchmark_report,
)
