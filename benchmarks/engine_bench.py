"""Per-request CPU of the inference process's engine, without HTTP, against the class count.

    .venv/bin/python benchmarks/engine_bench.py                # demo bundle and a 6,012-class one
    .venv/bin/python benchmarks/engine_bench.py --requests 6000

The engine (service.inference.engine: decode, dynamic batcher, ONNX Runtime with one thread, the
shared classify/clean functions, JSON) answers /classify (``top_k`` 10) and /clean (two noisy labels
per image) for one real 28x28 PNG per request, 32 requests in flight, on one event loop. It prints
process CPU and main-thread CPU per request (the best of three rounds), so costs that grow with the
number of classes show up: Open Images, the paper's data set, has 6,012.

- demo: demo/run/bundle (`make run` builds it), 15 classes.
- wide: the demo's small CNN with 6,012 classes and random weights, exported once by the
  project's export path into benchmarks/out/wide_bundle (a subprocess that imports torch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

from common import OUT, ROOT, built_once, export_random_bundle

WIDE_CLASSES = 6012
IN_FLIGHT = 32


def build_wide(out: Path) -> None:
    """Export a random-weight small CNN joint network with 6,012 classes (imports torch)."""
    from labelclean.model.config import InputSpec

    ids = [f"/m/{i:05x}" for i in range(WIDE_CLASSES)]
    export_random_bundle(
        out, InputSpec(28, 28, 1, [0.5], [0.5]), ids, label_density=0.99,
        random_thresholds=(0.3, 0.99),
    )  # fmt: skip


def wide_bundle() -> Path:
    command = [sys.executable, __file__, "--build-wide", str(OUT / "wide_bundle")]
    return built_once(OUT / "wide_bundle", "the 6,012-class bundle", command)


async def measure(bundle_dir: Path, images: list[bytes], requests: int) -> dict[str, dict]:
    from labelclean.model.bundle import load_bundle
    from labelclean.service.inference.engine import Engine

    from labelclean.settings import Settings

    ids = [c.id for c in load_bundle(bundle_dir).classes]
    labels = [json.dumps([ids[(7 * k) % len(ids)], ids[(7 * k + 3) % len(ids)]]) for k in range(64)]
    engine = Engine(Settings(model=bundle_dir, log_level="warning", inference_threads=1))
    await engine.load()
    if not engine.ready:
        raise SystemExit(f"{bundle_dir}: {engine.reason}")

    async def classify(k: int) -> None:
        await engine.classify([images[k % len(images)]], ["x.png"], top_k=10)

    async def clean(k: int) -> None:
        await engine.clean([images[k % len(images)]], ["x.png"], labels=[labels[k % 64]])

    results = {}
    for name, call in (("classify", classify), ("clean", clean)):

        async def caller(first: int, n: int, call=call) -> None:
            for j in range(n):
                await call(first + j)

        await asyncio.gather(*(caller(k, 20) for k in range(IN_FLIGHT)))  # warm-up
        rounds = []
        for _ in range(3):
            cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
            await asyncio.gather(*(caller(k, requests // IN_FLIGHT) for k in range(IN_FLIGHT)))
            n = requests // IN_FLIGHT * IN_FLIGHT
            rounds.append(
                {
                    "process_cpu_us": (time.process_time() - cpu0) / n * 1e6,
                    "main_thread_cpu_us": (time.thread_time() - main0) / n * 1e6,
                    "requests_per_s": n / (time.perf_counter() - wall0),
                }
            )
        results[name] = min(rounds, key=lambda r: r["process_cpu_us"])
    await engine.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-bundle", type=Path, default=ROOT / "demo" / "run" / "bundle")
    parser.add_argument("--requests", type=int, default=3000, help="per round (three rounds)")
    parser.add_argument("--build-wide", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_wide:
        build_wide(args.build_wide)
        return
    data = args.demo_bundle.parent.parent / "data" / "images"
    images = [f.read_bytes() for f in sorted(data.glob("*.png"))[:64]]
    if not images:
        raise SystemExit(f"no demo images under {data} (run `make run` once to build the demo)")
    print(f"{platform.node()}: {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}")  # fmt: skip
    figures = {}
    for name, bundle_dir in (("demo", args.demo_bundle), ("wide", wide_bundle())):
        figures[name] = asyncio.run(measure(bundle_dir, images, args.requests))
        for kind, r in figures[name].items():
            print(
                f"{name:5} {kind:9} process CPU {r['process_cpu_us']:7.0f} us/request, "
                f"main thread {r['main_thread_cpu_us']:7.0f}, {r['requests_per_s']:6.0f} req/s"
            )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engine_results.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
