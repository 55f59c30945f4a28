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
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import OUT, ROOT, built_once, export_random_bundle, free_port, stop_process, wait_up
from serve_load import drive_main, load_levels
from serve_report import markdown, verdicts

RESNET_CLASSES = 100
PHOTOS = [  # real photographs shipped inside installed packages
    "sklearn/datasets/images/china.jpg",
    "sklearn/datasets/images/flower.jpg",
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
]

BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request
from labelclean.service.http.server import uvicorn_options
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
    from labelclean.model.config import InputSpec

    spec = InputSpec(224, 224, 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    ids = [f"/bench/{i}" for i in range(RESNET_CLASSES)]
    export_random_bundle(out, spec, ids, backbone="resnet50", label_density=0.9)


def resnet_bundle() -> Path:
    command = [sys.executable, __file__, "--build-resnet50", str(OUT / "resnet50_bundle")]
    return built_once(OUT / "resnet50_bundle", "the resnet50 bundle", command)


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


# ---------------------------------------------------------------- the benchmark


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
        stop_process(process)
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
        stop_process(process)
    process, port = start_service(bundle, env)
    try:
        provider = service_provider(port)
        print(f"demo service on {provider} (POST /classify, one 28x28 PNG per request):",
              flush=True)  # fmt: skip
        service = load_levels(port, payloads, levels, seconds)
    finally:
        stop_process(process)
    return {"raw": raw, "bare": bare, "service": service, "service_provider": provider}


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
