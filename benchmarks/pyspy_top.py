"""Where a process spent its CPU, from a py-spy profile in collapsed-stack (``--format raw``)
form, as ``benchmarks/jobs_bench.py --profile`` writes them (``LOGS/<run>.pyspy.txt``).

    .venv/bin/python benchmarks/pyspy_top.py LOGS/w1-20000-1-w0.pyspy.txt [--top 40]

Prints the share of samples per thread, per coarse category (S3 client, image decoding,
ONNX Runtime, Redis, ...; first match from the leaf up) and the functions with the largest
inclusive share. py-spy records on-CPU samples only (idle threads are left out).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

# (category, substrings of a frame): a stack goes to the first category any of its frames
# matches, in this order; one whose leaf is a wait (select, a lock) goes to "waiting".
CATEGORIES = [
    ("import", ("<frozen importlib",)),
    ("onnxruntime", ("onnxruntime", "OnnxModel.run")),
    ("image decode/resize", ("PIL/", "model/preprocess.py")),
    ("redis", ("redis/",)),
    (
        "S3 client (s3fs, aiobotocore, aiohttp)",
        ("s3fs/", "aiobotocore/", "botocore/", "aiohttp/", "aiohappyeyeballs/"),
    ),  # fmt: skip
    ("csv/json of the job", ("service/jobs/steps", "csv", "json/")),
    (
        "asyncio, threads",
        ("asyncio/", "threading.py", "service/inference/threads.py", "concurrent/"),
    ),
]


def load(path: Path) -> collections.Counter[str]:
    stacks: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack:
            stacks[stack] += int(count)
    return stacks


WAITS = ("select (selectors.py", "Condition.wait", "Event.wait", "SimpleQueue.get")


def category(frames: list[str]) -> str:
    if frames and any(w in frames[-1] for w in WAITS):
        return "waiting (leaf: select or a lock; sampled as on-CPU)"
    for name, needles in CATEGORIES:
        if any(n in frame for frame in frames for n in needles):
            return name
    return "other (no Python frame: native code)" if not frames else "other Python"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path, nargs="+", help="py-spy raw (collapsed stack) files")
    p.add_argument("--top", type=int, default=30, help="functions listed by inclusive share")
    args = p.parse_args()
    for path in args.profile:
        stacks = load(path)
        total = sum(stacks.values()) or 1
        threads: collections.Counter[str] = collections.Counter()
        kinds: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for stack, n in stacks.items():
            thread, *frames = stack.split(";")
            threads[thread.split(": ", 1)[-1]] += n
            kinds[category(frames)] += n
            for frame in set(frames):
                inclusive[frame] += n
        print(f"{path}: {total} samples ({total / 100:.1f} s at py-spy's 100 Hz)")
        for title, counter, limit in (("thread", threads, 12), ("category", kinds, 12),
                                      ("inclusive", inclusive, args.top)):  # fmt: skip
            print(f"  by {title}:")
            for name, n in counter.most_common(limit):
                print(f"    {100 * n / total:5.1f}%  {name[:140]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
