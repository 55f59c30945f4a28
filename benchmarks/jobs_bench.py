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
import contextlib
import csv
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LABELCLEAN = str(BIN / "labelclean")
BUCKET = "bench"
MACHINE_LABELS = "train-annotations-machine-imagelabels.csv"
TICK = os.sysconf("SC_CLK_TCK")
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# Processes.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """utime + stime of a live process, all its threads (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def machine_busy_s() -> float:
    """CPU seconds all cores spent on anything but idle/iowait since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def wait_exit(
    process: subprocess.Popen[bytes], timeout: float, poll: Callable[[], None] | None = None
) -> tuple[int, Any]:
    """Reap ``process`` with wait4: (exit status, its rusage), calling ``poll`` every 20 ms
    meanwhile. Kills it after ``timeout``. (The rusage's ru_maxrss is no use here: a child
    started by vfork inherits its parent's peak RSS, this script's.)"""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage
        if poll is not None:
            with contextlib.suppress(OSError, KeyError):  # it exited meanwhile
                poll()
        if time.monotonic() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            raise RuntimeError(f"pid {process.pid} did not exit within {timeout:.0f} s; killed")
        time.sleep(0.02)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELCLEAN_", "AWS_"))}
    env.update(CREDENTIALS)
    env.update(extra)
    return env


def wait_until(check: Callable[[], Any], what: str, timeout: float, process=None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({process.returncode})")
        try:
            value = check()
            if value:
                return value
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not after {timeout:.0f} s")


@dataclass
class Services:
    folder: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    redis_url: str = ""
    s3_url: str = ""
    api_url: str = ""
    redis_pid: int = 0
    moto_pid: int = 0
    endpoint: str = ""  # the S3 endpoint the service, workers and offline use
    proxy_pid: int | None = None
    server_pid: int = 0

    def spawn(self, args: list[str], log: str, env: dict[str, str] | None = None):
        out = (self.folder / log).open("wb")
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


def start_services(s: Services, bundle: Path, latency_ms: float = 0.0) -> None:
    """Redis, moto (and the latency proxy), ``labelclean serve``; each is stopped by s.stop()."""
    import boto3
    import httpx
    import redis

    folder = s.folder
    port = free_port()
    (folder / "redis").mkdir(exist_ok=True)
    p = s.spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(folder / "redis")], "redis.log")  # fmt: skip
    s.redis_url, s.redis_pid = f"redis://127.0.0.1:{port}/0", p.pid
    wait_until(lambda: redis.Redis.from_url(s.redis_url).ping(), "redis-server", 20, p)
    port = free_port()
    p = s.spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                "moto.log", child_env({}))  # fmt: skip
    s.s3_url, s.moto_pid = f"http://127.0.0.1:{port}", p.pid
    client = boto3.client("s3", endpoint_url=s.s3_url, **boto_credentials())
    wait_until(client.list_buckets, "moto server", 60, p)
    s.endpoint = s.s3_url
    if latency_ms:
        port = free_port()
        proxy = [sys.executable, str(ROOT / "benchmarks" / "latency_proxy.py"), "--listen",
                 str(port), "--target", s.s3_url.removeprefix("http://"), "--delay-ms",
                 str(latency_ms)]  # fmt: skip
        p = s.spawn(proxy, "proxy.log")
        s.endpoint, s.proxy_pid = f"http://127.0.0.1:{port}", p.pid
        client = boto3.client("s3", endpoint_url=s.endpoint, **boto_credentials())
        wait_until(client.list_buckets, "latency proxy", 30, p)
    port = free_port()
    p = s.spawn([LABELCLEAN, "serve", "--model", str(bundle), "--port", str(port)], "serve.log",
                child_env(service_env(s)))  # fmt: skip
    s.api_url, s.server_pid = f"http://127.0.0.1:{port}", p.pid
    wait_until(lambda: httpx.get(s.api_url + "/readyz", timeout=2).status_code == 200,
               "labelclean serve", 120, p)  # fmt: skip


def proxy_pid(s: Services) -> dict[str, int]:
    return {} if s.proxy_pid is None else {"proxy": s.proxy_pid}


def boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def service_env(s: Services) -> dict[str, str]:
    return {
        "LABELCLEAN_REDIS_URL": s.redis_url,
        "LABELCLEAN_S3_ENDPOINT_URL": s.endpoint,
        "LABELCLEAN_DEVICE": "cpu",
    }


# Data.


def machine_rows(data: Path) -> dict[str, list[list[str]]]:
    """ImageID -> its rows of the train split's machine labels CSV."""
    rows: dict[str, list[list[str]]] = {}
    with (data / MACHINE_LABELS).open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            rows.setdefault(row[0], []).append(row)
    return rows


