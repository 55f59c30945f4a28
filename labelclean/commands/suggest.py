"""``suggest-verify``: which unverified training images people should verify next, those whose
verification should help most (no torch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import DEVICES, Command
from .review import clean_queue, queue_input_args

DESCRIPTION = (
    "Clean every unverified training image of --data (its machine labels, less the "
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
    "and a summary (expected changes against a random pick's, per class coverage)."
)

EPILOG = (
    "Verify the chosen images (e.g. `labelclean review --order suggest --format "
    "label-studio`), turn the reviews into labels (`labelclean import-reviews`), and retrain "
    "with them: `labelclean train --human-extra REVIEWS.csv --init RUN/checkpoint.pt`. Exit "
    "status 2 with one line naming the option for bad inputs."
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
    queue_input_args(p)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto (default) = CUDA when available")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="images per ONNX run (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def suggest_verify(args: argparse.Namespace) -> int:
    import numpy as np

    from labelclean.model.bundle import load_bundle
    from labelclean.service.review import queue as rq
    from labelclean.service.review import suggest as sv
    from labelclean.storage import Storage

    if args.budget < 1:
        raise ValueError(f"--budget: must be at least 1, got {args.budget}")
    if not 0.0 <= args.quota <= 1.0:
        raise ValueError(f"--quota: must be between 0 and 1, got {args.quota}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: must be at least 1, got {args.batch_size}")
    try:
        bundle = load_bundle(args.model)
    except ValueError as exc:
        raise ValueError(f"--model: {exc}") from None
    storage = Storage.local()  # S3 endpoint: LABELCLEAN_S3_ENDPOINT_URL or AWS_ENDPOINT_URL
    try:
        inputs = rq.read_inputs(
            bundle, args.data, classes_file=args.classes_file, machine_file=args.train_machine,
            images=args.images, ignore_unknown=args.ignore_unknown_labels, storage=storage,
        )  # fmt: skip
    except rq.ReviewError as exc:  # review's --machine is this command's --train-machine
        if exc.flag != "--machine":
            raise
        raise ValueError(f"--train-machine{str(exc).removeprefix('--machine')}") from None
    human = [("--train-human", args.data / args.train_human)]
    if args.train_human == "train-annotations-human-imagelabels.csv" and not human[0][1].exists():
        human = []  # the default file is optional: no V yet
    human += [("--human-extra", args.data / extra) for extra in args.human_extra]
    verified = sv.verified_images(human, bundle.index, ignore_unknown=args.ignore_unknown_labels)
    if args.out is not None:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.touch()
        except OSError as exc:
            raise ValueError(f"--out: {args.out} is not writable ({exc.strerror or exc})") from None
    queue = clean_queue(bundle, inputs, storage, args)
    unverified = np.asarray([image not in verified for image in queue.image_ids], dtype=bool)
    chosen = sv.suggest(
        queue.issue, np.isin(queue.verdicts, (rq.REMOVED, rq.ADDED)), budget=args.budget,
        listed=queue.noisy > 0, image_ids=queue.image_ids, eligible=queue.done & unverified,
        quota=args.quota,
    )  # fmt: skip
    names = [c.name for c in bundle.classes]
    report = sys.stderr if args.out is None else sys.stdout
    if args.out is None:
        sv.write_csv(sys.stdout, chosen, queue.image_ids, names)
    else:
        with args.out.open("w", newline="", encoding="utf-8") as fh:
            sv.write_csv(fh, chosen, queue.image_ids, names)
    skipped = int((queue.done & ~unverified).sum())
    print(
        f"{sv.summary(chosen, names, budget=args.budget)}\n{int(queue.done.sum())} of "
        f"{len(queue.image_ids)} images cleaned, {len(queue.errors)} failed, {skipped} already "
        "verified (left out)" + (f" -> {args.out}" if args.out is not None else ""),
        file=report,
    )
    return 0


SUGGEST_VERIFY = Command(
    "suggest-verify",
    help="choose the training images whose verification should help most (no torch)",
    description=DESCRIPTION,
    epilog=EPILOG,
    add_args=_suggest_args,
    run=suggest_verify,
    needs_torch=False,
)
