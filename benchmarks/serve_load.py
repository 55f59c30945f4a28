"""The load side of benchmarks/serve_bench.py: a minimal keep-alive HTTP/1.1 client on asyncio
(one connection per concurrent caller, one real image per POST /classify), run in its own
process so that it does not share the server's event loop, and the service's batch counters.

    .venv/bin/python benchmarks/serve_load.py --drive PORT PAYLOAD_FILE CONCURRENCY SECONDS
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from common import OUT


def request_bytes(port: int, image: bytes, name: str) -> bytes:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _caller(port: int, requests: list[bytes], offset: int, stop_at: float, lat: list, bad):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                bad.append(status)
    finally:
        writer.close()


async def _drive(port: int, requests: list[bytes], concurrency: int, seconds: float) -> dict:
    warm: list[float] = []
    await asyncio.gather(
        *(_caller(port, requests, i, time.perf_counter() + min(2.0, seconds / 4), warm, [])
          for i in range(concurrency))
    )  # fmt: skip
    latencies: list[float] = []
    bad: list[int] = []
    start = time.perf_counter()
    await asyncio.gather(
        *(_caller(port, requests, i, start + seconds, latencies, bad) for i in range(concurrency))
    )
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(bad),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def drive(port: int, payload_file: Path, concurrency: int, seconds: float) -> dict:
    """Run the load generator in another process; returns its figures."""
    out = subprocess.run(
        [sys.executable, __file__, "--drive", str(port), str(payload_file), str(concurrency),
         str(seconds)], capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def drive_main(port: int, payload_file: Path, concurrency: int, seconds: float) -> None:
    payloads = json.loads(payload_file.read_text())
    requests = [request_bytes(port, bytes.fromhex(p), f"img{i}") for i, p in enumerate(payloads)]
    # uvloop: the load generator shares the cores with the server; the less CPU it takes per
    # request, the less it disturbs what is measured (both the service and the bare endpoint).
    run = getattr(__import__("uvloop"), "run", asyncio.run)
    print(json.dumps(run(_drive(port, requests, concurrency, seconds))))


def server_stats(port: int) -> dict:
    """Batches and images seen by the service (its /metrics)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("labelclean_batch_size_sum", "labelclean_batch_size_count")):
            name, value = line.split()
            values[name] = float(value)
    return {
        "batches": values.get("labelclean_batch_size_count", 0),
        "images": values.get("labelclean_batch_size_sum", 0),
    }


# ---------------------------------------------------------------- the benchmark


def load_levels(port: int, payloads: list[bytes], levels: list[int], seconds: float) -> list:
    payload_file = OUT / "serve" / f"payload-{port}.json"
    payload_file.write_text(json.dumps([p.hex() for p in payloads]))
    rows = []
    for c in levels:
        before = server_stats(port) if c else None
        row = drive(port, payload_file, c, seconds)
        if before is not None:
            try:
                after = server_stats(port)
                n = after["batches"] - before["batches"]
                row["mean_batch"] = (after["images"] - before["images"]) / n if n else None
            except Exception:  # noqa: BLE001 - the bare endpoint has no /metrics
                pass
        rows.append(row)
        print(f"  c={c:<3} {row['requests_per_s']:8.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
              f"p99 {row['p99_ms']:7.1f} ms  ({row['requests']} requests, {row['errors']} errors"
              + (f", mean batch {row['mean_batch']:.1f})" if row.get("mean_batch") else ")"),
              flush=True)  # fmt: skip
    payload_file.unlink()
    return rows


if __name__ == "__main__" and sys.argv[1:2] == ["--drive"]:
    drive_main(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
