"""The options the training commands share (train, benchmark; evaluate reads the data ones) and
what they become: the data files, the model and training configurations, the data loaded.

The schedule's defaults are TrainConfig's (training.schedule, torch-free): they are read when a
training command's parser is used, never when the top-level parser is built."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import DEVICES, NEEDS_TORCH, torch_missing

MODES = ("noisy", "finetune-clean", "finetune-mixed", "pretrain", "joint")

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


def data_args(p: argparse.ArgumentParser) -> None:
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


def train_args(p: argparse.ArgumentParser) -> None:
    """The schedule and model options of train and benchmark, with TrainConfig's defaults."""
    if torch_missing():  # the command cannot run: its help says so instead of its options
        p.description = f"{p.description} This command {NEEDS_TORCH}."
        return
    from labelclean.training.schedule import TrainConfig

    _schedule_args(p.add_argument_group("schedule"), TrainConfig())
    _model_args(p.add_argument_group("model"))


def _schedule_args(g: argparse._ArgumentGroup, d) -> None:
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
        choices=DEVICES,
        default="auto",
        help="auto = CUDA when available (bf16 autocast, channels_last)",
    )


def _model_args(m: argparse._ArgumentGroup) -> None:
    from labelclean.model.config import DEFAULT_CLEANER_LOSS

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


def data_files(args: argparse.Namespace):
    """The data files the --data options name."""
    from labelclean.model.openimages import DataFiles

    return DataFiles(
        args.data,
        args.classes_file,
        args.train_machine,
        args.train_human,
        args.test_machine,
        args.test_human,
        args.images,
        args.hierarchy,
        tuple(str(Path(x).resolve()) if Path(x).exists() else x for x in args.human_extra),
    )


def configs(args: argparse.Namespace, num_classes: int):
    """(ModelConfig, TrainConfig) from the schedule and model options."""
    from labelclean.model.backbones import default_input_spec
    from labelclean.model.config import ModelConfig
    from labelclean.training.schedule import TrainConfig

    spec = default_input_spec(args.backbone)
    if args.image_size:
        spec.height = spec.width = args.image_size
    model_cfg = ModelConfig(
        num_classes=num_classes,
        backbone=args.backbone,
        feature_dim=args.feature_dim,
        cleaner_embed_dim=args.cleaner_dim,
        width=args.width,
        noisy_labels=args.noisy_labels,
        cleaner_loss=args.cleaner_loss,
        label_floor=args.label_floor,
        input=spec,
    )
    train_cfg = TrainConfig(
        mode=getattr(args, "mode", "joint"),
        seed=args.seed,
        device=args.device,
        loss_reduction=args.loss_reduction,
        folds=args.folds,
        min_precision=args.min_precision,
        rule=args.rule,
        **{field: getattr(args, field) for field in SCHEDULE_FLAGS},
    )
    return model_cfg, train_cfg


def load_data(args: argparse.Namespace, model_cfg, seed: int):
    """The data set read and its images decoded, what was skipped said on stderr."""
    from labelclean.training.batches import prepare_data

    data = prepare_data(
        data_files(args),
        model_cfg.input,
        seed=seed,
        noisy_labels=model_cfg.noisy_labels,
        ignore_unknown=args.ignore_unknown_labels,
        progress=not args.quiet,
    )
    if data.failures:
        print(
            f"skipped {len(data.failures)} image(s) that could not be read, e.g. "
            f"{data.failures[0].image_id}: {data.failures[0].reason} (all listed in the "
            "report)",
            file=sys.stderr,
        )
    if data.unknown_labels:
        print(
            f"ignored {sum(data.unknown_labels.values())} annotation row(s) with "
            f"{len(data.unknown_labels)} label(s) not in the class file",
            file=sys.stderr,
        )
    return data
