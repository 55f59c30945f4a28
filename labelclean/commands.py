"""Handlers of the ``labelclean`` subcommands. Imports stay inside each handler so that a
command loads only what it uses (the serving commands never import torch)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Problems a user can fix: printed as one line, exit status 2 (LABELCLEAN_DEBUG=1 shows tracebacks).
USER_ERRORS: tuple[type[BaseException], ...] = (
    () if os.environ.get("LABELCLEAN_DEBUG") else (ValueError, OSError, RuntimeError)
)


def _files(args: argparse.Namespace):
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


def _configs(args: argparse.Namespace, num_classes: int):
    from labelclean.model.backbones import default_input_spec
    from labelclean.model.config import ModelConfig
    from labelclean.training.loop import TrainConfig

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
    from labelclean.cli import SCHEDULE_FLAGS

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


def _load_data(args: argparse.Namespace, model_cfg, seed: int):
    from labelclean.training.batches import prepare_data

    data = prepare_data(
        _files(args),
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


def train(args: argparse.Namespace) -> int:
    from labelclean.model.openimages import read_classes
    from labelclean.training.checkpoint import init_checkpoint
    from labelclean.training.run import train as run_training

    if args.init is not None:  # a run's bundle folder stands for its checkpoint
        args.init = init_checkpoint(args.init)
    files = _files(args)
    model_cfg, train_cfg = _configs(args, len(read_classes(files.path(files.classes))))
    data = _load_data(args, model_cfg, train_cfg.seed)
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


def benchmark(args: argparse.Namespace) -> int:
    from labelclean.model.openimages import read_classes
    from labelclean.training.benchmark import run_benchmark

    files = _files(args)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    model_cfg, train_cfg = _configs(args, len(read_classes(files.path(files.classes))))
    data = _load_data(args, model_cfg, seed=0)
    results = run_benchmark(
        data, args.out, train_cfg, model_cfg, seeds=seeds, modes=modes, progress=not args.quiet
    )
    print((args.out / "results.md").read_text())
    return 0 if results else 1


def benchmark_report(args: argparse.Namespace) -> int:
    from labelclean.training.benchmark_report import parse_runs, write_report

    write_report(parse_runs(args.runs), args.out)
    print((args.out / "results.md").read_text())
    return 0


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


def evaluate(args: argparse.Namespace) -> int:
    from labelclean.training.bundle_eval import evaluate_bundle

    metrics = evaluate_bundle(
        args.model,
        _files(args),
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


def serve(args: argparse.Namespace) -> int:
    from labelclean.model.bundle import load_bundle
    from labelclean.service.http.server import run_server
    from labelclean.settings import Settings

    given = {k: getattr(args, k) for k in ("model", "host", "port", "workers", "device")}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    if settings.model is None:
        raise ValueError("no model bundle: pass --model BUNDLE or set LABELCLEAN_MODEL")
    load_bundle(settings.model)  # a bad bundle is one line here, not a traceback from uvicorn
    run_server(settings)
    return 0


CLEAN_FLAGS = {
    "images": "--images",
    "labels": "--labels",
    "output": "--out",
    "options.thresholds": "--threshold",
    "options.min_precision": "--min-precision",
    "options.chunk_size": "--chunk-size",
}


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


def worker(args: argparse.Namespace) -> int:
    from labelclean.service.jobs.worker import run_worker
    from labelclean.settings import Settings

    given = {k: getattr(args, k) for k in ("model", "device")}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    if settings.model is None:
        raise ValueError("no model bundle: pass --model BUNDLE or set LABELCLEAN_MODEL")
    return run_worker(settings, settings.model, burst=args.burst)


def train_worker(args: argparse.Namespace) -> int:
    from labelclean.cli import NEEDS_TORCH, torch_missing
    from labelclean.service.review.retrain_worker import run_training_worker
    from labelclean.settings import Settings

    if torch_missing():
        raise ValueError(f"it runs `labelclean train`: {NEEDS_TORCH}")
    given = {"model": args.model, "training_data": args.data, "training_runs": args.runs}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    return run_training_worker(settings, burst=args.burst)


def _clean_queue(bundle, inputs, storage, args: argparse.Namespace):
    """review's and suggest-verify's one pass: every image cleaned by the bundle (--device,
    --batch-size), as the review queue holds them."""
    from labelclean.model.runtime import OnnxModel
    from labelclean.service.review import queue as rq

    model = OnnxModel(bundle, device=args.device)
    return rq.clean_split(
        bundle, inputs, predict=model.run, read=storage.read_bytes,
        batch_size=args.batch_size, progress=not args.quiet,
    )  # fmt: skip


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
    queue = _clean_queue(bundle, inputs, storage, args)
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
    queue = _clean_queue(bundle, inputs, storage, args)
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


__all__ = ["USER_ERRORS", "demo_data", "train", "benchmark", "export", "evaluate", "serve", "Path"]
