"""``review``: the ranked queue of label issues of a data split for people to check, as CSV,
static HTML pages or Label Studio tasks (no torch). Its inputs beside the bundle and its one
pass over the images are ``suggest-verify``'s too."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import DEVICES, Command

DESCRIPTION = (
    "Clean every machine-labelled image of a data split (--data in Open Images "
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
    "(index.html, page-2.html, ..., thumbs/; open index.html in a browser, no server needed)."
)

EPILOG = (
    "Label Studio (--format label-studio): create a project whose labeling config is "
    "label-studio-config.xml and import label-studio-tasks.json; each task shows the image, its "
    "machine labels and the proposed change, with the final label set (kept and added) "
    "preselected and scored by the model's confidence in it; label-studio-view.json is a Data "
    "Manager tab that sorts and filters max_issue as a number. Images are referenced as "
    "--image-url + file name; the default, /data/local-files/?d=<absolute image folder>/, "
    "needs Label Studio started with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
    "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/ and a Local Storage on the image folder; images "
    "on s3:// keep their URI. Exit status 2 with one line naming the option for bad inputs."
)


def queue_input_args(p: argparse.ArgumentParser) -> None:
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


def clean_queue(bundle, inputs, storage, args: argparse.Namespace):
    """review's and suggest-verify's one pass: every image cleaned by the bundle (--device,
    --batch-size), as the review queue holds them."""
    from labelclean.model.runtime import OnnxModel
    from labelclean.service.review import queue as rq

    model = OnnxModel(bundle, device=args.device)
    return rq.clean_split(
        bundle, inputs, predict=model.run, read=storage.read_bytes,
        batch_size=args.batch_size, progress=not args.quiet,
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
    queue_input_args(p)
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
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto (default) = CUDA when available")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="images per ONNX run (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def review(args: argparse.Namespace) -> int:
    from labelclean.model.bundle import load_bundle
    from labelclean.service.review import queue as rq
    from labelclean.service.review.html import write_pages
    from labelclean.storage import Storage

    for flag, value, low in (("--per-page", args.per_page, 1), ("--top", args.top, 0),
                             ("--batch-size", args.batch_size, 1)):  # fmt: skip
        if value < low:
            raise ValueError(f"{flag}: must be at least {low}, got {value}")
    if not 0.0 <= args.min_issue <= 1.0:
        raise ValueError(f"--min-issue: must be between 0 and 1, got {args.min_issue}")
    try:
        bundle = load_bundle(args.model)
    except ValueError as exc:
        raise ValueError(f"--model: {exc}") from None
    storage = Storage.local()  # S3 endpoint: LABELCLEAN_S3_ENDPOINT_URL or AWS_ENDPOINT_URL
    inputs = rq.read_inputs(
        bundle, args.data, split=args.split, classes_file=args.classes_file,
        machine_file=args.machine, images=args.images,
        ignore_unknown=args.ignore_unknown_labels, storage=storage,
    )  # fmt: skip
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "review.csv").touch()
    except OSError as exc:
        raise ValueError(f"--out: {out} is not writable ({exc.strerror or exc})") from None
    queue = clean_queue(bundle, inputs, storage, args)
    rows, cols = rq.rank_pairs(queue, min_issue=args.min_issue)
    if args.order == "suggest":
        rows, cols = rq.group_by_image(rows, cols, rq.verify_rank(queue))
    written = rq.write_review_csv(queue, rows, cols, out / "review.csv")
    rq.write_errors_csv(queue.errors, out / "errors.csv")
    top = list(rq.pairs(queue, rows[: args.top], cols[: args.top]))
    notes = [
        f"Model {bundle.path} ({bundle.mode}, sha256 {bundle.sha256[:12]}); data {args.data}, "
        f"{args.split} split: {queue.done.sum()} images cleaned, {len(queue.errors)} failed "
        "(errors.csv).",
        "Issue score: the probability that a listed label is wrong or that an unlisted one is "
        "missing. Verdict: the model's decision, as POST /clean gives it (its remove and add "
        "thresholds, then the class hierarchy). The full ranking is in review.csv.",
    ]
    pages = write_pages(out, queue, top, per_page=args.per_page,
                        read=lambda image: storage.read_bytes(inputs.images[image]),
                        notes=notes)  # fmt: skip
    counts = rq.summary(queue, rows, cols)
    line = (
        f"{counts['cleaned']} of {counts['images']} images cleaned, {counts['failed']} failed "
        f"(errors.csv); {written} pairs in review.csv (issue score >= {args.min_issue}; "
        f"the decision removes {counts['suspected_wrong']} and adds "
        f"{counts['suspected_missing']}); top {len(top)} on {pages} HTML page(s) -> "
        f"{out / 'index.html'}"
    )
    if args.format == "label-studio":
        from labelclean.service.review.label_studio import export as ls
        from labelclean.service.review.label_studio.predictions import model_version

        prefix = args.image_url or ls.default_image_url(inputs.images_uri)
        tasks = ls.write_label_studio(
            out, queue, rows, url=ls.image_urls(prefix, inputs.images),
            model_version=model_version(bundle.sha256), verify_rank=args.order == "suggest",
        )  # fmt: skip
        line += f"; {tasks} Label Studio tasks -> {out / 'label-studio-tasks.json'}"
    print(line)
    return 0


REVIEW = Command(
    "review",
    help="rank every (image, label) pair by how likely it is wrong or missing (no torch)",
    description=DESCRIPTION,
    epilog=EPILOG,
    add_args=_review_args,
    run=review,
    needs_torch=False,
)
