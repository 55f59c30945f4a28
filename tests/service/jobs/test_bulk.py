"""The bulk job core (service/jobs/steps.py) on real images: every image's rows are what the /clean
path gives for it, broken images and bad CSV rows are listed while the job completes, the
summary counts the rows, storing twice is harmless, reading overlaps inference, and the same
job over moto's S3 server gives the same files."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from labelclean.model.labels import InputError
from labelclean.service.jobs import steps as bulk
from labelclean.service.jobs.steps import JobOptions, JobSpec

from labelclean.storage import Storage

from ..bulk_fixtures import (  # noqa: F401 - fixtures
    UNKNOWN,
    JobFiles,
    bundle,
    bundle_dir,
    check_results,
    job_files,
    onnx,
    read_csv,
    s3,
    upload,
)


def run_job(spec, storage, bundle, onnx, *, chunk_size=8, batch_size=4, dead=None, skip=()):  # noqa: F811
    """plan -> process -> store every chunk -> finalize, as a worker would (but in one loop)."""
    job = bulk.plan(spec, storage, chunk_size=chunk_size, label_index=bundle.index)

    async def predict(x, y):
        return await asyncio.to_thread(onnx.run, x, y)

    for n in range(job.chunks):
        if n in skip or bulk.chunk_stored(spec, storage, n):
            continue
        chunk = bulk.load_chunk(spec, storage, n)
        result = asyncio.run(
            bulk.process_chunk(
                chunk,
                bundle=bundle,
                predict=predict,
                storage=storage,
                batch_size=batch_size,
                thresholds=spec.options.thresholds,
            )  # fmt: skip
        )
        bulk.store_chunk(spec, storage, n, result)
    return job, bulk.finalize(spec, storage, job.chunks, dead=dead or {})


def local_spec(files: JobFiles, **options) -> JobSpec:
    return JobSpec(
        images=f"file://{files.images}", labels=str(files.labels),
        output=f"file://{files.root}/out", options=JobOptions(**options),
    )  # fmt: skip


def test_job_over_local_files_matches_clean(job_files: JobFiles, bundle, onnx):  # noqa: F811
    storage = Storage(file_roots=[job_files.root])
    spec = local_spec(job_files)
    bulk.validate_spec(spec, storage, bundle.index)
    job, summary = run_job(spec, storage, bundle, onnx)
    assert (job.total, job.errors, job.chunks) == (len(job_files.good) + 2, 2, 4)
    check_results(job_files, job_files.root / "out", bundle, onnx, summary)
    # Everything again: planning reuses the plan, stored chunks stay, the same files come out.
    before = {p: p.read_bytes() for p in (job_files.root / "out").rglob("*") if p.is_file()}
    assert run_job(spec, storage, bundle, onnx)[1] == summary
    after = {p: p.read_bytes() for p in (job_files.root / "out").rglob("*") if p.is_file()}
    assert after == before
    assert b"".join(bulk.open_results(spec, storage)) == before[job_files.root / "out/cleaned.csv"]


def test_thresholds_option_reaches_clean(job_files: JobFiles, bundle, onnx):  # noqa: F811
    thresholds = {"/fm/tshirt": 0.05, "/fm/bag": 0.95}
    spec = local_spec(job_files, thresholds=thresholds)
    storage = Storage(file_roots=[job_files.root])
    _, summary = run_job(spec, storage, bundle, onnx, chunk_size=100, batch_size=32)
    check_results(job_files, job_files.root / "out", bundle, onnx, summary, thresholds=thresholds)


def test_planning_is_deterministic(job_files: JobFiles, bundle, tmp_path: Path):  # noqa: F811
    storage = Storage.local()
    outs = []
    for name in ("a", "b"):
        spec = local_spec(job_files).model_copy(update={"output": str(tmp_path / name)})
        bulk.plan(spec, storage, chunk_size=7, label_index=bundle.index)
        work = tmp_path / name / "_work"
        outs.append({p.relative_to(work): p.read_bytes() for p in work.rglob("*") if p.is_file()})
    planned = sorted(set(job_files.data) - {UNKNOWN})  # refused while planning
    assert outs[0] == outs[1] and len(outs[0]) == 2 + -(-len(planned) // 7)  # + plan, errors
    items = [json.loads(x) for x in outs[0][Path("chunks/000000.jsonl")].splitlines()]
    assert [i["id"] for i in items] == planned[:7]
    assert items[0]["labels"] == job_files.given[items[0]["id"]]


def test_store_twice_and_dead_chunks(job_files: JobFiles, bundle, onnx):  # noqa: F811
    storage = Storage(file_roots=[job_files.root])
    spec = local_spec(job_files)
    job, _ = run_job(spec, storage, bundle, onnx, skip={1}, dead={1: "worker died 3 times"})
    dead_ids = [i.id for i in bulk.load_chunk(spec, storage, 1).items]
    out = job_files.root / "out"
    reasons = dict(read_csv(out / "errors.csv")[1:])
    for image in dead_ids:
        assert reasons[image] == "chunk 1 failed and was given up: worker died 3 times"
    assert not set(dead_ids) & {r[0] for r in read_csv(out / "cleaned.csv")[1:]}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dead_chunks"] == [1] and summary["images"] == job.total + job.errors
    with pytest.raises(RuntimeError, match="chunk 1 has no stored results"):
        bulk.finalize(spec, storage, job.chunks, dead={})
    # Chunk 1 cleaned after all, and stored twice: the same results as one clean run.
    _, summary = run_job(spec, storage, bundle, onnx)
    bulk.store_chunk(spec, storage, 0, _process(spec, storage, bundle, onnx, 0))
    summary = bulk.finalize(spec, storage, job.chunks, dead={1: "ignored once stored"})
    check_results(job_files, out, bundle, onnx, summary)


def _process(spec, storage, bundle, onnx, n):  # noqa: F811
    chunk = bulk.load_chunk(spec, storage, n)
    return asyncio.run(bulk.process_chunk(chunk, bundle=bundle, predict=onnx.run, storage=storage))


def test_reading_overlaps_inference(job_files: JobFiles, bundle, onnx):  # noqa: F811
    """Reads (0.1 s each, as from a slow bucket) of the next batches happen while a batch is in
    predict (0.15 s), so predict is hardly ever kept waiting; predict runs one batch at a time."""
    storage = Storage.local()
    spec = local_spec(job_files)
    bulk.plan(spec, storage, chunk_size=100, label_index=bundle.index)
    chunk = bulk.load_chunk(spec, storage, 0)
    reads: list[float] = []
    read = storage.read_bytes

    def slow_read(uri: str) -> bytes:
        reads.append(time.monotonic())
        time.sleep(0.1)
        return read(uri)

    storage.read_bytes = slow_read  # type: ignore[method-assign]
    spans: list[tuple[float, float]] = []
    running = []

    def slow_predict(x, y):
        running.append(1)
        assert len(running) == 1, "two batches in predict at once"
        start = time.monotonic()
        time.sleep(0.15)
        out = onnx.run(x, y)
        spans.append((start, time.monotonic()))
        running.pop()
        return out

    async def predict(x, y):
        return await asyncio.to_thread(slow_predict, x, y)

    result = asyncio.run(
        bulk.process_chunk(chunk, bundle=bundle, predict=predict, storage=storage, batch_size=4)
    )
    assert len(spans) == 8 and result.done == len(job_files.good)
    overlapped = sum(any(s < t < e for t in reads) for s, e in spans)
    assert overlapped >= 5  # every predict but the first and the last two
    waiting = sum(b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False))
    assert waiting < 0.4  # one read after another would leave predict idle 7 x 0.1 s


def test_a_failing_predict_fails_the_chunk_and_stops_its_batches(job_files, bundle, onnx):  # noqa: F811
    storage = Storage.local()
    spec = local_spec(job_files)
    bulk.plan(spec, storage, chunk_size=100, label_index=bundle.index)
    chunk = bulk.load_chunk(spec, storage, 0)
    calls = []

    def predict(x, y):
        calls.append(len(x))
        if len(calls) == 2:
            raise RuntimeError("GPU fell over")
        return onnx.run(x, y)

    async def run() -> tuple[int, int]:
        with pytest.raises(RuntimeError, match="GPU fell over"):
            await bulk.process_chunk(
                chunk, bundle=bundle, predict=predict, storage=storage, batch_size=4
            )
        raised = len(calls)
        await asyncio.sleep(0.3)  # batches still under way would predict meanwhile
        return raised, len(calls)

    raised, later = asyncio.run(run())
    assert raised == later < 8  # the chunk's other batches were stopped, not left running


def test_unreadable_images_are_listed_and_the_rest_cleaned(job_files, bundle, onnx, tmp_path):  # noqa: F811
    """A symlink out of the file roots and an image gone after planning: each is an error line
    naming why; the job completes."""
    outside = tmp_path / "outside.png"
    outside.write_bytes(job_files.data["img-0001"])
    (job_files.images / "img-link.png").symlink_to(outside)
    storage = Storage(file_roots=[job_files.root])
    spec = local_spec(job_files)
    job = bulk.plan(spec, storage, chunk_size=100, label_index=bundle.index)
    (job_files.images / "img-0002.png").unlink()
    _, summary = run_job(spec, storage, bundle, onnx)
    reasons = dict(read_csv(job_files.root / "out" / "errors.csv")[1:])
    assert (
        reasons["img-link"].startswith("unreadable: ")
        and "outside the allowed" in reasons["img-link"]
    )
    assert reasons["img-0002"].startswith("unreadable: ") and "not found" in reasons["img-0002"]
    assert summary["failed"] == 6 and summary["cleaned"] == job.total - 4
    cleaned = {r[0] for r in read_csv(job_files.root / "out" / "cleaned.csv")[1:]}
    assert not cleaned & {"img-link", "img-0002"}


def test_validate_spec_names_the_field(job_files: JobFiles, bundle, tmp_path: Path):  # noqa: F811
    storage = Storage(file_roots=[job_files.root])
    good = local_spec(job_files)
    bulk.validate_spec(good, storage, bundle.index)

    def refused(field: str, match: str, **change) -> None:
        spec = good.model_copy(update=change)
        with pytest.raises(InputError, match=match) as info:
            bulk.validate_spec(spec, storage, bundle.index)
        assert info.value.field == field

    refused("images", "folder not found", images=f"file://{job_files.root}/nope")
    refused("images", "no images", images=f"file://{job_files.root}")
    refused("images", "outside the allowed roots", images=f"{job_files.images}/../../..")
    refused("images", "protocol 'http' is not allowed", images="http://example.com/x/")
    refused("labels", "not found", labels=f"{job_files.root}/missing.csv")
    bad = job_files.root / "bad.csv"
    bad.write_text("ImageID,Source,LabelName\nimg-0000,machine,/fm/bag\n")
    refused("labels", "line 1: expected the header .*lacks Confidence", labels=str(bad))
    bad.write_text("ImageID,Source,LabelName,Confidence\nimg-0000,machine,/fm/bag,high\n")
    refused("labels", r"line 2: Confidence is not a number in \[0, 1\]$", labels=str(bad))
    refused("output", "outside the allowed roots", output=str(tmp_path / "elsewhere"))
    options = JobOptions(thresholds={"/fm/nope": 0.5})
    refused("options.thresholds", "unknown label", options=options)
    # Another job's work under the same output is not mixed in.
    bulk.plan(good, storage, chunk_size=8)
    other = job_files.root / "other.csv"
    other.write_bytes(job_files.labels.read_bytes())
    refused("output", "already holds another job", labels=str(other))


def test_job_over_s3_gives_the_same_files(s3: str, job_files: JobFiles, bundle, onnx):  # noqa: F811
    upload(s3, "jobs", job_files)
    storage = Storage(roots=["s3://jobs/"], protocols=("s3",), s3_endpoint_url=s3)
    spec = JobSpec(
        images="s3://jobs/images/", labels="s3://jobs/labels.csv", output="s3://jobs/out"
    )
    bulk.validate_spec(spec, storage, bundle.index)
    _, summary = run_job(spec, storage, bundle, onnx)
    local = Storage(file_roots=[job_files.root])
    _, local_summary = run_job(local_spec(job_files), local, bundle, onnx)
    out = job_files.root / "out"
    for name in ("cleaned.csv", "errors.csv"):
        got = storage.read_bytes(f"s3://jobs/out/{name}").decode()
        want = (out / name).read_text()
        if name == "errors.csv":  # the ghost's reason names the images prefix
            got = got.replace("s3://jobs/images/", f"file://{job_files.images}")
        assert got == want
    assert {k: v for k, v in summary.items() if k != "files"} == {
        k: v for k, v in local_summary.items() if k != "files"
    }
    check_results(job_files, out, bundle, onnx, local_summary)