def pick_images(data: Path, n: int) -> tuple[list[tuple[str, str]], bytes, int]:
    """The first ``n`` labelled images (ImageIDs sorted): [(new ImageID, source id)], the labels
    CSV of exactly those images, and how many were replicated under new ImageIDs."""
    rows = machine_rows(data)
    ids = sorted(i for i in rows if (data / "images" / f"{i}.png").exists())
    chosen = [(i, i) for i in ids[:n]]
    k = 1
    while len(chosen) < n:  # more than the demo data holds: copies under new ImageIDs
        chosen += [(f"{i}r{k}", i) for i in ids[: n - len(chosen)]]
        k += 1
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["ImageID", "Source", "LabelName", "Confidence"])
    for new, source in chosen:
        writer.writerows([new, *row[1:]] for row in rows[source])
    return chosen, out.getvalue().encode(), max(0, n - len(ids))


def upload(s: Services, data: Path, n: int) -> dict[str, Any]:
    """``img{n}/`` and ``labels-{n}.csv`` into the bucket; returns what was uploaded."""
    import boto3
    from botocore.config import Config

    chosen, labels, replicated = pick_images(data, n)
    client = boto3.client(
        "s3", endpoint_url=s.s3_url, config=Config(max_pool_connections=32), **boto_credentials()
    )  # fmt: skip
    existing = {b["Name"] for b in client.list_buckets()["Buckets"]}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)

    def put(item: tuple[str, str]) -> int:
        body = (data / "images" / f"{item[1]}.png").read_bytes()
        client.put_object(Bucket=BUCKET, Key=f"img{n}/{item[0]}.png", Body=body)
        return len(body)

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(put, chosen))
    client.put_object(Bucket=BUCKET, Key=f"labels-{n}.csv", Body=labels)
    return {
        "images": n,
        "prefix": f"s3://{BUCKET}/img{n}/",
        "labels": f"s3://{BUCKET}/labels-{n}.csv",
        "label_rows": labels.count(b"\n") - 1,
        "replicated": replicated,
        "bytes": sum(sizes),
        "upload_s": round(time.monotonic() - started, 1),
    }


def read_results(s: Services, output: str) -> tuple[dict[tuple[str, str], tuple[float, str]], dict]:
    """cleaned.csv as (ImageID, label) -> (score, verdict), and summary.json."""
    import boto3

    client = boto3.client("s3", endpoint_url=s.s3_url, **boto_credentials())
    key = output.removeprefix(f"s3://{BUCKET}/").rstrip("/")
    text = client.get_object(Bucket=BUCKET, Key=f"{key}/cleaned.csv")["Body"].read().decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    summary = json.loads(client.get_object(Bucket=BUCKET, Key=f"{key}/summary.json")["Body"].read())
    return {(r[0], r[2]): (float(r[3]), r[4]) for r in rows}, summary


def compare(got: dict, want: dict) -> dict[str, Any]:
    """``got`` against the reference restricted to got's images."""
    images = {k[0] for k in got}
    want = {k: v for k, v in want.items() if k[0] in images}
    same_keys = got.keys() == want.keys()
    verdicts = same_keys and all(got[k][1] == want[k][1] for k in got)
    diff = max((abs(got[k][0] - want[k][0]) for k in got if k in want), default=0.0)
    return {"rows": len(got), "same_rows": same_keys, "same_verdicts": verdicts,
            "max_score_diff": diff, "ok": bool(verdicts and diff <= 1e-5)}  # fmt: skip


# Runs.


def redis_counters(url: str) -> tuple[int, float]:
    """(commands processed, CPU seconds) of the Redis server."""
    import redis

    client = redis.Redis.from_url(url)
    info = client.info("all")
    return int(info["total_commands_processed"]), info["used_cpu_sys"] + info["used_cpu_user"]


