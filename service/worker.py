"""``labelclean worker --model BUNDLE [--burst]``: takes bulk-job messages from Redis and does them.

    asyncio.run(Worker(settings, Path("bundle"), burst=True).run())

The model loads once (ONNX Runtime, no torch), then the loop takes one message at a time
(service.job_queue) and does it with the job core (service.bulk):

    plan      list the images, write the chunk manifests; enqueue one message per chunk
    chunk     clean the chunk's images (the same clean_images as POST /clean, in batches of
              worker_batch_size; reading and decoding overlap inference), store its results,
              then count it and acknowledge the message in one step (service.job_store)
    finalize  join the parts into cleaned.csv, errors.csv, summary.json; the job completes

A message of a cancelled or expired job is dropped. A failed try is retried by any worker after
a growing delay; the try that reaches ``job_max_tries`` (or a message delivered more often than
that because its workers died) goes to the dead-letter stream: a chunk's images are listed as
failed and the job goes on, a plan or finalize failure fails the job.

Every few seconds the worker writes its heartbeat (``labelclean:worker:{name}``) and keeps the
message it works on from being reclaimed. SIGTERM (or Ctrl-C) lets it finish the message in
hand and exit; a second one stops it at once. When Redis is unreachable it waits and reconnects,
backing off up to 8 s, then first re-reads the messages it held. ``--burst`` exits once the
queue is empty and nothing is pending anywhere (tests, one-off runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import json
import logging
import os
import signal
import socket
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from redis.exceptions import RedisError, ResponseError

from ..model.bundle import load_bundle
from ..model.cleaning import ImageLimits
from ..model.labels import InputError
from ..model.runtime import OnnxModel
from ..settings import Settings, decode_threads
from ..storage import Storage
from . import bulk
from .backend_client import backoff
from .bulk_io import part_uri, plan_errors_uri, read_csv_rows
from .job_queue import JobQueue, Message
from .job_store import (
    ERROR_SAMPLE,
    FINISHED,
    GROUP,
    PREFIX,
    QUEUE,
    UNREACHABLE,
    WORKERS,
    JobState,
    JobStore,
    redis_client,
    safe_url,
)
from .threads import ThreadPool

log = logging.getLogger("labelclean.worker")
RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # before a failed message's next try
SHUTDOWN_S = 5.0  # the most each step of stopping may take
TEST_DELAY_ENV = "LABELCLEAN_TEST_CHUNK_DELAY_S"
"""Tests only: seconds a worker waits between cleaning a chunk and storing it, so that a test
can stop it while it holds the chunk."""


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class Worker:
    def __init__(
        self, settings: Settings, bundle_path: Path, *, burst: bool = False,
        name: str | None = None, handle_signals: bool = True,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.burst = burst
        self.name = name or worker_name()
        self.handle_signals = handle_signals
        self.bundle = load_bundle(bundle_path)
        self.model = OnnxModel(
            self.bundle, device=settings.device, threads=settings.inference_threads
        )
        if not self.model.ready:
            raise RuntimeError(f"CUDA was demanded but ONNX Runtime runs on {self.model.provider}")
        self.storage = Storage.from_settings(settings)
        self.limits = ImageLimits(settings.max_pixels, settings.allowed_formats)
        self.redis = redis_client(settings.redis_url, timeout_s=5.0, retries=2)
        self.store = JobStore(self.redis, retention_s=settings.job_retention_s)
        self.queue = JobQueue(
            self.redis, consumer=self.name, claim_idle_s=settings.job_claim_idle_s
        )
        self.heartbeat_s = max(0.2, min(5.0, settings.job_claim_idle_s / 3))
        self.test_delay_s = float(os.environ.get(TEST_DELAY_ENV) or 0)
        self.stopping = asyncio.Event()
        self._beat_stop = asyncio.Event()
        self.current: Message | None = None
        self.handled = 0
        self.started = time.time()
        self._decode = ThreadPool(decode_threads(settings), "decode")
        self._infer = ThreadPool(1, "infer")

    # The loop.

    async def run(self) -> int:
        """Work until stopped (or, with ``burst``, until the queue is drained); returns 0."""
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._signalled)
        beat = asyncio.create_task(self._heartbeat())
        log.info(
            "worker %s: model %s on %s, redis %s", self.name, self.bundle.path,
            self.model.provider, safe_url(self.settings.redis_url),
        )  # fmt: skip
        outage = 0
        try:
            while not self.stopping.is_set():
                try:
                    if outage:
                        await self.store.ensure_group()
                    message = await self.queue.next(block_s=min(1.0, self.heartbeat_s))
                    if outage:
                        log.warning("worker %s: redis is back", self.name)
                        outage = 0
                    if message is None:
                        if self.burst and await self.queue.drained():
                            break
                        continue
                    await self._handle(message)
                except UNREACHABLE as exc:
                    delay = backoff(RECONNECT_DELAYS, outage)
                    outage += 1
                    log.warning(
                        "worker %s: redis unreachable at %s (%s); retrying in %.2g s",
                        self.name, safe_url(self.settings.redis_url), exc, delay,
                    )  # fmt: skip
                    self.queue.reconnected()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), delay)
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):  # Redis lost its data: start the group again
                        raise
                    await self.store.ensure_group()
        finally:
            # The heartbeat stops between beats, not by cancel(): redis-py can swallow a
            # cancellation that lands inside a command, and the task would then run on.
            self._beat_stop.set()
            if not (await asyncio.wait({beat}, timeout=SHUTDOWN_S))[0]:
                beat.cancel()
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._leave(), SHUTDOWN_S)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self.redis.aclose(), SHUTDOWN_S)
            self._decode.shutdown()
            self._infer.shutdown()
        log.info("worker %s: stopped after %d message(s)", self.name, self.handled)
        return 0

    def _signalled(self) -> None:
        if self.stopping.is_set():  # the message in hand stays pending: another worker takes it
            log.warning("worker %s: stopping now", self.name)
            os._exit(130)
        log.info("worker %s: finishing the message in hand, then stopping", self.name)
        self.stopping.set()

    async def _handle(self, message: Message) -> None:
        self.current = message
        try:
            found = await self.store.spec(message.job)
            if found is None or found[0] in FINISHED:
                await self.queue.skip(message)  # cancelled, failed, or expired
                return
            try:
                spec = bulk.JobSpec.model_validate(found[1])
            except ValueError as exc:  # written by another version: nothing to do with it
                await self._dead_letter(message, None, f"unreadable job spec: {exc}")
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
        finally:
            self.current = None
            self.handled += 1

    async def _failed(self, message: Message, spec: bulk.JobSpec, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if message.kind == "plan" and isinstance(exc, InputError):  # the inputs: no use retrying
            log.warning("job %s: cannot plan: %s", message.job, error)
            await self.store.fail(message.job, f"cannot plan the job: {error}", message=message.id)
            return
        log.warning(
            "job %s: %s %s failed (try %d of %d): %s", message.job, message.kind,
            "" if message.chunk is None else message.chunk, message.deliveries,
            self.settings.job_max_tries, error, exc_info=exc,
        )  # fmt: skip
        if message.deliveries >= self.settings.job_max_tries:
            await self._dead_letter(message, spec, error)
            return
        await self.store.attempt_failed(message.job, message.part, error)
        await self.queue.retry_later(message, backoff(RETRY_DELAYS, message.deliveries - 1))

    async def _dead_letter(
        self, message: Message, spec: bulk.JobSpec | None, error: str
    ) -> None:  # fmt: skip
        images: list[str] = []
        if spec is not None and message.kind == "chunk" and message.chunk is not None:
            try:
                chunk = await asyncio.to_thread(bulk.load_chunk, spec, self.storage, message.chunk)
                images = [item.id for item in chunk.items]
            except Exception as exc:  # noqa: BLE001 - then the images cannot be named
                log.warning("job %s: chunk %s unreadable: %s", message.job, message.chunk, exc)
        log.error(
            "job %s: %s %s dead-lettered after %d tries: %s", message.job, message.kind,
            "" if message.chunk is None else message.chunk, message.deliveries, error,
        )  # fmt: skip
        await self.store.dead_letter(
            message.job, message=message.id, kind=message.kind, chunk=message.chunk,
            error=error, deliveries=message.deliveries, images=images,
        )  # fmt: skip

    # The three kinds of message.

    async def _plan(self, message: Message, spec: bulk.JobSpec) -> None:
        before = await self.store.start(message.job)
        if before not in (JobState.queued, JobState.running) or await self.store.is_planned(
            message.job
        ):
            await self.queue.skip(message)
            return
        chunk_size = self.settings.job_chunk_size  # spec.options.chunk_size wins
        plan = await asyncio.to_thread(
            partial(bulk.plan, chunk_size=chunk_size, label_index=self.bundle.index,
                    model=self.bundle.sha256),
            spec, self.storage,
        )  # fmt: skip
        errors = await asyncio.to_thread(self._plan_errors, spec) if plan.errors else []
        await self.store.planned(
            message.job, total=plan.total + plan.errors, chunks=plan.chunks, failed=plan.errors,
            message=message.id, errors=errors,
        )  # fmt: skip
        log.info("job %s: %d images in %d chunks", message.job, plan.total, plan.chunks)

    async def _chunk(self, message: Message, spec: bulk.JobSpec, n: int) -> None:
        stored = await asyncio.to_thread(self._stored_part, spec, n)
        if stored is not None:  # stored by a worker that stopped before counting it, or a rerun
            done, errors = stored
        else:
            chunk = await asyncio.to_thread(bulk.load_chunk, spec, self.storage, n)
            result = await bulk.process_chunk(
                chunk, bundle=self.bundle, predict=self._predict, storage=self.storage,
                limits=self.limits, thresholds=spec.options.thresholds,
                offload=self._decode.run, batch_size=self.settings.worker_batch_size,
            )  # fmt: skip
            if self.test_delay_s:
                await asyncio.sleep(self.test_delay_s)
            await asyncio.to_thread(bulk.store_chunk, spec, self.storage, n, result)
            done, errors = result.done, result.errors
        await self.store.complete_chunk(
            message.job, n, message=message.id, done=done, failed=len(errors), errors=errors
        )  # fmt: skip

    def _plan_errors(self, spec: bulk.JobSpec) -> list[tuple[str, str]]:
        """The first ERROR_SAMPLE images refused while planning, with why."""
        with self.storage.open_text(plan_errors_uri(spec.output, self.storage)) as fh:
            rows = itertools.islice(csv.reader(fh), ERROR_SAMPLE)
            return [(row[0], row[1] if len(row) > 1 else "") for row in rows if row]

    def _stored_part(self, spec: bulk.JobSpec, n: int) -> tuple[int, list[tuple[str, str]]] | None:
        """(images done, errors) of a chunk whose results are stored already, else None."""
        if not bulk.chunk_stored(spec, self.storage, n):
            return None
        summary = part_uri(spec.output, self.storage, n, ".summary.json")
        done = int(json.loads(self.storage.read_bytes(summary))["done"])
        rows = read_csv_rows(self.storage, part_uri(spec.output, self.storage, n, ".errors.csv"))
        return done, [(row[0], row[1] if len(row) > 1 else "") for row in rows]

    async def _finalize(self, message: Message, spec: bulk.JobSpec) -> None:
        job = await self.store.get(message.job)
        if job is None or job.chunks is None:
            await self.queue.skip(message)
            return
        dead = await self.store.dead_chunks(message.job)
        summary = await asyncio.to_thread(
            bulk.finalize, spec, self.storage, job.chunks, dead=dead
        )  # fmt: skip
        await self.store.complete(message.job, summary=totals(summary), message=message.id)
        log.info("job %s: completed", message.job)

    async def _predict(self, images: np.ndarray, noisy: np.ndarray) -> tuple[Any, Any]:
        return await self._infer.run(self.model.run, images, noisy)

    # Heartbeat.

    async def _heartbeat(self) -> None:
        ttl = max(15, int(self.heartbeat_s * 3) + 1)
        while not self._beat_stop.is_set():
            current = self.current
            info = {
                "name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                "started_at": self.started, "model": str(self.bundle.path),
                "sha256": self.bundle.sha256, "provider": self.model.provider,
                "handled": self.handled,
                "current": None if current is None else f"{current.job}/{current.kind}"
                + ("" if current.chunk is None else f"/{current.chunk}"),
            }  # fmt: skip
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(f"{PREFIX}worker:{self.name}", json.dumps(info), ex=ttl)
                    pipe.zadd(WORKERS, {self.name: time.time()})
                    pipe.zremrangebyscore(WORKERS, "-inf", time.time() - 86_400)
                    await pipe.execute()
                if current is not None:
                    await self.queue.touch(current)
            except (RedisError, *UNREACHABLE) as exc:
                log.debug("worker %s: heartbeat failed: %s", self.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_stop.wait(), self.heartbeat_s)

    async def _leave(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(f"{PREFIX}worker:{self.name}")
            pipe.zrem(WORKERS, self.name)
            await pipe.execute()
        if not await self.queue.held(self.name):  # with messages held it must stay, for XAUTOCLAIM
            await self.redis.xgroup_delconsumer(QUEUE, GROUP, self.name)


def totals(summary: dict[str, Any]) -> dict[str, Any]:
    """What the job record keeps of summary.json: all but the per-class table."""
    return {k: v for k, v in summary.items() if k != "classes"}


def run_worker(settings: Settings, bundle_path: Path, *, burst: bool = False) -> int:
    """What ``labelclean worker`` calls."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(Worker(settings, bundle_path, burst=burst).run())
