"""Plan and finalize of a bulk job at 100k, 1M and 10M images (issue 17, part 5): peak RSS and
images/s of each step, each run in a fresh process.

    .venv/bin/python benchmarks/plan_bench.py --bundle RUN/bundle                 # 100k, 1M, 10M
    .venv/bin/python benchmarks/plan_bench.py --bundle RUN/bundle --sizes 20000 --files-up-to 0
    .venv/bin/python benchmarks/plan_bench.py --bundle RUN/bundle --sizes '' \\
        --clean-sizes 100000,1000000 --data DEMO_DATA        # labelclean clean, end to end

What runs, per size N (under ``--out``, default benchmarks/out/plan/, removed after unless
``--keep``):
- the inputs: a labels CSV of N images (ImageIDs ``%016x`` of 0..N-1, ``--rows-per-image``
  machine labels each among the bundle's classes, in ImageID order as Open Images ships its CSVs,
  or shuffled with ``--shuffled-labels``), and the images: N empty files ``<ImageID>.jpg`` in one
  local folder while N <= ``--files-up-to`` (planning never reads an image), else a generated
  listing (the storage's ``list`` of that folder yields the N names in a scrambled order, as a
  local folder lists) where N files would not fit the disk's inodes;
- ``plan``: a process that loads the bundle (as a worker or ``labelclean clean`` has it loaded)
  and runs ``service.jobs.steps.plan`` on local files: listing, the CSV, chunk manifests of
  ``--chunk-size`` images under the output's ``_work/``, plan-errors.csv, plan.json;
- ``finalize``: chunk results are generated for every manifest (what the workers would store:
  each image's rows, kept or removed, ``--added`` added labels per image), then a process that
  loads the bundle runs ``service.jobs.steps.finalize``: cleaned.csv, errors.csv, summary.json.
Each step reports its wall time, CPU time, images/s and peak RSS (VmHWM of the step's process),
and the RSS after loading the bundle (before the step). With ``--clean-sizes``, ``labelclean
clean`` also runs end to end on real images (plan, cleaning, finalize, tidy-up). Figures go to
stdout and ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, machine, pick_images

STEP = r"""
import json, math, sys, time
from pathlib import Path
from labelclean.model.bundle import load_bundle
from labelclean.service import bulk
from labelclean.storage import Storage

def kib(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])

step, root, bundle_path, chunk_size, generated = sys.argv[1:6]
root = Path(root)
bundle = load_bundle(bundle_path)


class Generated(Storage):
    '''Local files, but the images folder lists ``generated`` names without their files.'''

    def list(self, prefix):
        if prefix != spec.images:
            yield from super().list(prefix)
            return
        n = int(generated)
        stride = 2654435761 % n or 1
        while math.gcd(stride, n) != 1:
            stride += 1
        for i in range(n):
            name = f"{(i * stride) % n:016x}.jpg"
            yield name, prefix + name


storage = Generated.local() if int(generated) else Storage.local()
spec = bulk.JobSpec(images=f"file://{root}/images/", labels=f"file://{root}/labels.csv",
                    output=f"file://{root}/out/")
before = kib("VmRSS")
start, cpu = time.perf_counter(), time.process_time()
if step == "plan":
    plan = bulk.plan(spec, storage, chunk_size=int(chunk_size), label_index=bundle.index,
                     model=bundle.sha256)
    got = {"images": plan.total, "errors": plan.errors, "chunks": plan.chunks}
else:
    chunks = json.loads((root / "out" / "_work" / "plan.json").read_text())["chunks"]
    summary = bulk.finalize(spec, storage, chunks, dead={})
    got = {"images": summary["images"], "errors": summary["failed"], "chunks": chunks,
           "labels": summary["labels"]["input"] + summary["labels"]["added"]}
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({**got, "seconds": seconds, "cpu_s": cpu, "rss_loaded_kib": before,
                  "peak_kib": kib("VmHWM")}))
