"""A bulk cleaning job in one process, without Redis: what ``labelclean clean`` runs.

    summary = run_offline(JobSpec(images=..., labels=..., output=...), "run/bundle")

The same job code as the workers (service/jobs/steps.py): plan (or reuse the stored plan), clean
every chunk not yet stored, finalize, then remove ``_work/`` unless ``options.keep_work``.
Interrupted, it resumes: a rerun skips the stored chunks. Chunk ``n+1`` is cleaned while chunk ``n``
is being stored. Torch-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...model.bundle import load_bundle
from ...model.cleaning import DEFAULT_LIMITS, ImageLimits
from ...model.runtime import Device, OnnxModel
from ...settings import MAX_IMAGE_BYTES
from ...storage import Storage
from . import leftovers
from .steps import (
    JobSpec,
    Plan,
    chunk_stored,
    finalize,
    load_chunk,
    plan,
    process_chunk,
    store_chunk,
    validate_spec,
)

DEFAULT_CHUNK_SIZE = 1000
READ_THREADS = 16  # image reads wait on storage (S3 round trips), not on the CPU


def chunk_images(p: Plan, n: int) -> int:
    """How many images chunk ``n`` of the plan holds."""
    return max(0, min(p.chunk_size, p.total - n * p.chunk_size))


@contextlib.contextmanager
def _naming(n: int, job: Plan) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise RuntimeError(
            f"chunk {n} of {job.chunks} failed ({type(exc).__name__}: {exc}); the chunks "
            "finished before it are stored: rerun the same command to resume"
        ) from exc


def run_offline(
    spec: JobSpec,
    bundle_path: Path | str,
    *,
    storage: Storage | None = None,
    device: Device = "auto",
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = 32,
    limits: ImageLimits = DEFAULT_LIMITS,
    max_image_bytes: int = MAX_IMAGE_BYTES,
) -> dict[str, Any]:
    """Clean the job's images and write cleaned.csv, errors.csv, summary.json under
    ``spec.output``; returns the summary. ``storage`` defaults to ``Storage.local()``; an
    image over ``max_image_bytes`` is an error line, not read.
    Bad inputs raise InputError naming the field (images, labels, output, options.thresholds)
    before any work; a chunk that fails stops the run (RuntimeError naming it) with the chunks
    before it stored."""
    started = time.time()
    storage = storage or Storage.local()
    bundle = load_bundle(bundle_path)
    validate_spec(spec, storage, bundle.index, bundle.decision)
    job = plan(spec, storage, chunk_size=chunk_size, label_index=bundle.index, model=bundle.sha256)
    todo = [n for n in range(job.chunks) if not chunk_stored(spec, storage, n)]
    model = OnnxModel(bundle, device=device)
    from tqdm import tqdm

    bar = tqdm(
        total=job.total, initial=job.total - sum(chunk_images(job, n) for n in todo),
        unit="img", desc="cleaning", disable=not progress, dynamic_ncols=True,
    )  # fmt: skip
    with bar, ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read") as pool:

        async def offload(fn: Any, *args: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

        async def predict(images: Any, noisy: Any) -> Any:
            return await asyncio.to_thread(model.run, images, noisy)

        async def run() -> None:
            storing: tuple[int, asyncio.Future[Any]] | None = None
            try:
                for n in todo:
                    with _naming(n, job):
                        chunk = await offload(load_chunk, spec, storage, n)
                        result = await process_chunk(
                            chunk, bundle=bundle, predict=predict, storage=storage,
                            limits=limits, thresholds=spec.options.thresholds,
                            min_precision=spec.options.min_precision, offload=offload,
                            batch_size=batch_size, on_batch=bar.update,
                            max_image_bytes=max_image_bytes,
                        )  # fmt: skip
                    if storing is not None:
                        with _naming(storing[0], job):
                            await storing[1]
                    store = offload(store_chunk, spec, storage, n, result)
                    storing = n, asyncio.ensure_future(store)
            finally:  # also when a later chunk failed: the finished one is stored
                if storing is not None and not storing[1].done():
                    with _naming(storing[0], job):
                        await storing[1]

        asyncio.run(run())
    summary = finalize(spec, storage, job.chunks, dead={})
    # As a worker does after a job: the temporary files of writers stopped before this run, and
    # _work/ (a copy of the results and the manifests) unless options.keep_work.
    leftovers.clean(storage, spec.output, before=started)
    if not spec.options.keep_work:
        leftovers.remove_work(storage, spec.output)
    return summary
