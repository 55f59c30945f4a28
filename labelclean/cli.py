"""The ``labelclean`` command. Each subcommand imports only what it needs, so serving commands
never load PyTorch.

    labelclean demo-data --out DATA                 # a multi-label set from Fashion-MNIST
    labelclean train --data DATA --out RUN          # joint model -> RUN/bundle
    labelclean benchmark --data DATA --out BENCH    # the paper's table, five modes
    labelclean benchmark-report --runs bce=BENCH1 --runs l1=BENCH2 --out DIR   # no training
    labelclean export --checkpoint RUN/checkpoint.pt --out BUNDLE
    labelclean evaluate --model BUNDLE --data DATA
    labelclean serve --model BUNDLE [--host H --port P --workers N]   # HTTP service, no torch
    labelclean clean --model BUNDLE --images URI --labels URI --out URI  # bulk, no torch
    labelclean worker --model BUNDLE [--burst]      # bulk jobs from Redis (POST /jobs), no torch
    labelclean review --model BUNDLE --data DATA --out DIR   # ranked label-issue queue, no torch
    labelclean import-reviews --label-studio EXPORT.json --model BUNDLE --out REVIEWS.csv
    labelclean suggest-verify --model BUNDLE --data DATA --budget 100 --out VERIFY.csv  # no torch
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from . import __version__

MODES = ("noisy", "finetune-clean", "finetune-mixed", "pretrain", "joint")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="data folder in Open Images layout (see README, 'Data format')",
    )
    for flag, default, what in [
        ("--classes-file", "class-descriptions.csv", "class list (LabelName,DisplayName)"),
        ("--train-machine", "train-annotations-machine-imagelabels.csv", "noisy machine labels"),
        ("--train-human", "train-annotations-human-imagelabels.csv", "human verifications (V)"),
        ("--test-machine", "test-annotations-machine-imagelabels.csv", "test machine labels"),
        ("--test-human", "test-annotations-human-imagelabels.csv", "test human labels"),
        ("--images", "images", "image folder under --data, or s3://bucket/prefix"),
    ]:
        p.add_argument(flag, default=default, help=f"{what} (default: {default})")
    p.add_argument(
        "--hierarchy",
        help="class hierarchy under --data (or an absolute path): Open Images' hierarchy JSON "
        "or parent,child CSV, carried into the bundle so that cleaning keeps parents of kept "
        "labels (default: hierarchy.json or hierarchy.csv under --data when present)",
    )
    p.add_argument(
        "--human-extra", action="append", default=[], metavar="CSV",
        help="more human labels of training images, e.g. reviews from `labelclean "
        "import-reviews` (under --data, or a path; repeatable): read after --train-human, a "
        "later file's (ImageID, LabelName) wins; their images join V",
    )  # fmt: skip
    p.add_argument(
        "--ignore-unknown-labels",
        action="store_true",
        help="skip annotation rows whose label is not in the class file "
        "(default: stop with an error listing them)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# TrainConfig fields set by a flag of the same name, with the flag's help.
SCHEDULE_FLAGS = {
    "epochs": "passes over T with noisy labels, the first phase",
    "finetune_epochs": "passes over T in the joint / mixed phase",
    "clean_epochs": "finetune-clean: passes over V; by default as many steps as the joint phase "
    "takes, so every fine-tuning mode gets the same step budget",
    "cleaner_epochs": "pretrain: passes over V training the cleaner alone",
    "batch_size": "images per step, T and V together",
    "lr": "learning rate of the first phase",
    "finetune_lr": "learning rate of later phases",
    "cleaner_lr": "learning rate of the cleaner head",
}


NEEDS_TORCH = (
    "needs PyTorch, which this install lacks (the serving install): pip install 'labelclean[train]'"
)


def torch_missing() -> bool:
    """Whether PyTorch cannot be imported here (the serving image has none)."""
    try:
        return importlib.util.find_spec("torch") is None
    except (ImportError, ValueError):
        return True


def _train_args(p: argparse.ArgumentParser) -> None:
    if torch_missing():  # the defaults below live in training code, which imports torch
        p.description = f"{p.description} This command {NEEDS_TORCH}."
        return
    from labelclean.model.config import DEFAULT_CLEANER_LOSS
    from labelclean.training.loop import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("schedule")
    for field, what in SCHEDULE_FLAGS.items():
        default = getattr(d, field)
        g.add_argument(
            "--" + field.replace("_", "-"),
            type=int if default is None else type(default),
            default=default,
            help=what if default is None else f"{what} (default {default})",
        )
    g.add_argument(
        "--loss-reduction",
        choices=["batch", "per-set"],
        default=d.loss_reduction,
        help="what each loss term's sum over images is divided by: batch (default, the "
        "paper's) = the batch size for both, so 0.1 * L_clean and 1.0 * L_classify weigh every "
        "image alike; per-set = L_clean by the batch's V images only (about 10x its batch "
        "weight at 9:1), L_classify by the batch size (the behaviour before this flag)",
    )
    g.add_argument(
        "--folds",
        type=int,
        default=d.folds,
        help=f"folds of V for cross-fitting (default {d.folds}): one network per fold trains "
        "without it, and the issue score and the decision thresholds are fitted on every V "
        "image as read by a network that never saw it; 1 = hold out a fifth of V instead "
        "(faster, fits on fewer images)",
    )
    g.add_argument(
        "--min-precision",
        type=float,
        help="choose the decision thresholds for the most true labels at this precision of the "
        "final label sets on V (e.g. 0.9) instead of their best F1 (the default)",
    )
    g.add_argument(
        "--rule",
        choices=["issue", "cleaned"],
        default=d.rule,
        help="the bundle's decision rule: issue (default) = remove a listed label whose "
        "issue score reaches its remove threshold, add an unlisted one whose issue score "
        "reaches its add threshold; cleaned = the paper's verdicts on the cleaned score c",
    )
    g.add_argument("--seed", type=int, default=d.seed, help="makes a CPU run repeatable")
    g.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto = CUDA when available (bf16 autocast, channels_last)",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--backbone",
        default="small_cnn",
        help="small_cnn (default, trains in minutes on a CPU) or a torchvision "
        "architecture: resnet18, resnet50, inception_v3, efficientnet_b0, ...",
    )
    m.add_argument(
        "--backbone-weights",
        type=Path,
        help="local state-dict file for the backbone (never downloaded)",
    )
    m.add_argument("--feature-dim", type=int, default=128, help="small_cnn feature size f(I)")
    m.add_argument("--cleaner-dim", type=int, default=16, help="cleaner embedding size")
    m.add_argument(
        "--width", type=int, default=16, help="small_cnn channels of the first block (default 16)"
    )
    m.add_argument(
        "--noisy-labels",
        choices=["confidence", "binary"],
        default="confidence",
        help="how the cleaner reads machine labels: their confidence (default), or 1 "
        "for every listed label (for annotators without scores)",
    )
    m.add_argument(
        "--cleaner-loss",
        choices=["bce", "l1"],
        default=DEFAULT_CLEANER_LOSS,
        help="the cleaner's output and loss: bce = c = sigmoid(logit(y) + g), binary "
        "cross-entropy on its logits (keeps a ranking: few ties); l1 = the paper's "
        f"c = clip(y + g, 0, 1) with an L1 loss (default {DEFAULT_CLEANER_LOSS}; "
        "benchmarks/RESULTS.md compares them)",
    )
    m.add_argument(
        "--label-floor",
        type=float,
        default=1e-4,
        help="machine labels are clamped to [floor, 1 - floor] before the logit the bce "
        "cleaner and the issue score read (default 1e-4)",
    )
    m.add_argument(
        "--image-size",
        type=int,
        help="input size in pixels (default: the backbone's own; 28 for small_cnn)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelclean",
        description="Find wrong and missing image labels with a small human-verified set "
        "(Veit et al., CVPR 2017), and serve the model over HTTP.",
    )
    parser.add_argument("--version", action="version", version=f"labelclean {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo-data",
        help="build the Fashion-MNIST multi-label demo data set",
        description="Write a multi-label data set in Open Images layout from "
        "Fashion-MNIST mosaics, noisy labels from a machine annotator.",
    )
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

    p = sub.add_parser(
        "train",
        help="train one mode and export its bundle",
        description="Train the joint cleaner + classifier (or a baseline). "
        "Writes RUN/checkpoint.pt, RUN/report.json, RUN/bundle/.",
    )
    _data_args(p)
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
    _train_args(p)

    p = sub.add_parser(
        "benchmark",
        help="train the five modes and write the paper's table",
        description="Train the noisy model once per seed, start the other four "
        "modes from it, and write results.md, results.json and "
        "a precision-recall plot.",
    )
    _data_args(p)
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    _train_args(p)

    p = sub.add_parser(
        "benchmark-report",
        help="one report from finished benchmark folders, e.g. two cleaner losses (no training)",
        description="Read folders written by `labelclean benchmark` (results.json and the runs' "
        "test predictions), compute label-issue detection from them, and write DIR/results.md "
        "and DIR/results.json: the classifier table (baselines from the first folder), each "
        "folder's cleaned-label and detection tables, and the findings, including each of our "
        "modes across folders (joint (bce) vs joint (l1)).",
    )
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

    p = sub.add_parser(
        "export",
        help="export a checkpoint to a model bundle",
        description="Export to ONNX, check ONNX Runtime against PyTorch on a "
        "real batch, and write the bundle folder.",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument(
        "--data",
        type=Path,
        help="data folder whose test images give the parity batch (default: random inputs)",
    )

    p = sub.add_parser("evaluate", help="score a bundle with ONNX Runtime on the test set")
    _data_args(p)
    p.add_argument("--model", type=Path, required=True, help="bundle folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    for name, (help_text, options, add_args) in TORCH_FREE.items():
        add_args(sub.add_parser(name, help=help_text, **options))
    return parser


SERVE_HELP = "serve a bundle over HTTP: /classify, /clean (no torch)"
SERVE_DESCRIPTION = (
    "Start the inference service (uvicorn). Every setting can also come from a "
    "LABELCLEAN_* environment variable (README, 'Configuration'); these options "
    "override them."
)


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="bundle folder (default: $LABELCLEAN_MODEL)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 in containers)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument(
        "--workers", type=int,
        help="HTTP worker processes (default 1); they share one inference process and model",
    )  # fmt: skip
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="auto (default) = CUDA when available; cuda = not ready without it",
    )


CLEAN_HELP = "clean every image under a URI prefix with its noisy labels CSV, offline (no torch)"
CLEAN_PARSER = dict(
    description="Clean the noisy labels of every <ImageID>.<ext> directly under --images (a "
    "folder, file:///path, s3://bucket/prefix/, or another installed fsspec protocol) with its "
    "rows of --labels, an Open Images style CSV (ImageID,Source,LabelName,Confidence), through "
    "the same cleaning code as POST /clean and the job workers, in this process (no Redis). "
    "Writes to --out: cleaned.csv (ImageID,Source,LabelName,Confidence,Verdict,IssueScore,"
    "Cleaned,Reason: Source labelclean, Confidence the probability that the label is on the "
    "image, Verdict kept/removed/added by the bundle's decision rule, IssueScore P(wrong) of a "
    "given label or P(missing) of an added one, Cleaned the paper's c, Reason set when the "
    "class hierarchy decided), errors.csv "
    "(ImageID,Reason: images that could not be cleaned, CSV rows without an image file) and "
    "summary.json (per class labels kept, removed, added, share removed). Resumable: work is "
    "stored chunk by chunk under --out/_work, and rerunning the same command after an "
    "interruption skips the stored chunks; after success _work is removed (--keep-work keeps "
    "it, and a rerun is then a no-op). Memory stays flat however many images: the plan sorts "
    "the listing and the CSV in bounded runs under the temporary folder (TMPDIR).",
    epilog="S3: credentials and endpoint from the usual AWS settings (AWS_ENDPOINT_URL for "
    "MinIO/Ceph, or LABELCLEAN_S3_ENDPOINT_URL). Exit status 2 with one line naming the "
    "option for bad inputs.",
)


def _clean_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="bundle folder")
    p.add_argument("--images", required=True, help="URI prefix holding <ImageID>.<ext> images")
    p.add_argument("--labels", required=True, help="URI of the noisy labels CSV")
    p.add_argument("--out", required=True, help="URI prefix (folder) to write the results to")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default) = CUDA when available")  # fmt: skip
    p.add_argument("--chunk-size", type=int,
                   help="images per stored chunk, the unit of resuming (default 1000)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="images per ONNX run (default 32)")
    p.add_argument("--keep-work", action="store_true",
                   help="keep --out/_work (plan, chunk results) after success")  # fmt: skip
    p.add_argument(
        "--threshold",
        help="the decision's threshold: one number in [0, 1] for every class, or a JSON object "
        '{"label id": number} overriding those classes: the cut on the issue score for removing '
        "and adding (the cleaned score for a bundle of the paper's rule) (default: the "
        "bundle's thresholds)",
    )
    p.add_argument(
        "--min-precision",
        type=float,
        help="use the bundle's thresholds for at least this precision of the final label sets "
        "(the lowest level at or above it; GET /model or bundle.json lists them)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


WORKER_HELP = "do bulk cleaning jobs (POST /jobs) from the Redis queue (no torch)"
WORKER_DESCRIPTION = (
    "Take chunks of bulk jobs from Redis (LABELCLEAN_REDIS_URL) and clean them with the bundle, "
    "loaded once. Run any number, on any hosts that share Redis and the buckets. Settings come "
    "from LABELCLEAN_* variables (job_*, worker_batch_size, file_roots, s3_endpoint_url, "
    "device). SIGTERM finishes the chunk in hand, then exits."
)


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="bundle folder (default: $LABELCLEAN_MODEL)")
    p.add_argument(
        "--burst", action="store_true",
        help="exit once the queue is empty and no chunk is pending with any worker",
    )  # fmt: skip
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="auto (default) = CUDA when available"
    )


REVIEW_HELP = "rank every (image, label) pair by how likely it is wrong or missing (no torch)"
REVIEW_PARSER = dict(
    description="Clean every machine-labelled image of a data split (--data in Open Images "
    "layout: its {split}-annotations-machine-imagelabels.csv and images/<ImageID>.<ext>) "
    "through the same cleaning code as POST /clean, then rank every (image, label) pair, listed "
    "or not, by its issue score: the probability that a listed label is wrong or that an "
    "unlisted one is missing. Highest first; equal scores by ImageID, then label id. Writes to "
    "--out: review.csv (Rank,ImageID,LabelName,DisplayName,Listed,Confidence,IssueScore,"
    "Verdict,Reason: Listed yes/no, Confidence the machine's, Verdict the decision as POST "
    "/clean returns it, kept/removed for a listed label and added/none for an unlisted one, "
    "Reason /clean's; removed and added pairs are listed whatever --min-issue), errors.csv "
    "(ImageID,Reason: images that could not be read or decoded), and static HTML pages of the "
    "top pairs with thumbnails, the image's machine labels and the proposed change "
    "(index.html, page-2.html, ..., thumbs/; open index.html in a browser, no server needed).",
    epilog="Label Studio (--format label-studio): create a project whose labeling config is "
    "label-studio-config.xml and import label-studio-tasks.json; each task shows the image, its "
    "machine labels and the proposed change, with the final label set (kept and added) "
    "preselected and scored by the model's confidence in it; label-studio-view.json is a Data "
    "Manager tab that sorts and filters max_issue as a number. Images are referenced as "
    "--image-url + file name; the default, /data/local-files/?d=<absolute image folder>/, "
    "needs Label Studio started with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
    "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/ and a Local Storage on the image folder; images "
    "on s3:// keep their URI. Exit status 2 with one line naming the option for bad inputs.",
)


def _queue_input_args(p: argparse.ArgumentParser) -> None:
    """What review and suggest-verify read beside the bundle: the class list, the images."""
    p.add_argument(
        "--classes-file", default="class-descriptions.csv",
        help="class list under --data, checked against the bundle's classes when present "
        "(default: class-descriptions.csv)",
    )  # fmt: skip
    p.add_argument(
        "--images", default="images",
        help="image folder under --data, or s3://bucket/prefix (default: images)",
    )  # fmt: skip
    p.add_argument(
        "--ignore-unknown-labels", action="store_true",
        help="skip machine label rows whose label the bundle does not know "
        "(default: stop with an error listing them)",
    )  # fmt: skip


def _review_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="bundle folder")
    p.add_argument(
        "--data", type=Path, required=True,
        help="data folder in Open Images layout (see README, 'Data format')",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="folder to write the queue to")
    p.add_argument(
        "--split", choices=["train", "test"], default="train",
        help="whose machine labels to review: train (default) or test",
    )  # fmt: skip
    p.add_argument(
        "--machine",
        help="machine labels CSV under --data, ImageID,Source,LabelName,Confidence (default: "
        "{split}-annotations-machine-imagelabels.csv)",
    )
    _queue_input_args(p)
    p.add_argument(
        "--min-issue", type=float, default=0.01,
        help="leave out of review.csv the pairs whose issue score is below this (default 0.01: "
        "every pair with at least a 1%% chance of being wrong or missing; 0 writes every pair, "
        "images x classes rows); removed and added pairs are always listed",
    )  # fmt: skip
    p.add_argument(
        "--top", type=int, default=1000,
        help="pairs shown in the HTML pages, the top of review.csv (default 1000)",
    )  # fmt: skip
    p.add_argument("--per-page", type=int, default=50, help="pairs per HTML page (default 50)")
    p.add_argument(
        "--format", choices=["csv", "label-studio"], default="csv",
        help="csv (default): review.csv and the HTML pages; label-studio: also "
        "label-studio-tasks.json (one task per image in review.csv, highest issue first, "
        "with the final label set, kept and added, as predictions), label-studio-config.xml "
        "and label-studio-view.json (a Data Manager tab that sorts and filters max_issue as a "
        "number)",
    )  # fmt: skip
    p.add_argument(
        "--image-url",
        help="Label Studio tasks: URL prefix each image's file name is appended to (default: "
        "/data/local-files/?d=<absolute image folder>/ for a local folder, the folder's URI "
        "for s3://); e.g. http://host/images/",
    )
    p.add_argument(
        "--order", choices=["issue", "suggest"], default="issue",
        help="issue (default): pairs by issue score, highest first; suggest: images in the "
        "order `labelclean suggest-verify` would choose them for verification (their expected "
        "label changes, classes taking turns, rarest first), each image's pairs by issue "
        "score; the Label Studio tasks follow it, each with its verify_rank (verified images "
        "are not left out here: review reads no human labels, suggest-verify does)",
    )  # fmt: skip
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default) = CUDA when available")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="images per ONNX run (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


SUGGEST_HELP = "choose the training images whose verification should help most (no torch)"
SUGGEST_PARSER = dict(
    description="Clean every unverified training image of --data (its machine labels, less the "
    "images of the human labels files, which are V already) with the bundle, through the same "
    "code as POST /clean, and choose --budget images for people to verify next. An image is "
    "worth the expected number of the model's decisions on it a reviewer would overturn: the "
    "sum over classes of P(the decision is wrong), the issue score for a label the decision "
    "keeps as the machine gave it, 1 - the issue score for one it removes or adds. Classes take "
    "turns (--quota of the picks, rarest class first: fewest expected positives) taking their "
    "most uncertain image, so rare classes are covered; the other picks take the images of "
    "highest expected changes. Ties by ImageID: the same model and data give the same list, and "
    "a bigger budget only adds images. Writes a CSV (Rank,ImageID,ExpectedChanges,PickedFor,"
    "Classes: PickedFor `class NAME` or `expected changes`; Classes the classes whose decision "
    "is most likely wrong, with that probability) to --out, or to standard output without it, "
    "and a summary (expected changes against a random pick's, per class coverage).",
    epilog="Verify the chosen images (e.g. `labelclean review --order suggest --format "
    "label-studio`), turn the reviews into labels (`labelclean import-reviews`), and retrain "
    "with them: `labelclean train --human-extra REVIEWS.csv --init RUN/checkpoint.pt`. Exit "
    "status 2 with one line naming the option for bad inputs.",
)


def _suggest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="bundle folder")
    p.add_argument(
        "--data", type=Path, required=True,
        help="data folder in Open Images layout (see README, 'Data format')",
    )  # fmt: skip
    p.add_argument("--budget", type=int, required=True, help="how many images to choose")
    p.add_argument("--out", type=Path, help="CSV to write (default: standard output)")
    p.add_argument(
        "--quota", type=float, default=0.5,
        help="share of the picks where classes take turns, rarest first, each taking its most "
        "uncertain image (default 0.5; 0 = by expected changes only)",
    )  # fmt: skip
    p.add_argument(
        "--train-human", default="train-annotations-human-imagelabels.csv",
        help="human labels under --data: their images are V already and are not chosen "
        "(default: train-annotations-human-imagelabels.csv, if present)",
    )  # fmt: skip
    p.add_argument(
        "--human-extra", action="append", default=[], metavar="CSV",
        help="more human labels (e.g. `labelclean import-reviews` output; under --data or a "
        "path; repeatable): their images are not chosen either",
    )  # fmt: skip
    p.add_argument(
        "--train-machine", default="train-annotations-machine-imagelabels.csv",
        help="machine labels under --data, the images to choose from "
        "(default: train-annotations-machine-imagelabels.csv)",
    )  # fmt: skip
    _queue_input_args(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default) = CUDA when available")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="images per ONNX run (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


IMPORT_REVIEWS_HELP = "reviews from Label Studio -> a human-verified labels CSV (no torch)"
IMPORT_REVIEWS_PARSER = dict(
    description="Write the reviews of a Label Studio project as one Open Images human-labels "
    "CSV (ImageID,Source,LabelName,Confidence): for each reviewed image, every choice the "
    "reviewer saw, 1 when ticked, 0 when not (a verified negative). From a JSON export "
    "(--label-studio): each task's latest edited annotation; skipped ones verify nothing. "
    "From the store the service's /label-studio/webhook keeps (--reviews, "
    "LABELCLEAN_LABEL_STUDIO_REVIEWS): its labels/*.csv joined. The ImageID is the task data's "
    "image_id (`labelclean review` writes it), else the image file's name without extension.",
)


def _import_reviews_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--label-studio", type=Path, metavar="EXPORT.json",
        help="a Label Studio JSON export of the project (Export, JSON)",
    )  # fmt: skip
    source.add_argument(
        "--reviews", metavar="URI",
        help="the webhook's store: LABELCLEAN_LABEL_STUDIO_REVIEWS (folder, file:// or s3://)",
    )  # fmt: skip
    p.add_argument(
        "--model", type=Path, help="bundle folder whose classes the choices name (--label-studio)"
    )
    p.add_argument(
        "--config", type=Path,
        help="the project's labeling config (default: the one `labelclean review` writes for "
        "--model, a choice per class)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="the CSV to write")


TRAIN_WORKER_HELP = "run the retraining jobs Label Studio's Start Training queues (needs torch)"
TRAIN_WORKER_DESCRIPTION = (
    'Take the retraining jobs that Label Studio\'s "Start Training" queues in Redis (the '
    "service's /label-studio/webhook, with LABELCLEAN_TRAINING_DATA set) and run them one at a "
    "time: the reviews (LABELCLEAN_LABEL_STUDIO_REVIEWS) joined to V, `labelclean train "
    "--human-extra reviews.csv --init MODEL` continued from the model at LABELCLEAN_MODEL, into "
    "LABELCLEAN_TRAINING_RUNS/<job id>/run (log: train.log beside it). The new bundle is not "
    "deployed: point LABELCLEAN_MODEL at it and POST /model/reload. A worker that dies loses "
    "nothing (another begins its job again); SIGTERM stops the training and queues it again."
)


def _train_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="the bundle in service (default: $LABELCLEAN_MODEL)")
    p.add_argument("--data", type=Path, help="training data (default: $LABELCLEAN_TRAINING_DATA)")
    p.add_argument("--runs", type=Path, help="runs folder (default: $LABELCLEAN_TRAINING_RUNS)")
    p.add_argument("--burst", action="store_true", help="exit once no job is waiting")


# Subcommands that never load PyTorch: name -> (help, parser options, arguments). _parse builds
# their parser alone, since build_parser() reads training defaults, which imports torch.
TORCH_FREE = {
    "serve": (SERVE_HELP, {"description": SERVE_DESCRIPTION}, _serve_args),
    "clean": (CLEAN_HELP, CLEAN_PARSER, _clean_args),
    "worker": (WORKER_HELP, {"description": WORKER_DESCRIPTION}, _worker_args),
    "train-worker": (
        TRAIN_WORKER_HELP,
        {"description": TRAIN_WORKER_DESCRIPTION},
        _train_worker_args,
    ),
    "review": (REVIEW_HELP, REVIEW_PARSER, _review_args),
    "import-reviews": (IMPORT_REVIEWS_HELP, IMPORT_REVIEWS_PARSER, _import_reviews_args),
    "suggest-verify": (SUGGEST_HELP, SUGGEST_PARSER, _suggest_args),
}


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommands of ``parser``."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name for action in subparsers for name in action.choices}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line parsed. ``--help``, an unknown command and the torch-free commands work
    without PyTorch; a command that needs it stops with one line saying so (exit 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TORCH_FREE:
        _, options, add_args = TORCH_FREE[argv[0]]
        p = argparse.ArgumentParser(prog=f"labelclean {argv[0]}", **options)
        add_args(p)
        return p.parse_args(argv[1:], argparse.Namespace(command=argv[0]))
    parser = build_parser()
    if argv and argv[0] in _commands(parser) and torch_missing():
        parser.exit(2, f"labelclean {argv[0]}: error: {NEEDS_TORCH}\n")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from labelclean import commands

    handler = getattr(commands, args.command.replace("-", "_"))
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except commands.USER_ERRORS as exc:
        print(f"labelclean {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
