"""Bulk-job benchmark (issue 10): Redis workers against the offline ``labelclean clean``, on one
S3 bucket of demo images.

    .venv/bin/python benchmarks/jobs_bench.py --data DEMO_DATA --bundle RUN/bundle --images 20000
    .venv/bin/python benchmarks/jobs_bench.py --data DEMO_DATA --bundle RUN/bundle \\
        --images 500 --memory-sizes 250 --repeats 1                       # a smoke test

What runs (all on this machine, loopback only):
- moto's S3 server (real S3 protocol) holding bucket ``bench``: the first ``--images`` demo
  images (ImageIDs sorted) of the train split under ``img{N}/<ImageID>.png``, and
  ``labels-{N}.csv``, the demo data's machine labels (train-annotations-machine-imagelabels.csv)
  restricted to those images. The same for each of ``--memory-sizes``. When the demo data has
  fewer labelled images than asked for, images are replicated under new ImageIDs (``<id>r<k>``,
  with their rows) and the script says so.
- a ``redis-server`` (no persistence) and ``labelclean serve`` (the job API; it only takes the
  POST here), both idle during the offline runs.
- per repeat, in this order: the offline ``labelclean clean`` on ``s3://bench/img{N}/`` (timed
  from spawn to exit: interpreter start, model load, validation, plan, cleaning, finalize); then
  for each ``--workers`` count a fresh set of ``labelclean worker`` processes, started and idle
  (registered in Redis) before the job is posted, timed from just before ``POST /jobs`` to the
  job's ``finished_at`` (the job's own ``started_at`` -- a worker taking the plan message -- is
  recorded too); then one worker on each smaller ``--memory-sizes`` bucket.
Each run writes its outputs to its own prefix of the same bucket; every run's cleaned.csv is
checked against the first offline run's (same verdicts, scores within 1e-5).

Per run: images/s, CPU seconds of each process (worker(s), moto, redis, the offline process),
the CPU the rest of the machine used meanwhile (/proc/stat minus those: other engineers' jobs),
the load average before, Redis commands issued, and the peak RSS: VmHWM from /proc/PID/status
(a worker's just before it is stopped; the offline process's polled until it exits), for workers
also the largest VmRSS seen (every 0.1 s) while the job was planned, cleaned chunk by chunk and
finalized, and VmRSS as the images done grow.
Figures go to stdout and ``--out``/results.json (default benchmarks/out/jobs/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import MACHINE_LABELS, ROOT, int_list, machine, parse_env
from jobs_runs import plan_memory, run_offline, run_workers
from jobs_stack import Services, compare, read_results, start_services, upload

# Reporting.


def line(run: dict[str, Any]) -> str:
    cpu = ", ".join(f"{k} {v}" for k, v in run["cpu_s"].items())
    who = "offline clean" if run["kind"] == "offline" else f"{run['workers']} worker(s)"
    rss = run["peak_rss_mib"]
    extra = ""
    if run["kind"] == "workers":
        extra = (f" (from plan taken {run['seconds_from_plan_taken']} s; worker start-up "
                 f"{run['startup_s']} s)")  # fmt: skip
        rss = f"{rss}, largest VmRSS by phase {run['rss_mib_by_phase']}"
    return (
        f"{run['tag']:<18} {who:<14} {run['images']:>6} images  {run['seconds']:>7.2f} s  "
        f"{run['images_per_s']:>7.1f} img/s{extra}\n"
        f"    peak RSS MiB {rss}; load before {run['load_before']}; CPU s: {cpu}; "
        f"others {run['others_cpu_s']} of machine {run['machine_busy_s']}; "
        f"redis commands {run['redis_commands']}; check {run.get('check')}"
    )


def summarize(runs: list[dict[str, Any]], n: int, sizes: list[int]) -> dict[str, Any]:
    def rates(pred: Callable[[dict], bool]) -> list[float]:
        return [r["images_per_s"] for r in runs if pred(r)]

    offline = rates(lambda r: r["kind"] == "offline")
    out: dict[str, Any] = {"offline_images_per_s": offline}
    by_workers: dict[int, list[float]] = {}
    for r in runs:
        if r["kind"] == "workers" and r["images"] == n:
            by_workers.setdefault(r["workers"], []).append(r["images_per_s"])
    out["workers_images_per_s"] = by_workers
    if offline and 1 in by_workers:
        out["one_worker_vs_offline"] = [round(w / o, 3) for w, o in
                                        zip(by_workers[1], offline, strict=False)]  # fmt: skip
    if 1 in by_workers and 2 in by_workers:
        out["two_vs_one_worker"] = [round(b / a, 3) for a, b in
                                    zip(by_workers[1], by_workers[2], strict=False)]  # fmt: skip
    peaks: dict[int, list[float]] = {}
    for r in runs:
        if r["kind"] == "workers" and r["workers"] == 1:
            peaks.setdefault(r["images"], []).append(r["peak_rss_mib"][0])
    out["one_worker_peak_rss_mib_by_images"] = dict(sorted(peaks.items()))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Bulk cleaning jobs on an S3 bucket (moto) of demo images: one worker's "
        "images/s against the offline `labelclean clean`, one against two workers, a worker's "
        "peak RSS at two job sizes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data", type=Path, required=True,
        help="a demo data set (`labelclean demo-data --out DIR`); only read",
    )  # fmt: skip
    p.add_argument(
        "--bundle", type=Path, required=True,
        help="a bundle trained on it (`labelclean train --data DIR --out RUN`: RUN/bundle)",
    )  # fmt: skip
    p.add_argument("--images", type=int, default=20000, help="images in the main bucket")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts to run")
    p.add_argument("--memory-sizes", default="10000",
                   help="smaller buckets one worker also cleans (peak RSS against --images); "
                   "'' for none")  # fmt: skip
    p.add_argument("--chunk-size", type=int, default=1000, help="images per chunk (both paths)")
    p.add_argument("--batch-size", type=int, default=32, help="images per ONNX run (both paths)")
    p.add_argument("--repeats", type=int, default=2, help="times each measurement is run")
    p.add_argument("--no-offline", action="store_true", help="skip the offline runs")
    p.add_argument(
        "--worker-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the workers (e.g. LABELCLEAN_DECODE_THREADS=8)",
    )  # fmt: skip
    p.add_argument("--offline-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for labelclean clean")  # fmt: skip
    p.add_argument(
        "--profile", action="store_true",
        help="sample the offline process and the workers with py-spy (LOGS/*.pyspy.txt, "
        "collapsed stacks); it costs CPU: not for the figures",
    )  # fmt: skip
    p.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy", help="py-spy binary")
    p.add_argument(
        "--s3-latency-ms", type=float, default=0.0,
        help="put benchmarks/latency_proxy.py between moto and the cleaners, adding this "
        "delay to every S3 request (a bucket farther away than loopback)",
    )  # fmt: skip
    p.add_argument(
        "--plan-memory", default="", metavar="SIZES",
        help="instead of the benchmark: the peak RSS of planning jobs of these sizes "
        "(comma-separated) on local folders (no S3, Redis or workers)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "jobs",
                   help="folder for results.json and the processes' logs")  # fmt: skip
    return p


def measure(
    services: Services, args: argparse.Namespace, counts: list[int], sizes: list[int]
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """Upload the buckets, then each repeat's runs, each checked against the first one's
    cleaned.csv: (the buckets by size, the runs)."""
    runs: list[dict[str, Any]] = []
    buckets = {n: upload(services, args.data, n) for n in [args.images, *sizes]}
    for b in buckets.values():
        note = f" ({b['replicated']} replicated under new ImageIDs)" if b["replicated"] else ""
        print(f"uploaded {b['images']} images{note}, {b['label_rows']} label rows, "
              f"{b['bytes'] / 1e6:.1f} MB in {b['upload_s']} s -> {b['prefix']}")  # fmt: skip
    reference = None
    main_bucket = buckets[args.images]
    for rep in range(1, args.repeats + 1):
        todo = [] if args.no_offline else [(f"offline-{rep}", main_bucket, 0)]
        todo += [(f"w{k}-{args.images}-{rep}", main_bucket, k) for k in counts]
        todo += [(f"w1-{n}-{rep}", buckets[n], 1) for n in sizes]
        for tag, bucket, k in todo:
            if k:
                run = run_workers(services, args, bucket, k, tag)
            else:
                run = run_offline(services, args, bucket, tag)
            results, summary = read_results(services, run["output"])
            if reference is None:
                reference = results
            run["check"] = compare(results, reference)
            run["check"]["summary_images"] = summary["images"]
            run["check"]["summary_failed"] = summary["failed"]
            runs.append(run)
            print(line(run), flush=True)
    return buckets, runs


def main() -> int:
    args = build_parser().parse_args()
    args.worker_env = parse_env(args.worker_env)
    args.offline_env = parse_env(args.offline_env)
    args.bundle = args.bundle.resolve()
    counts = int_list(args.workers)
    sizes = [n for n in int_list(args.memory_sizes) if n != args.images]
    if not (args.data / MACHINE_LABELS).exists():
        raise SystemExit(f"{args.data}: not a demo data set (no {MACHINE_LABELS})")
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    folder.mkdir()
    info = machine()
    print(f"code {info['code']} at {info['commit']}; {info['nproc']} cores, {info['cpu_model']}; "
          f"logs {folder}")  # fmt: skip
    command = " ".join([Path(sys.executable).name, *sys.argv])
    if args.plan_memory:
        found = plan_memory(args, [int(x) for x in args.plan_memory.split(",")], folder)
        result = {"command": command, "machine": info, "plan_memory": found}
        (folder / "results.json").write_text(json.dumps(result, indent=1))
        print(f"-> {folder / 'results.json'}")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below stops them
    services = Services(folder)
    try:
        start_services(services, args.bundle, args.s3_latency_ms)
        buckets, runs = measure(services, args, counts, sizes)
    finally:
        services.stop()
    summary = summarize(runs, args.images, sizes)
    print(json.dumps(summary, indent=1))
    result = {"command": command, "machine": info, "buckets": list(buckets.values()),
              "runs": runs, "summary": summary, "logs": str(folder)}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    (folder / "results.json").write_text(json.dumps(result, indent=1))
    print(f"-> {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
