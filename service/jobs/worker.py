"""``labelclean worker --model BUNDLE [--burst]``: takes bulk-job messages from Redis and does them.

    asyncio.run(Worker(settings, Path("bundle"), burst=True).run())

The model loads once (ONNX Runtime, no torch), then the loop takes one message at a time
(service.jobs.queue) and hands it to the job handler (service.jobs.handler: plan, clean a chunk,
finalize; failed tries retried, then dead-lettered).

Every few seconds the worker writes its heartbeat (``labelclean:worker:{name}``) and keeps the
message it works on from being reclaimed (a chunk only up to ``job_chunk_wall_s``: then
another worker may take it). While workers beat, no job is failed as stale
(service.jobs.upkeep). SIGTERM (or Ctrl-C) lets it finish the message in
hand and exit; a second one stops it at once. When Redis is unreachable it waits and reconnects,
backing off up to 8 s, then first re-reads the messages it held; when Redis refuses its
credentials it says so and exits with status 3. ``--burst`` exits once the
queue is empty and nothing is pending anywhere (tests, one-off runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from pathlib import Path

from redis.exceptions import AuthenticationError, RedisError, ResponseError

from ...model.bundle import load_bundle
from ...model.runtime import OnnxModel
from ...settings import Settings, worker_heartbeat_s
from ...storage import Storage
from ..inference.client import backoff
from .handler import JobHandler
from .keys import GROUP, QUEUE, UNREACHABLE, redis_client, safe_url
from .queue import JobQueue, Message
from .store import JobStore

log = logging.getLogger("labelclean.worker")
RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
REFUSED = 3  # exit status: Redis refused the credentials
SHUTDOWN_S = 5.0  # the most each step of stopping may take


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
        storage = Storage.from_settings(settings)
        self.redis = redis_client(settings.redis_url, timeout_s=5.0, retries=2)
        self.store = JobStore(self.redis, retention_s=settings.job_retention_s)
        self.queue = JobQueue(
            self.redis, consumer=self.name, claim_idle_s=settings.job_claim_idle_s,
            chunk_wall_s=settings.job_chunk_wall_s,
        )  # fmt: skip
        self.heartbeat_s = worker_heartbeat_s(settings.job_claim_idle_s)
        self.stopping = asyncio.Event()
        self._beat_stop = asyncio.Event()
        self.current: Message | None = None
        self.handled = 0
        self.started = time.time()
        self.handler = JobHandler(
            settings, self.bundle, self.model, storage=storage, store=self.store, queue=self.queue
        )

    # The loop.

    async def run(self) -> int:
        """Work until stopped (or, with ``burst``, until the queue is drained); returns 0, or
        ``REFUSED`` when Redis refuses the credentials (retrying would not help)."""
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
        code = 0
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
                except AuthenticationError as exc:  # a ConnectionError, but waiting cures nothing
                    log.error(
                        "worker %s: redis at %s refused this worker's credentials (%s): set the "
                        "password (and ACL user) in LABELCLEAN_REDIS_URL, as "
                        "redis://USER:PASSWORD@HOST:PORT/0; stopping",
                        self.name, safe_url(self.settings.redis_url), type(exc).__name__,
                    )  # fmt: skip
                    code = REFUSED
                    break
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
            self.handler.close()
        log.info("worker %s: stopped after %d message(s)", self.name, self.handled)
        return code

    def _signalled(self) -> None:
        if self.stopping.is_set():  # the message in hand stays pending: another worker takes it
            log.warning("worker %s: stopping now", self.name)
            os._exit(130)
        log.info("worker %s: finishing the message in hand, then stopping", self.name)
        self.stopping.set()

    async def _handle(self, message: Message) -> None:
        self.current = message
        try:
            await self.handler.handle(message)
        finally:
            self.current = None
            self.handled += 1

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
                await self.store.heartbeat(self.name, info, ttl_s=ttl)
                if current is not None:
                    await self.queue.touch(current)
            except (RedisError, *UNREACHABLE) as exc:
                log.debug("worker %s: heartbeat failed: %s", self.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_stop.wait(), self.heartbeat_s)

    async def _leave(self) -> None:
        await self.store.leave(self.name)
        if not await self.queue.held(self.name):  # with messages held it must stay, for XAUTOCLAIM
            await self.redis.xgroup_delconsumer(QUEUE, GROUP, self.name)


def run_worker(settings: Settings, bundle_path: Path, *, burst: bool = False) -> int:
    """What ``labelclean worker`` calls."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(Worker(settings, bundle_path, burst=burst).run())
