"""Serving benchmark: the service under concurrent load against its two baselines.

    .venv/bin/python benchmarks/serve_bench.py                 # both bundles, concurrency 1,8,32
    .venv/bin/python benchmarks/serve_bench.py --only demo --duration 5
    .venv/bin/python benchmarks/serve_bench.py --only resnet50 --device cuda   # a GPU host

For each bundle it starts ``labelclean serve`` (a subprocess), then drives POST /classify from
another process (``--drive``: a minimal keep-alive HTTP/1.1 client on asyncio, one connection
per concurrent caller, one real image per request) and prints requests/s and p50/p99 latency.

- resnet50 (torchvision ResNet-50 at 224x224, random weights, exported by the project's own
  export path; real JPEG photos): next to it, raw in-process ONNX Runtime on the same bundle at
  batch 1, 8 and 32. Target: at concurrency 32, >= 0.8x raw batch-32 throughput.
- demo (the demo bundle; its real 28x28 PNGs): next to it, a bare FastAPI endpoint on the same
  uvicorn settings that only receives the same multipart upload. Targets: at concurrency 32,
  >= 0.6x the bare endpoint's requests/s; at concurrency 1, p50 <= bare p50 + raw
  single-image inference + 5 ms.

The resnet50 bundle is built once into benchmarks/out/ (a subprocess that imports torch; the
servers never do). The demo bundle is demo/run/bundle (`make run` builds it) unless
--demo-bundle says otherwise. Figures go to stdout and benchmarks/out/serve/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
RESNET_CLASSES = 100
PHOTOS = [  # real photographs shipped inside installed packages
    "sklearn/datasets/images/china.jpg",
    "sklearn/datasets/images/flower.jpg",
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
]

BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request
from labelclean.service.server import uvicorn_options
from labelclean.settings import Settings

app = FastAPI()

@app.post("/classify")
async def classify(request: Request):
    form = await request.form()
    data = await form["image"].read()
    await form.close()
    return {"received": len(data)}

uvicorn.run(app, **uvicorn_options(Settings(port=int(sys.argv[1]), log_level="warning")))
"""


# ---------------------------------------------------------------- bundles and payloads


