"""The runs of benchmarks/jobs_bench.py: the offline ``labelclean clean``, a set of workers on a
posted job (timed, metered, their RSS sampled), and the plan step alone (--plan-memory).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import cpu_s, pick_images, status_kib, wait_exit, wait_until
from jobs_stack import BUCKET, LABELCLEAN, Meter, Services, child_env, proxy_pid, service_env


def run_offline(s: Services, args: argparse.Namespace, bucket: dict, tag: str) -> dict[str, Any]:
    output = f"s3://{BUCKET}/runs/{tag}/"
    command = [LABELCLEAN, "clean", "--model", str(args.bundle), "--images", bucket["prefix"],
               "--labels", bucket["labels"], "--out", output, "--device", "cpu",
               "--chunk-size", str(args.chunk_size), "--batch-size", str(args.batch_size),
               "--quiet"]  # fmt: skip
    env = child_env({"LABELCLEAN_S3_ENDPOINT_URL": s.endpoint, **args.offline_env})
    meter = Meter(s, {"moto": s.moto_pid, "server": s.server_pid, **proxy_pid(s)})
    started = time.monotonic()
    process = s.spawn(command, f"{tag}.log", env)
    spies = [profile(s, args, process.pid, tag)] if args.profile else []
    peak = [0]

    def read_peak() -> None:
        peak[0] = max(peak[0], status_kib(process.pid, "VmHWM"))

    code, usage = wait_exit(process, 3600, read_peak)
    finish_profiles(spies)
    seconds = time.monotonic() - started
    extra = {"offline": usage.ru_utime + usage.ru_stime}
    run = {"kind": "offline", "tag": tag, "images": bucket["images"], "output": output,
           "seconds": round(seconds, 2), "images_per_s": round(bucket["images"] / seconds, 1),
           "peak_rss_mib": round(peak[0] / 1024, 1), **meter.stop(extra)}  # fmt: skip
    if code != 0:
        raise RuntimeError(f"{tag}: labelclean clean exited {code}: {tail(s, tag)}")
    return run


def profile(s: Services, args: argparse.Namespace, pid: int, name: str):
    """py-spy sampling ``pid`` (on-CPU Python stacks per thread) until it exits."""
    out = s.folder / f"{name}.pyspy.txt"
    command = [args.py_spy, "record", "--pid", str(pid), "--rate", "100", "--threads",
               "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
    return s.spawn(command, f"{name}.pyspy.log")


def finish_profiles(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.terminate()


def tail(s: Services, tag: str) -> str:
    return (s.folder / f"{tag}.log").read_text(errors="replace")[-3000:]


def registered(s: Services, pids: set[int]) -> bool:
    import redis

    client = redis.Redis.from_url(s.redis_url, decode_responses=True)
    found = set()
    for key in client.scan_iter("labelclean:worker:*"):
        value = client.get(key)
        if value:
            found.add(json.loads(value)["pid"])
    return pids <= found


def run_workers(
    s: Services, args: argparse.Namespace, bucket: dict, workers: int, tag: str
) -> dict[str, Any]:  # fmt: skip
    import httpx
    import redis

    output = f"s3://{BUCKET}/runs/{tag}/"
    env = child_env(
        {
            **service_env(s),
            "LABELCLEAN_JOB_CHUNK_SIZE": str(args.chunk_size),
            "LABELCLEAN_WORKER_BATCH_SIZE": str(args.batch_size),
            **args.worker_env,
        }
    )
    spawned = time.monotonic()
    procs = [s.spawn([LABELCLEAN, "worker", "--model", str(args.bundle)], f"{tag}-w{i}.log", env)
             for i in range(workers)]  # fmt: skip
    wait_until(lambda: registered(s, {p.pid for p in procs}), f"{tag}: workers", 120)
    startup = time.monotonic() - spawned
    time.sleep(1.0)  # let the start-up settle (imports done, first idle reads)
    rss_idle = [status_kib(p.pid, "VmRSS") for p in procs]
    pids = {f"worker{i}": p.pid for i, p in enumerate(procs)}
    meter = Meter(s, {**pids, "moto": s.moto_pid, "server": s.server_pid, **proxy_pid(s)})
    spec = {"images": bucket["prefix"], "labels": bucket["labels"], "output": output,
            "options": {"chunk_size": args.chunk_size}}  # fmt: skip
    spies = [profile(s, args, p.pid, f"{tag}-w{i}") for i, p in enumerate(procs) if args.profile]
    posted = time.time()
    reply = httpx.post(s.api_url + "/jobs", json=spec, timeout=60)
    if reply.status_code != 202:
        raise RuntimeError(f"{tag}: POST /jobs answered {reply.status_code}: {reply.text}")
    job_id = reply.json()["id"]
    client = redis.Redis.from_url(s.redis_url, decode_responses=True)
    samples: list[tuple[int, list[int]]] = []
    phases: dict[str, list[int]] = {}  # plan / chunks / finalize -> each worker's largest VmRSS
    next_sample = 0
    while True:
        fields = client.hgetall(f"labelclean:job:{job_id}")
        done = int(fields.get("done", 0)) + int(fields.get("failed", 0))
        rss = [status_kib(p.pid, "VmRSS") for p in procs]
        chunks = int(fields.get("chunks") or 0)
        phase = "plan" if not chunks else "chunks" if int(fields.get("chunks_done", 0)) < chunks \
            else "finalize"  # fmt: skip
        phases[phase] = [max(a, b) for a, b in zip(phases.get(phase, rss), rss, strict=True)]
        if done >= next_sample:
            samples.append((done, rss))
            next_sample = done + max(1, bucket["images"] // 10)
        if fields.get("state") in ("completed", "failed", "cancelled"):
            break
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{tag}: a worker exited: {tail(s, f'{tag}-w0')}")
        time.sleep(0.1)
    cpu_workers = {name: cpu_s(pid) for name, pid in pids.items()}
    metered = meter.stop()
    hwm = [status_kib(p.pid, "VmHWM") for p in procs]
    samples.append((done, [status_kib(p.pid, "VmRSS") for p in procs]))
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        wait_exit(p, 60)
    finish_profiles(spies)
    if fields["state"] != "completed":
        raise RuntimeError(f"{tag}: job {fields['state']}: {fields.get('error')}")
    finished, started = float(fields["finished_at"]), float(fields["started_at"])
    n = bucket["images"]
    return {
        "kind": "workers", "tag": tag, "workers": workers, "images": n, "output": output,
        "job": job_id, "seconds": round(finished - posted, 2),
        "images_per_s": round(n / (finished - posted), 1),
        "seconds_from_plan_taken": round(finished - started, 2),
        "post_to_plan_taken_s": round(started - posted, 3),
        "startup_s": round(startup, 2),
        "peak_rss_mib": [round(k / 1024, 1) for k in hwm],
        "rss_mib_by_phase": {k: [round(x / 1024, 1) for x in v] for k, v in phases.items()},
        "idle_rss_mib": [round(k / 1024, 1) for k in rss_idle],
        "rss_mib_by_images_done": [(d, [round(k / 1024, 1) for k in r]) for d, r in samples],
        "worker_cpu_s": {k: round(v - meter.start[k], 2) for k, v in cpu_workers.items()},
        **metered,
    }  # fmt: skip


# The plan step alone.

PLAN_PROBE = """
import json, sys
from pathlib import Path
from labelclean.model.bundle import load_bundle
from labelclean.service import bulk
from labelclean.storage import Storage

