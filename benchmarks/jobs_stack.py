"""The services a jobs benchmark (benchmarks/jobs_bench.py) runs against, on loopback: Redis,
moto's S3 server (and benchmarks/latency_proxy.py in front of it), ``labelclean serve``; the
bucket's images and labels; the results read back and compared; the CPU metered over a run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    cpu_s,
    free_port,
    machine_busy_s,
    pick_images,
    self_cpu_s,
    stop_process,
    wait_until,
)

BIN = Path(sys.executable).parent
LABELCLEAN = str(BIN / "labelclean")
BUCKET = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELCLEAN_", "AWS_"))}
    env.update(CREDENTIALS)
    env.update(extra)
    return env


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
            stop_process(process)


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
        "LABELCLEAN_STORAGE_ROOTS": f"s3://{BUCKET}/",  # jobs may use this bucket, nothing else
        "LABELCLEAN_DEVICE": "cpu",
    }


# Data.


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


# Metering.


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