"""


def write_labels(path: Path, n: int, labels: list[str], per_image: int, shuffled: bool) -> int:
    """The labels CSV: ``per_image`` distinct labels of each image; returns the row count."""
    rnd = random.Random(0)
    order: Any = range(n)
    if shuffled:
        order = list(order)
        rnd.shuffle(order)
    rows = 0
    with path.open("w") as fh:
        fh.write("ImageID,Source,LabelName,Confidence\n")
        block = []
        for i in order:
            image = f"{i:016x}"
            for label in rnd.sample(labels, per_image):
                block.append(f"{image},machine,{label},{rnd.randrange(1, 10000) / 10000}\n")
            if len(block) > 10000:
                fh.write("".join(block))
                rows += len(block)
                block = []
        fh.write("".join(block))
        rows += len(block)
    return rows


def write_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        os.close(os.open(folder / f"{i:016x}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))


def write_parts(out: Path, chunks: int, added: int, labels: list[str]) -> None:
    """What the workers would store for each chunk manifest: its rows, no errors, its summary."""
    work = out / "_work"
    (work / "parts").mkdir(parents=True, exist_ok=True)
    for n in range(chunks):
        manifest = (work / "chunks" / f"{n:06d}.jsonl").read_text().splitlines()
        rows, counts = [], {}
        for k, line in enumerate(manifest):
            item = json.loads(line)
            for j, given in enumerate(item["labels"]):
                verdict = "removed" if (k + j) % 5 == 0 else "kept"
                score = given["confidence"]
                rows.append(f"{item['id']},labelclean,{given['label']},{score},{verdict},"
                            f"{round(1 - score, 6)},{score},\n")  # fmt: skip
                counts.setdefault(given["label"], {"kept": 0, "removed": 0, "added": 0})
                counts[given["label"]][verdict] += 1
            for j in range(added):
                label = labels[(k + j) % len(labels)]
                rows.append(f"{item['id']},labelclean,{label},0.91,added,0.91,0.0,\n")
                counts.setdefault(label, {"kept": 0, "removed": 0, "added": 0})["added"] += 1
        part = work / "parts" / f"{n:06d}"
        Path(f"{part}.csv").write_text("".join(rows))
        Path(f"{part}.errors.csv").write_text("")
        summary = {"chunk": n, "done": len(manifest), "failed": 0, "classes": counts}
        Path(f"{part}.summary.json").write_text(json.dumps(summary, sort_keys=True))


def run_step(step: str, root: Path, args: argparse.Namespace, generated: int) -> dict[str, Any]:
    reply = subprocess.run(
        [sys.executable, "-c", STEP, step, str(root), str(args.bundle), str(args.chunk_size),
         str(generated)],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    if reply.returncode:
        sys.exit(f"{step} at {root} failed:\n{reply.stderr[-3000:]}")
    got = json.loads(reply.stdout.strip().splitlines()[-1])
    got["images_per_s"] = round(got["images"] / got["seconds"])
    got["peak_mib"] = round(got.pop("peak_kib") / 1024, 1)
    got["rss_loaded_mib"] = round(got.pop("rss_loaded_kib") / 1024, 1)
    got["seconds"] = round(got["seconds"], 2)
    got["cpu_s"] = round(got["cpu_s"], 2)  # the step's process, all its threads
    return got


def bench(n: int, args: argparse.Namespace, labels: list[str]) -> dict[str, Any]:
    root = args.out / f"n{n}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.perf_counter()
    rows = write_labels(root / "labels.csv", n, labels, args.rows_per_image, args.shuffled_labels)
    generated = 0 if n <= args.files_up_to else n
    if generated:
        (root / "images").mkdir()
    else:
        write_files(root / "images", n)
    print(f"{n} images: inputs in {time.perf_counter() - start:.0f} s", flush=True)
    row: dict[str, Any] = {"images": n, "label_rows": rows,
                           "listing": "generated" if generated else "local files"}  # fmt: skip
    row["plan"] = run_step("plan", root, args, generated)
    print(f"  plan: {_line(row['plan'])}", flush=True)
    write_parts(root / "out", row["plan"]["chunks"], args.added, labels)
    row["finalize"] = run_step("finalize", root, args, generated)
    row["cleaned_csv_mib"] = round((root / "out" / "cleaned.csv").stat().st_size / 2**20, 1)
    print(f"  finalize: {_line(row['finalize'])}, cleaned.csv {row['cleaned_csv_mib']} MiB",
          flush=True)  # fmt: skip
    if not args.keep:
        shutil.rmtree(root)
    return row


def clean_run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """``labelclean clean`` from spawn to exit on ``n`` real images: the demo data's labelled
    train images, replicated under new ImageIDs past its count, as hard links (the storage layer
    does not follow a symlink out of its folder), with their machine labels (CSV in ImageID
    order). Peak RSS from GNU time (``%M``)."""
    root = args.out / f"clean{n}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    chosen, labels, replicated = pick_images(args.data, n)
    for new, source in chosen:
        os.link(args.data / "images" / f"{source}.png", root / "images" / f"{new}.png")
    (root / "labels.csv").write_bytes(labels)
    labelclean = str(Path(sys.executable).parent / "labelclean")
    command = [
        "/usr/bin/time", "-f", "%e %U %S %M", labelclean, "clean", "--model", str(args.bundle),
        "--images", str(root / "images"), "--labels", str(root / "labels.csv"),
        "--out", str(root / "out"), "--device", "cpu", "--quiet",
    ]  # fmt: skip
    reply = subprocess.run(command, capture_output=True, text=True, cwd="/")
    if reply.returncode:
        sys.exit(f"labelclean clean of {n} images failed:\n{reply.stderr[-3000:]}")
    wall, user, system, peak_kib = reply.stderr.strip().splitlines()[-1].split()
    summary = json.loads((root / "out" / "summary.json").read_text())
    row = {
        "images": n, "replicated": replicated, "label_rows": labels.count(b"\n") - 1,
        "cleaned": summary["cleaned"], "failed": summary["failed"], "seconds": float(wall),
        "cpu_s": round(float(user) + float(system), 1), "images_per_s": round(n / float(wall)),
        "peak_mib": round(int(peak_kib) / 1024, 1),
    }  # fmt: skip
    print(f"labelclean clean, {n} images ({replicated} replicated): {row['seconds']} s, "
          f"{row['images_per_s']} images/s, peak RSS {row['peak_mib']} MiB",
          flush=True)  # fmt: skip
    if not args.keep:
        shutil.rmtree(root)
    return row


def _line(step: dict[str, Any]) -> str:
    return (f"{step['seconds']} s ({step['cpu_s']} s CPU), {step['images_per_s']} images/s, "
            f"peak RSS {step['peak_mib']} MiB "
            f"(bundle loaded: {step['rss_loaded_mib']} MiB)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a model bundle folder")
    parser.add_argument("--sizes", default="100000,1000000,10000000",
                        help="images, comma-separated ('' for none)")  # fmt: skip
    parser.add_argument("--files-up-to", type=int, default=1_000_000,
                        help="real (empty) image files up to this many images, a generated "
                        "listing above (default 1000000)")  # fmt: skip
    parser.add_argument("--rows-per-image", type=int, default=6,
                        help="machine labels per image (the demo data has 5.9)")  # fmt: skip
    parser.add_argument("--added", type=int, default=1, help="added labels per image in results")
    parser.add_argument(
        "--shuffled-labels",
        action="store_true",
        help="the labels CSV in random image order (default: ImageID order)",
    )
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "plan")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--clean-sizes", default="",
                        help="also run `labelclean clean` end to end on this many real images "
                        "each (comma-separated; needs --data)")  # fmt: skip
    parser.add_argument("--data", type=Path,
                        help="demo data (labelclean demo-data) for --clean-sizes")  # fmt: skip
    args = parser.parse_args()
    if args.clean_sizes and args.data is None:
        parser.error("--clean-sizes needs --data")
    from labelclean.model.bundle import load_bundle

    labels = list(load_bundle(args.bundle).index)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [bench(int(n), args, labels) for n in args.sizes.split(",") if n]
    cleans = [clean_run(int(n), args) for n in args.clean_sizes.split(",") if n]
    for row in rows:
        for step in ("plan", "finalize"):
            row[step]["peak_vs_first"] = round(row[step]["peak_mib"] / rows[0][step]["peak_mib"], 3)
    for row in cleans:
        row["peak_vs_first"] = round(row["peak_mib"] / cleans[0]["peak_mib"], 3)
    result = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
              "runs": rows, "clean": cleans}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    for row in rows:
        print(f"{row['images']:>10} images ({row['listing']}, {row['label_rows']} label rows): "
              f"plan {row['plan']['images_per_s']} img/s, peak {row['plan']['peak_mib']} MiB "
              f"(x{row['plan']['peak_vs_first']}); finalize {row['finalize']['images_per_s']} "
              f"img/s, peak {row['finalize']['peak_mib']} MiB "
              f"(x{row['finalize']['peak_vs_first']})")  # fmt: skip
    for row in cleans:
        print(f"{row['images']:>10} images: labelclean clean {row['images_per_s']} img/s, peak "
              f"{row['peak_mib']} MiB (x{row['peak_vs_first']})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