def build_resnet50(out: Path) -> None:
    """Export a random-weight ResNet-50 joint network (runs in its own process: torch)."""
    import torch
    from labelclean.model.classes import LabelClass
    from labelclean.model.config import InputSpec, ModelConfig
    from labelclean.model.export import export_bundle
    from labelclean.model.network import LabelCleaningNet

    torch.manual_seed(0)
    spec = InputSpec(224, 224, 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    net = LabelCleaningNet(
        ModelConfig(num_classes=RESNET_CLASSES, backbone="resnet50", input=spec)
    ).eval()
    rng = np.random.default_rng(0)
    sample = (
        rng.standard_normal((2, 3, 224, 224)).astype(np.float32),
        (rng.random((2, RESNET_CLASSES)) > 0.9).astype(np.float32),
    )
    classes = [LabelClass(f"/bench/{i}", f"class {i}") for i in range(RESNET_CLASSES)]
    export_bundle(
        net, out, classes, sample=sample, thresholds_cleaned=[0.5] * RESNET_CLASSES,
        thresholds_scores=[0.5] * RESNET_CLASSES, mode="joint", metrics={},
    )  # fmt: skip


def resnet_bundle() -> Path:
    out = OUT / "resnet50_bundle"
    if not (out / "bundle.json").is_file():
        print("building the resnet50 bundle (once) ...", flush=True)
        subprocess.run([sys.executable, __file__, "--build-resnet50", str(out)], check=True)
    return out


def photos() -> list[bytes]:
    import site

    found = []
    for base in site.getsitepackages():
        found += [(Path(base) / p).read_bytes() for p in PHOTOS if (Path(base) / p).is_file()]
    if not found:
        raise SystemExit("no JPEG photos found (install the train extra: sklearn, matplotlib)")
    return found


def demo_images(bundle: Path, n: int = 64) -> list[bytes]:
    data = bundle.parent.parent / "data" / "images"  # demo/run/bundle -> demo/data/images
    files = sorted(data.glob("*.png"))[:n] if data.is_dir() else []
    if not files:
        raise SystemExit(f"no demo images under {data}")
    return [f.read_bytes() for f in files]


# ---------------------------------------------------------------- raw ONNX Runtime


def raw_onnxruntime(
    bundle_dir: Path, payloads: list[bytes], batches: list[int], device: str = "auto"
) -> dict:
    """In-process OnnxModel.run on preprocessed real images: images/s and batch latency."""
    from labelclean.model.bundle import load_bundle
    from labelclean.model.cleaning import DEFAULT_LIMITS, prepare_image
    from labelclean.model.runtime import OnnxModel

    bundle = load_bundle(bundle_dir)
    model = OnnxModel(bundle, device=device)  # type: ignore[arg-type]
    if not model.ready:
        raise SystemExit(f"raw ONNX Runtime: device={device} but it runs on {model.providers}")
    pixels = [prepare_image(p, bundle.input, DEFAULT_LIMITS) for p in payloads]
    out = {"provider": model.provider}
    for n in batches:
        x = np.stack([pixels[i % len(pixels)] for i in range(n)])
        y = np.zeros((n, bundle.num_classes), np.float32)
        model.run(x, y)  # warm-up
        times = []
        budget = time.perf_counter() + 8
        while len(times) < 3 or (time.perf_counter() < budget and len(times) < 200):
            t0 = time.perf_counter()
            model.run(x, y)
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        out[n] = {"images_per_s": n / median, "batch_ms_p50": 1000 * median, "runs": len(times)}
    return out


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, path: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not come up")


def start_service(bundle: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """``labelclean serve`` on ``bundle``; returns once /readyz is 200 (the provider as asked)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    full_env.update({"LABELCLEAN_LOG_LEVEL": "warning", **env})
    process = subprocess.Popen(
        [sys.executable, "-m", "labelclean.cli", "serve", "--model", str(bundle), "--port",
         str(port)], env=full_env,
    )  # fmt: skip
    wait_up(port, "/readyz", process)
    return process, port


def service_provider(port: int) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["provider"]


def start_bare() -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    wait_up(port, "/docs", process)
    return process, port


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


# ---------------------------------------------------------------- load generator


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


def bench_resnet(levels: list[int], seconds: float, env: dict[str, str]) -> dict:
    bundle = resnet_bundle()
    payloads = photos()
    raw = raw_onnxruntime(bundle, payloads, [1, 8, 32], env["LABELCLEAN_DEVICE"])
    print(f"resnet50 224x224, raw ONNX Runtime in-process on {raw['provider']}:", flush=True)
    for n in (1, 8, 32):
        print(f"  batch {n:<3} {raw[n]['images_per_s']:8.1f} images/s  "
              f"({raw[n]['batch_ms_p50']:.1f} ms per run)", flush=True)  # fmt: skip
    process, port = start_service(bundle, env)
    try:
        provider = service_provider(port)
        print(f"resnet50 service on {provider} (POST /classify, one {len(payloads[0]) // 1024} "
              "KB JPEG photo per request):", flush=True)  # fmt: skip
        service = load_levels(port, payloads, levels, seconds)
    finally:
        stop(process)
    return {"raw": raw, "service": service, "service_provider": provider}


def bench_demo(bundle: Path, levels: list[int], seconds: float, env: dict[str, str]) -> dict:
    payloads = demo_images(bundle)
    raw = raw_onnxruntime(bundle, payloads, [1, 32], env["LABELCLEAN_DEVICE"])
    print(f"demo bundle, raw ONNX Runtime on {raw['provider']}: batch 1 "
          f"{raw[1]['batch_ms_p50']:.2f} ms per run, batch 32 {raw[32]['images_per_s']:.0f} "
          "images/s", flush=True)  # fmt: skip
    process, port = start_bare()
    try:
        print("bare FastAPI endpoint (receives the multipart upload, nothing else):", flush=True)
        bare = load_levels(port, payloads, levels, seconds)
    finally:
        stop(process)
    process, port = start_service(bundle, env)
    try:
        provider = service_provider(port)
        print(f"demo service on {provider} (POST /classify, one 28x28 PNG per request):",
              flush=True)  # fmt: skip
        service = load_levels(port, payloads, levels, seconds)
    finally:
        stop(process)
    return {"raw": raw, "bare": bare, "service": service, "service_provider": provider}


def verdicts(results: dict) -> list[str]:
    lines = []
    if "resnet50" in results:
        r = results["resnet50"]
        svc = next(x for x in r["service"] if x["concurrency"] == 32)
        ratio = svc["requests_per_s"] / r["raw"][32]["images_per_s"]
        lines.append(f"resnet50: service at c=32 is {ratio:.2f}x raw batch-32 throughput "
                     f"(target >= 0.8): {'MET' if ratio >= 0.8 else 'MISSED'}")  # fmt: skip
    if "demo" in results:
        d = results["demo"]
        svc32 = next(x for x in d["service"] if x["concurrency"] == 32)
        bare32 = next(x for x in d["bare"] if x["concurrency"] == 32)
        ratio = svc32["requests_per_s"] / bare32["requests_per_s"]
        lines.append(f"demo: service at c=32 is {ratio:.2f}x the bare endpoint's requests/s "
                     f"(target >= 0.6): {'MET' if ratio >= 0.6 else 'MISSED'}")  # fmt: skip
        svc1 = next(x for x in d["service"] if x["concurrency"] == 1)
        bare1 = next(x for x in d["bare"] if x["concurrency"] == 1)
        budget = bare1["p50_ms"] + d["raw"][1]["batch_ms_p50"] + 5
        lines.append(
            f"demo: service p50 at c=1 is {svc1['p50_ms']:.2f} ms, budget bare "
            f"{bare1['p50_ms']:.2f} + raw {d['raw'][1]['batch_ms_p50']:.2f} + 5 = "
            f"{budget:.2f} ms: {'MET' if svc1['p50_ms'] <= budget else 'MISSED'}"
        )
    return lines


def markdown(results: dict) -> str:
    """The figures as the tables of benchmarks/RESULTS.md."""
    out = [f"Machine: {results['machine']}; load average before the run: "
           f"{results['load_before']:.2f}; settings {results['settings']}.", ""]  # fmt: skip

    def rows(title: str, runs: list[dict]) -> None:
        out.append(f"| {title} | requests/s | p50 ms | p99 ms | mean batch |")
        out.append("|---|---|---|---|---|")
        for r in runs:
            batch = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else ""
            out.append(f"| concurrency {r['concurrency']} | {r['requests_per_s']:.1f} | "
                       f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {batch} |")  # fmt: skip
        out.append("")

    if "resnet50" in results:
        raw = results["resnet50"]["raw"]
        out += ["| resnet50, raw ONNX Runtime | images/s | ms per run |", "|---|---|---|"]
        out += [f"| batch {n} | {raw[n]['images_per_s']:.1f} | {raw[n]['batch_ms_p50']:.1f} |"
                for n in (1, 8, 32)]  # fmt: skip
        out.append("")
        rows("resnet50 service", results["resnet50"]["service"])
    if "demo" in results:
        raw = results["demo"]["raw"]
        out.append(f"Demo bundle, raw ONNX Runtime: batch 1 {raw[1]['batch_ms_p50']:.2f} ms per "
                   f"run; batch 32 {raw[32]['images_per_s']:.0f} images/s.")  # fmt: skip
        out.append("")
        rows("bare FastAPI endpoint", results["demo"]["bare"])
        rows("demo service", results["demo"]["service"])
    out += [f"- {v}" for v in results["verdicts"]]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["resnet50", "demo"])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--duration", type=float, help="seconds per level (default 30 for resnet50, 10 for demo)"
    )
    parser.add_argument("--demo-bundle", type=Path, default=ROOT / "demo" / "run" / "bundle")
    parser.add_argument("--max-batch-size", default="32")
    parser.add_argument("--max-queue-delay-ms", default="5")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="for the service (LABELCLEAN_DEVICE) and raw ONNX Runtime alike; cuda demands it",
    )  # fmt: skip
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    (OUT / "serve").mkdir(parents=True, exist_ok=True)
    env = {"LABELCLEAN_MAX_BATCH_SIZE": args.max_batch_size,
           "LABELCLEAN_MAX_QUEUE_DELAY_MS": args.max_queue_delay_ms,
           "LABELCLEAN_DEVICE": args.device}  # fmt: skip
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor()}",
        "load_before": os.getloadavg()[0],
        "settings": env,
    }
    if args.only in (None, "resnet50"):
        results["resnet50"] = bench_resnet(levels, args.duration or 30, env)
    if args.only in (None, "demo"):
        results["demo"] = bench_demo(args.demo_bundle, levels, args.duration or 10, env)
    results["verdicts"] = verdicts(results)
    print("\n".join(results["verdicts"]))
    (OUT / "serve" / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (OUT / "serve" / "results.md").write_text(markdown(results))
    print(f"written: {OUT / 'serve' / 'results.json'} and results.md")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build-resnet50"]:
        build_resnet50(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["--drive"]:
        drive_main(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
