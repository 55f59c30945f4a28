"""The long-running processes of a deployment: ``serve`` (the HTTP service), ``worker`` (bulk
cleaning jobs from Redis) and ``train-worker`` (the retraining jobs Label Studio queues). Their
options override the LABELCLEAN_* settings; none of them loads PyTorch to start."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import DEVICES, NEEDS_TORCH, Command, torch_missing


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
        choices=DEVICES,
        help="auto (default) = CUDA when available; cuda = not ready without it",
    )


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


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="bundle folder (default: $LABELCLEAN_MODEL)")
    p.add_argument(
        "--burst", action="store_true",
        help="exit once the queue is empty and no chunk is pending with any worker",
    )  # fmt: skip
    p.add_argument("--device", choices=DEVICES, help="auto (default) = CUDA when available")


def worker(args: argparse.Namespace) -> int:
    from labelclean.service.jobs.worker import run_worker
    from labelclean.settings import Settings

    given = {k: getattr(args, k) for k in ("model", "device")}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    if settings.model is None:
        raise ValueError("no model bundle: pass --model BUNDLE or set LABELCLEAN_MODEL")
    if not settings.storage_roots and not settings.file_roots:
        raise ValueError(
            "LABELCLEAN_STORAGE_ROOTS is not set: a worker reads and writes only under it, so "
            "without it every job's files are refused; set it as the API's"
        )
    return run_worker(settings, settings.model, burst=args.burst)


def _train_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="the bundle in service (default: $LABELCLEAN_MODEL)")
    p.add_argument("--data", type=Path, help="training data (default: $LABELCLEAN_TRAINING_DATA)")
    p.add_argument("--runs", type=Path, help="runs folder (default: $LABELCLEAN_TRAINING_RUNS)")
    p.add_argument("--burst", action="store_true", help="exit once no job is waiting")


def train_worker(args: argparse.Namespace) -> int:
    from labelclean.service.review.retrain_worker import run_training_worker
    from labelclean.settings import Settings

    if torch_missing():
        raise ValueError(f"it runs `labelclean train`: {NEEDS_TORCH}")
    given = {"model": args.model, "training_data": args.data, "training_runs": args.runs}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    return run_training_worker(settings, burst=args.burst)


SERVE = Command(
    "serve",
    help="serve a bundle over HTTP: /classify, /clean (no torch)",
    description="Start the inference service (uvicorn). Every setting can also come from a "
    "LABELCLEAN_* environment variable (README, 'Configuration'); these options "
    "override them.",
    add_args=_serve_args,
    run=serve,
    needs_torch=False,
)
WORKER = Command(
    "worker",
    help="do bulk cleaning jobs (POST /jobs) from the Redis queue (no torch)",
    description="Take chunks of bulk jobs from Redis (LABELCLEAN_REDIS_URL) and clean them with "
    "the bundle, loaded once. Run any number, on any hosts that share Redis and the buckets. "
    "Settings come from LABELCLEAN_* variables (job_*, worker_batch_size, file_roots, "
    "s3_endpoint_url, device). SIGTERM finishes the chunk in hand, then exits.",
    add_args=_worker_args,
    run=worker,
    needs_torch=False,
)
TRAIN_WORKER = Command(
    "train-worker",
    help="run the retraining jobs Label Studio's Start Training queues (needs torch)",
    description='Take the retraining jobs that Label Studio\'s "Start Training" queues in Redis '
    "(the service's /label-studio/webhook, with LABELCLEAN_TRAINING_DATA set) and run them one "
    "at a time: the reviews (LABELCLEAN_LABEL_STUDIO_REVIEWS) joined to V, `labelclean train "
    "--human-extra reviews.csv --init MODEL` continued from the model at LABELCLEAN_MODEL, into "
    "LABELCLEAN_TRAINING_RUNS/<job id>/run (log: train.log beside it). The new bundle is not "
    "deployed: point LABELCLEAN_MODEL at it and POST /model/reload. A worker that dies loses "
    "nothing (another begins its job again); SIGTERM stops the training and queues it again.",
    add_args=_train_worker_args,
    run=train_worker,
    needs_torch=False,  # parses without it; the handler says it needs it
)
