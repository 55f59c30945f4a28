"""What a worker does with one bulk-job message (service.jobs.worker runs the loop around it), with
the job core (service.jobs.steps):

    plan      list the images, write the chunk manifests; enqueue one message per chunk
    chunk     clean the chunk's images (the same clean_images as POST /clean, in batches of
              worker_batch_size; reading and decoding overlap inference), store its results,
              then count it and acknowledge the message in one step (service.jobs.store)
    finalize  join the parts into cleaned.csv, errors.csv, summary.json, note that they are
              written, remove the job's leftovers (``_work/`` unless ``options.keep_work``,
              temporary files, unfinished uploads: service.jobs.leftovers); the job completes

A message of a cancelled, failed or expired job is dropped. A chunk's results are stored only
if, once cleaned, its job still runs and this worker still holds it: a worker that comes back
to a job failed meanwhile, or that held the chunk past ``job_chunk_wall_s`` and lost it to
another worker, drops its result. A job that fails here (its plan, or its finalize) leaves
``_work/`` for resuming; the leftovers of killed writers go.

A failed try is retried by any worker after a growing delay; the try that reaches
``job_max_tries`` (or a message delivered more often than that because its workers died) goes
to the dead-letter stream: a chunk's images are listed as failed and the job goes on, a plan or
finalize failure fails the job.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import logging
import time
from functools import partial
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from ...model.bundle import Bundle
from ...model.cleaning import ImageLimits
from ...model.labels import InputError
from ...model.runtime import OnnxModel
from ...settings import Settings, decode_threads
from ...storage import Storage
from ..failures import describe, frames
from ..inference.client import backoff
from ..inference.threads import ThreadPool
from . import leftovers, steps
from .files import part_uri, plan_errors_uri, read_csv_rows
from .keys import ERROR_SAMPLE, UNREACHABLE
from .offline import READ_THREADS
from .queue import JobQueue, Message
from .record import FINISHED, JobState
from .store import JobStore

log = logging.getLogger("labelclean.worker")
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # before a failed message's next try


class JobHandler:
    """Does messages with one loaded model; its read and inference threads end with ``close``."""

    def __init__(
        self, settings: Settings, bundle: Bundle, model: OnnxModel, *, storage: Storage,
        store: JobStore, queue: JobQueue,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.bundle = bundle
        self.model = model
        self.storage = storage
        self.store = store
        self.queue = queue
        self.limits = ImageLimits(settings.max_pixels, settings.allowed_formats)
        # Reads wait on storage (S3 round trips), not on the CPU: as many threads as offline.
        self._io = ThreadPool(max(READ_THREADS, decode_threads(settings)), "read")
        self._infer = ThreadPool(1, "infer")

    def close(self) -> None:
        self._io.shutdown()
        self._infer.shutdown()

    async def handle(self, message: Message) -> None:
        """Do ``message``'s step, or drop it (its job is gone or finished), or count a failed try
        (retried later, dead-lettered at ``job_max_tries``)."""
        found = await self.store.spec(message.job)
        if found is None or found[0] in FINISHED:
            await self.queue.skip(message)  # cancelled, failed, or expired
            return
        try:
            spec = steps.JobSpec.model_validate(found[1])
        except ValueError:  # written by another version: nothing to do with it
            await self._dead_letter(message, None, "unreadable job spec (another version's?)")
            return
        if message.deliveries > self.settings.job_max_tries:
            last = await self.store.last_error(message.job, message.part)
            error = last or "the worker stopped (killed, crashed or lost Redis) during each try"
            await self._dead_letter(message, spec, error)
            return
        try:
            if message.kind == "plan":
                await self._plan(message, spec)
            elif message.kind == "chunk" and message.chunk is not None:
                await self._chunk(message, spec, message.chunk)
            elif message.kind == "finalize":
                await self._finalize(message, spec)
            else:
                await self._dead_letter(message, spec, f"unknown message {message.kind!r}")
        except (RedisError, *UNREACHABLE, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failed try: retried, then dead-lettered
            await self._failed(message, spec, exc)

    async def _failed(self, message: Message, spec: steps.JobSpec, exc: Exception) -> None:
        """What the caller sees (job error, dead letter, errors.csv) and the log says is the
        kind of failure (service.failures), never the exception's text: it may quote data."""
        error = describe(exc)[:2000]
        if message.kind == "plan" and isinstance(exc, InputError):  # the inputs: no use retrying
            log.warning("job %s: cannot plan: %s", message.job, error)
            await self.store.fail(message.job, f"cannot plan the job: {error}", message=message.id)
            await self._clean(spec)
            return
        log.warning(
            "job %s: %s %s failed (try %d of %d): %s; %s", message.job, message.kind,
            "" if message.chunk is None else message.chunk, message.deliveries,
            self.settings.job_max_tries, error, frames(exc),
        )  # fmt: skip
        if message.deliveries >= self.settings.job_max_tries:
            await self._dead_letter(message, spec, error)
            return
        await self.store.attempt_failed(message.job, message.part, error)
        await self.queue.retry_later(message, backoff(RETRY_DELAYS, message.deliveries - 1))

    async def _dead_letter(
        self, message: Message, spec: steps.JobSpec | None, error: str
    ) -> None:  # fmt: skip
        images: list[str] = []
        if spec is not None and message.kind == "chunk" and message.chunk is not None:
            try:
                chunk = await asyncio.to_thread(steps.load_chunk, spec, self.storage, message.chunk)
                images = [item.id for item in chunk.items]
            except Exception as exc:  # noqa: BLE001 - then the images cannot be named
                log.warning(
                    "job %s: chunk %s unreadable: %s", message.job, message.chunk, describe(exc)
                )  # fmt: skip
        log.error(
            "job %s: %s %s dead-lettered after %d tries: %s", message.job, message.kind,
            "" if message.chunk is None else message.chunk, message.deliveries, error,
        )  # fmt: skip
        await self.store.dead_letter(
            message.job, message=message.id, kind=message.kind, chunk=message.chunk,
            error=error, deliveries=message.deliveries, images=images,
        )  # fmt: skip
        if spec is not None and message.kind != "chunk":  # the job failed
            await self._clean(spec)

    async def _clean(self, spec: steps.JobSpec) -> None:
        """After the job failed: remove the leftovers of writers stopped before now."""
        try:
            await asyncio.to_thread(leftovers.clean, self.storage, spec.output, before=time.time())
        except Exception as exc:  # noqa: BLE001 - the storage's trouble: they wait
            log.warning("%s: leftovers not removed: %s", spec.output, describe(exc))

    # The three kinds of message.

    async def _plan(self, message: Message, spec: steps.JobSpec) -> None:
        before = await self.store.start(message.job)
        if before not in (JobState.queued, JobState.running) or await self.store.is_planned(
            message.job
        ):
            await self.queue.skip(message)
            return
        chunk_size = self.settings.job_chunk_size  # spec.options.chunk_size wins
        plan = await asyncio.to_thread(
            partial(steps.plan, chunk_size=chunk_size, label_index=self.bundle.index,
                    model=self.bundle.sha256),
            spec, self.storage,
        )  # fmt: skip
        errors = await asyncio.to_thread(self._plan_errors, spec) if plan.errors else []
        await self.store.planned(
            message.job, total=plan.total + plan.errors, chunks=plan.chunks, failed=plan.errors,
            message=message.id, errors=errors,
        )  # fmt: skip
        log.info("job %s: %d images in %d chunks", message.job, plan.total, plan.chunks)

    async def _chunk(self, message: Message, spec: steps.JobSpec, n: int) -> None:
        stored = await asyncio.to_thread(self._stored_part, spec, n)
        if stored is not None:  # stored by a worker that stopped before counting it, or a rerun
            done, errors = stored
        else:
            chunk = await asyncio.to_thread(steps.load_chunk, spec, self.storage, n)
            result = await steps.process_chunk(
                chunk, bundle=self.bundle, predict=self._predict, storage=self.storage,
                limits=self.limits, thresholds=spec.options.thresholds,
                min_precision=spec.options.min_precision,
                offload=self._io.run, batch_size=self.settings.worker_batch_size,
                max_image_bytes=self.settings.max_image_bytes,
            )  # fmt: skip
            if not await self._still_ours(message, n):
                return
            await asyncio.to_thread(steps.store_chunk, spec, self.storage, n, result)
            done, errors = result.done, result.errors
        await self.store.complete_chunk(
            message.job, n, message=message.id, done=done, failed=len(errors), errors=errors
        )  # fmt: skip

    async def _still_ours(self, message: Message, n: int) -> bool:
        """Whether chunk ``n``'s results may be stored: this worker still holds it (else another
        worker has it, or did it) and its job still runs (else the message is dropped)."""
        if not await self.queue.holds(message):
            log.warning(
                "job %s: chunk %d was held past LABELCLEAN_JOB_CHUNK_WALL_S (%g s) or this "
                "worker went silent: another worker took it, this result is dropped",
                message.job, n, self.settings.job_chunk_wall_s,
            )  # fmt: skip
            return False
        state = await self.store.state(message.job)
        if state is not JobState.running:
            log.info("job %s is %s: chunk %d's result is dropped", message.job, state, n)
            await self.queue.skip(message)
            return False
        return True

    def _plan_errors(self, spec: steps.JobSpec) -> list[tuple[str, str]]:
        """The first ERROR_SAMPLE images refused while planning, with why."""
        with self.storage.open_text(plan_errors_uri(spec.output, self.storage)) as fh:
            rows = itertools.islice(csv.reader(fh), ERROR_SAMPLE)
            return [(row[0], row[1] if len(row) > 1 else "") for row in rows if row]

    def _stored_part(self, spec: steps.JobSpec, n: int) -> tuple[int, list[tuple[str, str]]] | None:
        """(images done, errors) of a chunk whose results are stored already, else None."""
        if not steps.chunk_stored(spec, self.storage, n):
            return None
        summary = part_uri(spec.output, self.storage, n, ".summary.json")
        done = int(json.loads(self.storage.read_bytes(summary))["done"])
        rows = read_csv_rows(self.storage, part_uri(spec.output, self.storage, n, ".errors.csv"))
        return done, [(row[0], row[1] if len(row) > 1 else "") for row in rows]

    async def _finalize(self, message: Message, spec: steps.JobSpec) -> None:
        job = await self.store.get(message.job)
        if job is None or job.chunks is None:
            await self.queue.skip(message)
            return
        summary = await self.store.finalized(message.job)  # a try that stopped while tidying
        if summary is None:
            dead = await self.store.dead_chunks(message.job)
            written = await asyncio.to_thread(
                steps.finalize, spec, self.storage, job.chunks, dead=dead
            )  # fmt: skip
            summary = totals(written)
            if not await self.store.mark_finalized(message.job, summary):
                await self.queue.skip(message)  # cancelled or failed meanwhile
                return
        keep = spec.options.keep_work
        removed = await asyncio.to_thread(leftovers.tidy, self.storage, spec.output, keep_work=keep)
        outcome = await self.store.complete(message.job, summary=summary, message=message.id)
        log.info("job %s: completed (%s); removed %s", message.job, outcome, removed)

    async def _predict(self, images: np.ndarray, noisy: np.ndarray) -> tuple[Any, Any]:
        return await self._infer.run(self.model.run, images, noisy)


def totals(summary: dict[str, Any]) -> dict[str, Any]:
    """What the job record keeps of summary.json: all but the per-class table."""
    return {k: v for k, v in summary.items() if k != "classes"}
