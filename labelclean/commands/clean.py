"""``clean``: a bulk job run in this process, no Redis: every image under a URI prefix cleaned
with its rows of a labels CSV, through the same code as the job workers (no torch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import DEVICES, Command

DESCRIPTION = (
    "Clean the noisy labels of every <ImageID>.<ext> directly under --images (a "
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
    "the listing and the CSV in bounded runs under the temporary folder (TMPDIR)."
)
EPILOG = (
    "S3: credentials and endpoint from the usual AWS settings (AWS_ENDPOINT_URL for "
    "MinIO/Ceph, or LABELCLEAN_S3_ENDPOINT_URL). Exit status 2 with one line naming the "
    "option for bad inputs."
)

# Where a job's field comes from on this command line: its errors name the option.
CLEAN_FLAGS = {
    "images": "--images",
    "labels": "--labels",
    "output": "--out",
    "options.thresholds": "--threshold",
    "options.min_precision": "--min-precision",
    "options.chunk_size": "--chunk-size",
}


def _clean_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="bundle folder")
    p.add_argument("--images", required=True, help="URI prefix holding <ImageID>.<ext> images")
    p.add_argument("--labels", required=True, help="URI of the noisy labels CSV")
    p.add_argument("--out", required=True, help="URI prefix (folder) to write the results to")
    p.add_argument("--device", choices=DEVICES, default="auto",
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


def clean(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from labelclean.model.labels import InputError
    from labelclean.service.jobs.offline import run_offline
    from labelclean.service.jobs.steps import JobOptions, JobSpec
    from labelclean.storage import Storage

    threshold = args.threshold
    if threshold is not None:
        try:
            threshold = json.loads(threshold)
        except json.JSONDecodeError:
            raise ValueError(f"--threshold: not a number or JSON object: {threshold!r}") from None
    try:
        options = JobOptions(
            thresholds=threshold, min_precision=args.min_precision, chunk_size=args.chunk_size,
            keep_work=args.keep_work,
        )  # fmt: skip
        spec = JobSpec(images=args.images, labels=args.labels, output=args.out, options=options)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = str(error["loc"][0]) if error["loc"] else ""
        flag = CLEAN_FLAGS.get(where, CLEAN_FLAGS.get(f"options.{where}", where))
        message = error["msg"]
        if where == "thresholds":
            message = 'one number in [0, 1], or a JSON object {"label id": number, ...}'
        raise ValueError(f"{flag}: {message}") from None
    storage = Storage.local()  # S3 endpoint: LABELCLEAN_S3_ENDPOINT_URL or AWS_ENDPOINT_URL
    try:
        summary = run_offline(
            spec, args.model, storage=storage, device=args.device, progress=not args.quiet,
            batch_size=args.batch_size,
        )  # fmt: skip
    except InputError as exc:
        flag = CLEAN_FLAGS.get(exc.field or "", exc.field or "input")
        raise ValueError(f"{flag}: {exc}") from None
    labels = summary["labels"]
    print(
        f"{summary['cleaned']} of {summary['images']} images cleaned, {summary['failed']} "
        f"failed (errors.csv); labels kept {labels['kept']}, removed {labels['removed']}, "
        f"added {labels['added']} -> {summary['files']['cleaned']}"
    )
    return 0


CLEAN = Command(
    "clean",
    help="clean every image under a URI prefix with its noisy labels CSV, offline (no torch)",
    description=DESCRIPTION,
    epilog=EPILOG,
    add_args=_clean_args,
    run=clean,
    needs_torch=False,
)