@dataclass
class Meter:
    """CPU of the tracked processes and of the whole machine over one run."""

    s: Services
    pids: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = self.read()
        self.load = os.getloadavg()

    def read(self) -> dict[str, float]:
        found = {name: cpu_s(pid) for name, pid in self.pids.items()}
        commands, redis_cpu = redis_counters(self.s.redis_url)
        found |= {"redis": redis_cpu, "redis_commands": commands, "bench": self_cpu_s(),
                  "machine": machine_busy_s(), "wall": time.time()}  # fmt: skip
        return found

    def stop(self, extra_cpu: dict[str, float] | None = None) -> dict[str, Any]:
        end = self.read()
        delta = {k: end[k] - self.start[k] for k in end}
        cpu = {
            k: round(v, 2)
            for k, v in delta.items()
            if k not in ("machine", "wall", "redis_commands")
        }
        cpu |= {k: round(v, 2) for k, v in (extra_cpu or {}).items()}
        ours = sum(cpu.values())
        return {
            "load_before": [round(x, 2) for x in self.load],
            "cpu_s": cpu,
            "machine_busy_s": round(delta["machine"], 2),
            "others_cpu_s": round(max(0.0, delta["machine"] - ours), 2),
            "span_s": round(delta["wall"], 2),
            "redis_commands": int(delta["redis_commands"]),
        }


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


# Reporting.


def machine() -> dict[str, Any]:
    def run(*cmd: str, cwd: Path = ROOT) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd).stdout.strip()
        except OSError:
            return ""

    cpuinfo: dict[str, str] = {}
    for entry in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = entry.partition(":")
        cpuinfo.setdefault(key.strip(), value.strip())
    model = (f"{cpuinfo.get('model name', platform.processor())} (family "
             f"{cpuinfo.get('cpu family')}, model {cpuinfo.get('model')}, "
             f"{cpuinfo.get('cpu MHz')} MHz)")  # fmt: skip
    import onnxruntime

    # The code the children run: this checkout, or another tree put first on PYTHONPATH
    # (a checkout of another commit; a tree without .git may name its commit in a COMMIT file).
    found = run(
        sys.executable, "-c", "import labelclean; print(labelclean.__file__)", cwd=Path("/")
    )
    code = Path(found or ROOT / "labelclean" / "__init__.py").parent.parent
    commit = run("git", "rev-parse", "HEAD", cwd=code)
    if not commit and (code / "COMMIT").exists():
        commit = (code / "COMMIT").read_text().strip()
    dirty = run("git", "status", "--porcelain", "--untracked-files=no", cwd=code)
    return {
        "commit": commit or "unknown",
        "code": str(code),
        "tracked_files_modified": [line.split(maxsplit=1)[-1] for line in dirty.splitlines()],
        "nproc": run("nproc"),
        "free_h": run("free", "-h"),
        "cpu_model": model,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "redis_server": run("redis-server", "--version"),
    }


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


def parse_env(values: list[str]) -> dict[str, str]:
    found = {}
    for value in values:
        key, sep, v = value.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {value!r}")
        found[key] = v
    return found


def main() -> int:
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
    args = p.parse_args()
    args.worker_env = parse_env(args.worker_env)
    args.offline_env = parse_env(args.offline_env)
    args.bundle = args.bundle.resolve()
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    sizes = [int(x) for x in args.memory_sizes.split(",") if x.strip() and int(x) != args.images]
    if not (args.data / MACHINE_LABELS).exists():
        raise SystemExit(f"{args.data}: not a demo data set (no {MACHINE_LABELS})")
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    folder.mkdir()
    info = machine()
    print(f"code {info['code']} at {info['commit']}; {info['nproc']} cores, {info['cpu_model']}; "
          f"logs {folder}")  # fmt: skip
    if args.plan_memory:
        found = plan_memory(args, [int(x) for x in args.plan_memory.split(",")], folder)
        result = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                  "machine": info, "plan_memory": found}  # fmt: skip
        (folder / "results.json").write_text(json.dumps(result, indent=1))
        print(f"-> {folder / 'results.json'}")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below stops them
    services = Services(folder)
    runs: list[dict[str, Any]] = []
    try:
        start_services(services, args.bundle, args.s3_latency_ms)
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
    finally:
        services.stop()
    summary = summarize(runs, args.images, sizes)
    print(json.dumps(summary, indent=1))
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": info, "buckets": list(buckets.values()), "runs": runs,
              "summary": summary, "logs": str(folder)}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    (folder / "results.json").write_text(json.dumps(result, indent=1))
    print(f"-> {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
