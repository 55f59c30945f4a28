"""``import-reviews``: the reviews people made in Label Studio, as a human-verified labels CSV
that training reads (``--human-extra``) (no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Command

DESCRIPTION = (
    "Write the reviews of a Label Studio project as one Open Images human-labels "
    "CSV (ImageID,Source,LabelName,Confidence): for each reviewed image, every choice the "
    "reviewer saw, 1 when ticked, 0 when not (a verified negative). From a JSON export "
    "(--label-studio): each task's latest edited annotation; skipped ones verify nothing. "
    "From the store the service's /label-studio/webhook keeps (--reviews, "
    "LABELCLEAN_LABEL_STUDIO_REVIEWS): its labels/*.csv joined. The ImageID is the task data's "
    "image_id (`labelclean review` writes it), else the image file's name without extension."
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


def import_reviews(args: argparse.Namespace) -> int:
    from labelclean.service.review.label_studio import imports

    if args.label_studio is not None:
        if args.model is None:
            raise ValueError("--model: needed with --label-studio (the classes the choices name)")
        text, count = imports.from_export(args.label_studio, args.model, args.config)
    else:
        text, count = imports.from_store(args.reviews)
    args.out.write_text(text, encoding="utf-8")
    rows = text.count("\n") - 1
    print(f"{count} reviewed image(s), {rows} verified label(s) -> {args.out}")
    return 0


IMPORT_REVIEWS = Command(
    "import-reviews",
    help="reviews from Label Studio -> a human-verified labels CSV (no torch)",
    description=DESCRIPTION,
    add_args=_import_reviews_args,
    run=import_reviews,
    needs_torch=False,
)
