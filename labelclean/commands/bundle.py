"""Model bundles from training: ``export`` (a checkpoint to a bundle, checked against PyTorch)
and ``evaluate`` (a bundle scored with ONNX Runtime on the test set)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import DEVICES, Command
from .train_options import data_args, data_files


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument(
        "--data",
        type=Path,
        help="data folder whose test images give the parity batch (default: random inputs)",
    )


def export(args: argparse.Namespace) -> int:
    import numpy as np

    from labelclean.model.decision import Decision
    from labelclean.model.export import export_bundle
    from labelclean.model.hierarchy import Hierarchy
    from labelclean.training.checkpoint import load_checkpoint, rebuild

    state = load_checkpoint(args.checkpoint)
    net, classes = rebuild(state)
    spec = net.config.input
    thresholds = state.get("thresholds") or {
        "cleaned": [0.5] * len(classes),
        "scores": [0.5] * len(classes),
    }
    if state.get("decision"):
        decision = Decision.from_dict(state["decision"], thresholds["cleaned"], len(classes))
    else:
        decision = Decision.paper(thresholds["cleaned"])
        print(
            f"{args.checkpoint} has no decision thresholds on the issue score (a run from before "
            "them, or unfinished): the bundle decides by the paper's rule on the cleaned score",
            file=sys.stderr,
        )
    if args.data is not None:
        images, noisy = _parity_batch(args, spec, len(classes))
    else:
        rng = np.random.default_rng(0)
        images = rng.standard_normal((8, spec.channels, spec.height, spec.width), np.float32)
        noisy = (rng.random((8, len(classes))) > 0.7).astype(np.float32)
    bundle = export_bundle(
        net,
        args.out,
        classes,
        sample=(images, noisy),
        thresholds_cleaned=thresholds["cleaned"],
        thresholds_scores=thresholds["scores"],
        decision=decision,
        mode=state.get("train_config", {}).get("mode", ""),
        metrics=state.get("metrics", {}),
        hierarchy=Hierarchy.build(state["hierarchy"], classes) if state.get("hierarchy") else None,
    )
    print(
        f"bundle written to {bundle.path} (ONNX parity max abs diff "
        f"{bundle.metrics['onnx_parity_max_abs_diff']:.2g})"
    )
    return 0


def _parity_batch(args: argparse.Namespace, spec, num_classes: int):
    from labelclean.model.openimages import DataFiles, load_dataset
    from labelclean.model.preprocess import normalize
    from labelclean.training.images import load_images, open_source

    files = DataFiles(args.data)
    test = load_dataset(files).test
    test = test.subset(list(range(min(32, len(test)))))
    pixels, ok, _ = load_images(open_source(files.images_uri), test.image_ids, spec, progress=False)
    return normalize(pixels[ok], spec), test.noisy[ok]


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    p.add_argument("--model", type=Path, required=True, help="bundle folder")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def evaluate(args: argparse.Namespace) -> int:
    from labelclean.training.bundle_eval import evaluate_bundle

    metrics = evaluate_bundle(
        args.model,
        data_files(args),
        device=args.device,
        ignore_unknown=args.ignore_unknown_labels,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            print(f"{key:32s} {value:.4f}" if isinstance(value, float) else f"{key:32s} {value}")
    return 0


EXPORT = Command(
    "export",
    help="export a checkpoint to a model bundle",
    description="Export to ONNX, check ONNX Runtime against PyTorch on a "
    "real batch, and write the bundle folder.",
    add_args=_export_args,
    run=export,
)
EVALUATE = Command(
    "evaluate",
    help="score a bundle with ONNX Runtime on the test set",
    add_args=_evaluate_args,
    run=evaluate,
)