def kib(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])

folder, bundle = Path(sys.argv[1]), load_bundle(sys.argv[2])
storage = Storage.local()
spec = bulk.JobSpec(images=str(folder / "images"), labels=str(folder / "labels.csv"),
                    output=str(folder / "out"))
before = kib("VmRSS")
plan = bulk.plan(spec, storage, chunk_size=1000, label_index=bundle.index, model=bundle.sha256)
print(json.dumps({"before_kib": before, "peak_kib": kib("VmHWM"), "after_kib": kib("VmRSS"),
                  "total": plan.total, "chunks": plan.chunks}))
"""


def plan_memory(args: argparse.Namespace, sizes: list[int], folder: Path) -> list[dict]:
    """Peak RSS of ``bulk.plan`` (what the worker taking a job's plan message runs) on local
    folders of ``sizes`` images (symlinks to the demo images, replicated past the demo's
    count), each in a fresh process: the part of a worker's memory that grows with the job."""
    found = []
    for n in sizes:
        root = folder / f"plan-{n}"
        (root / "images").mkdir(parents=True)
        chosen, labels, replicated = pick_images(args.data, n)
        for new, source in chosen:
            (root / "images" / f"{new}.png").symlink_to(args.data / "images" / f"{source}.png")
        (root / "labels.csv").write_bytes(labels)
        reply = subprocess.run([sys.executable, "-c", PLAN_PROBE, str(root), str(args.bundle)],
                               capture_output=True, text=True, cwd="/", check=True)  # fmt: skip
        got = json.loads(reply.stdout.strip().splitlines()[-1])
        row = {"images": n, "replicated": replicated, "label_rows": labels.count(b"\n") - 1,
               "rss_before_mib": round(got["before_kib"] / 1024, 1),
               "peak_mib": round(got["peak_kib"] / 1024, 1),
               "growth_mib": round((got["peak_kib"] - got["before_kib"]) / 1024, 1),
               "rss_after_mib": round(got["after_kib"] / 1024, 1)}  # fmt: skip
        row["growth_kib_per_image"] = round((got["peak_kib"] - got["before_kib"]) / n, 2)
        found.append(row)
        print(f"plan of {n} images ({replicated} replicated): RSS {row['rss_before_mib']} MiB "
              f"before, peak {row['peak_mib']} MiB (+{row['growth_mib']} MiB, "
              f"{row['growth_kib_per_image']} KiB per image), {row['rss_after_mib']} after",
              flush=True)  # fmt: skip
    return found
