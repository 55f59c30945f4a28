"""Upkeep of bulk jobs, run by the API process: stale jobs fail, and finished jobs leave the
jobs indexes once their retention is over. Torch-free.

    upkeep = JobUpkeep(store, stale_s=settings.job_stale_s, storage=storage)
    upkeep.start()                     # a sweep every interval_s, until ``await upkeep.stop()``
    swept = await upkeep.sweep()       # Sweep(pruned=2, failed=["<job id>"])
    await upkeep.fail_if_stale(job_id) # one job (POST /jobs: the job holding the output)

Stale: a queued or running job fails when no worker has been seen (a heartbeat, or a worker
leaving) for ``stale_s`` and the job has not moved (created, started, planned, a chunk counted)
for as long. While any worker beats no job is stale: messages wait their turn in the queue, a
silent worker's are reclaimed and a chunk held too long goes to another worker
(service.jobs.queue), so a job fails only when nothing is left that could move it. The decision
is FAIL_STALE's (service.jobs.scripts), atomic with every worker step: a worker that comes back
finds the job failed, and its steps change nothing. Failing releases the output lock; the
output's ``_work/`` stays (the same job submitted again resumes from its stored chunks), while
the unfinished uploads and temporary files of killed writers go (service.jobs.leftovers).

The API process sweeps every ``interval_s`` (a third of ``stale_s``, 1 to 60 s): the active jobs
index (``jobs:active``, by last progress) gives the candidates without a scan, and the last
time a worker was seen (one read) rules out every job at once while workers live. Several API
processes sweep alike: each step is atomic, or idempotent.

Retention: a finished job's keys expire ``retention_s`` after it ended; the expiry index
(``jobs:expiring``) says when, so a sweep removes exactly the jobs that are due from ``jobs`` and
from their owner's index.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.exceptions import RedisError

from ...storage import Storage
from ..failures import describe
from . import leftovers
from .store import ACTIVE, EXPIRING, JOBS, UNREACHABLE, JobStore, job_key, owner_jobs_key

log = logging.getLogger("labelclean.service")
PRUNE_BATCH = 1000  # expired jobs removed from the indexes per Redis transaction
CANDIDATES = 100  # stale candidates per sweep (the next sweep takes more)
STOP_S = 5.0


@dataclass
class Sweep:
    pruned: int = 0  # expired jobs removed from the indexes
    failed: list[str] = field(default_factory=list)  # jobs failed as stale


def stale_error(since: float, stale_s: float) -> str:
    """Why a stale job failed (the job's ``error``)."""
    when = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
    return (
        f"stale: no live worker and no progress since {when} (LABELCLEAN_JOB_STALE_S="
        f"{stale_s:g}); its output is free again: submit the same job to resume from its "
        "stored chunks"
    )


class JobUpkeep:
    """Stale checks and index pruning on one job store; ``storage`` (optional) removes a failed
    job's leftovers."""

    def __init__(self, store: JobStore, *, stale_s: float, storage: Storage | None = None) -> None:
        self.store = store
        self.stale_s = stale_s
        self.storage = storage
        self.interval_s = min(60.0, max(1.0, stale_s / 3)) if stale_s else 60.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cleaning: set[asyncio.Task[None]] = set()

    async def sweep(self) -> Sweep:
        """Prune the indexes of expired jobs, then fail the stale jobs."""
        pruned = await self.prune()
        return Sweep(pruned, await self.fail_stale_jobs())

    async def prune(self) -> int:
        """Remove the jobs whose retention is over from ``jobs`` and their owner's index."""
        redis, pruned = self.store.redis, 0
        while True:
            due = await redis.zrangebyscore(EXPIRING, "-inf", time.time(), 0, PRUNE_BATCH)
            if not due:
                return pruned
            async with redis.pipeline(transaction=True) as pipe:
                for member in due:
                    job_id, _, owner = member.partition(":")
                    pipe.zrem(JOBS, job_id)
                    if owner:
                        pipe.zrem(owner_jobs_key(owner), job_id)
                pipe.zrem(EXPIRING, *due)
                await pipe.execute()
            pruned += len(due)
            if len(due) < PRUNE_BATCH:
                return pruned

    async def fail_stale_jobs(self) -> list[str]:
        """Fail the active jobs that are stale (none while a worker lives)."""
        if not self.stale_s:
            return []
        seen = await self.store.workers_seen()
        cutoff = time.time() - self.stale_s
        if seen > cutoff:
            return []
        ids = await self.store.redis.zrangebyscore(ACTIVE, "-inf", cutoff, 0, CANDIDATES)
        return [job_id for job_id in ids if await self.fail_if_stale(job_id, seen=seen)]

    async def fail_if_stale(self, job_id: str, *, seen: float | None = None) -> bool:
        """Fail ``job_id`` if it is stale (``seen``: when a worker was last seen, if known);
        True when this call failed it."""
        if not self.stale_s:
            return False
        fields = ["state", "progress_at", "started_at", "created_at", "spec"]
        state, *times, spec = await self.store.redis.hmget(job_key(job_id), fields)
        if state not in ("queued", "running"):
            await self.store.redis.zrem(ACTIVE, job_id)  # gone or finished: never active again
            return False
        last = float(next((t for t in times if t), 0))
        since = max(last, await self.store.workers_seen() if seen is None else seen)
        if time.time() - since < self.stale_s:
            return False
        error = stale_error(since, self.stale_s)
        outcome = await self.store.fail_stale(job_id, since=since, stale_s=self.stale_s,
                                              error=error)  # fmt: skip
        if outcome != "failed":
            return False
        log.warning("job %s failed: %s", job_id, error)
        if spec:
            self.clean_after(json.loads(spec)["output"], time.time())
        return True

    def clean_after(self, output: str, at: float) -> None:
        """Remove, in the background, what writers killed before ``at`` left under the output
        of a job that failed or was cancelled (``_work/`` stays)."""
        if self.storage is None:
            return
        task = asyncio.create_task(self._clean(output, at))
        self._cleaning.add(task)
        task.add_done_callback(self._cleaning.discard)

    async def _clean(self, output: str, at: float) -> None:
        try:
            removed = await asyncio.to_thread(leftovers.clean, self.storage, output, before=at)
        except Exception as exc:  # noqa: BLE001 - storage trouble: the leftovers wait
            log.warning("%s: leftovers not removed: %s", output, describe(exc))
            return
        if removed.temporary or removed.uploads:
            log.info("%s: removed %s", output, removed)

    # The periodic sweep.

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sweeping (between sweeps: redis-py can swallow a cancel inside a command)."""
        self._stop.set()
        tasks = [t for t in (self._task, *self._cleaning) if t is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_S)
            for task in late:
                task.cancel()
        self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                swept = await self.sweep()
                if swept.pruned:
                    log.debug("jobs past retention left the indexes: %d", swept.pruned)
            except (RedisError, *UNREACHABLE, OSError) as exc:  # Redis away: /jobs says 503
                log.debug("job upkeep skipped: %s", exc)
            except Exception:  # a bug: said, and the next sweep tries again
                log.exception("job upkeep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
