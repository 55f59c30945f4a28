"""Bulk jobs' records in Redis: state, progress, a sample of errors, retention, and the atomic
steps that move a job along. Torch-free; redis-py's asyncio client.

    store = JobStore(redis, retention_s=settings.job_retention_s)
    job_id, outcome = await store.create(spec, idempotency="k1", owner=o)  # + the plan message
    job = await store.get(job_id, owner=o)  # Job: state, counts, times, images/s, error sample

``owner`` (service.jobs.owners) scopes what a caller sees: ``get``, ``list`` and
``find_idempotent`` answer as if another owner's job did not exist; None (API keys off, and the
workers) sees every job.

Every step that changes a job and the queue together is one Lua script (service.jobs.scripts),
so a worker that dies between two Redis calls leaves nothing half done: creating a job enqueues
its plan message; planning enqueues its chunk messages once (``planned`` is set once); a stored
chunk is counted once (the set ``job:{id}:chunks``) and its message acknowledged in the same
step; the step that counts the last chunk enqueues the finalize message; a dead-lettered chunk
counts its images as failed; a stale job (service.jobs.upkeep) is failed only if nothing moved
since the caller looked. Each step that moves a job notes when (``progress_at``, the active
index). Finished jobs' keys expire after ``retention_s`` and the expiry index says when, so
that the jobs indexes are pruned without a scan.

The key names, limits and the client are in service.jobs.keys, the ``Job`` record in
service.jobs.record; both are importable from here too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from . import scripts
from .keys import (
    ACTIVE,
    DEAD,
    DEAD_MAXLEN,
    ERROR_SAMPLE,
    EXPIRING,
    GROUP,
    JOBS,
    PREFIX,
    QUEUE,
    STATS,
    UNREACHABLE,
    WORKERS,
    WORKERS_SEEN,
    idempotency_key,
    job_key,
    new_job_id,
    output_key,
    owner_jobs_key,
    redis_client,
    safe_url,
    valid_job_id,
)
from .owners import visible
from .record import FINISHED, Job, JobError, JobState, job_from_hash

__all__ = [  # the names other modules import from here, job_redis's and job_record's included
    "ACTIVE", "DEAD", "DEAD_MAXLEN", "ERROR_SAMPLE", "EXPIRING", "FINISHED", "GROUP", "JOBS",
    "PREFIX", "QUEUE", "STATS", "UNREACHABLE", "WORKERS", "WORKERS_SEEN", "CreateOutcome", "Job",
    "JobError", "JobState",
    "JobStore", "idempotency_key", "job_from_hash", "job_key", "new_job_id", "output_key",
    "owner_jobs_key", "redis_client", "safe_url", "valid_job_id",
]  # fmt: skip


class CreateOutcome(StrEnum):
    created = "created"
    replayed = "replayed"  # the Idempotency-Key's job
    busy = "busy"  # another active job writes to the same output


class JobStore:
    """Job records and the atomic job steps, on one ``redis.asyncio.Redis`` (decoded responses)."""

    def __init__(self, redis: Redis, *, retention_s: int) -> None:
        self.redis = redis
        self.retention_s = retention_s
        script = redis.register_script
        self._create = script(scripts.CREATE)
        self._start = script(scripts.START)
        self._planned = script(scripts.PLANNED)
        self._complete = script(scripts.COMPLETE)
        self._dead_letter = script(scripts.DEAD_LETTER)
        self._finish = script(scripts.FINISH_JOB)
        self._fail_stale = script(scripts.FAIL_STALE)
        self._finalized = script(scripts.FINALIZED)
        self._attempt_failed = script(scripts.ATTEMPT_FAILED)

    async def ensure_group(self) -> None:
        """The work stream and its consumer group (from the stream's start: nothing is missed)."""
        try:
            await self.redis.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
        except Exception as exc:  # redis.ResponseError; BUSYGROUP: it exists
            if "BUSYGROUP" not in str(exc):
                raise

    async def create(
        self, spec: dict[str, Any], *, idempotency: str | None = None, job_id: str | None = None,
        owner: str | None = None, output_lock: str | None = None,
    ) -> tuple[str, CreateOutcome]:  # fmt: skip
        """A queued job of ``owner`` for ``spec`` (JSON-able) and its plan message. With
        ``idempotency``, the job the same owner created earlier with that key instead; ``busy``
        with the id of the active job (anyone's) that writes to the same output: the one of
        ``output_lock`` (the output's canonical location, ``Storage.location``: every spelling
        of one place is one lock), else of ``spec["output"]`` as given."""
        await self.ensure_group()
        job_id = job_id or new_job_id()
        lock = output_key(output_lock or spec["output"])
        keys = [
            job_key(job_id), JOBS, idempotency_key(idempotency, owner) if idempotency else JOBS,
            lock, QUEUE, STATS, owner_jobs_key(owner) if owner else JOBS, ACTIVE,
        ]  # fmt: skip
        args = [
            job_id, json.dumps(spec, sort_keys=True), time.time(), "1" if idempotency else "0",
            owner or "",
        ]  # fmt: skip
        outcome, found = await self._create(keys=keys, args=args)
        return found, CreateOutcome(outcome)

    async def find_idempotent(self, idempotency: str, *, owner: str | None = None) -> Job | None:
        """The job ``owner`` created with this Idempotency-Key, if it is still stored."""
        job_id = await self.redis.get(idempotency_key(idempotency, owner))
        return await self.get(job_id, owner=owner) if job_id else None

    async def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        """The job, or None when it is unknown, expired or not ``owner``'s."""
        if not valid_job_id(job_id):
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(job_key(job_id))
            pipe.lrange(job_key(job_id) + ":errors", 0, ERROR_SAMPLE - 1)
            fields, errors = await pipe.execute()
        if not fields or not visible(fields.get("owner"), owner):
            return None
        return job_from_hash(fields, errors)

    async def spec(self, job_id: str) -> tuple[JobState, dict[str, Any]] | None:
        """The job's state and spec (what a worker needs), or None when it is gone."""
        state, spec = await self.redis.hmget(job_key(job_id), ["state", "spec"])
        return (JobState(state), json.loads(spec)) if state and spec else None

    async def list(self, limit: int = 20, *, owner: str | None = None) -> list[Job]:
        """The most recent jobs (``owner``'s, from its own index) first; expired ones are
        dropped from the index on the way."""
        index = JOBS if owner is None else owner_jobs_key(owner)
        ids = await self.redis.zrevrange(index, 0, limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(job_key(job_id))
                pipe.lrange(job_key(job_id) + ":errors", 0, ERROR_SAMPLE - 1)
            replies = await pipe.execute()
        jobs, gone = [], []
        for job_id, fields, errors in zip(ids, replies[::2], replies[1::2], strict=True):
            if not fields:
                gone.append(job_id)
            elif visible(fields.get("owner"), owner):
                jobs.append(job_from_hash(fields, errors))
        if gone:
            await self.redis.zrem(index, *gone)
            if len(ids) == limit:  # room for older ones now
                return await self.list(limit, owner=owner)
        return jobs

    async def cancel(self, job_id: str) -> str:
        """Cancel a queued or running job: 'ok', or the state it is in ('' when unknown)."""
        return await self._finish_job(job_id, JobState.cancelled, allowed="queued,running")

    async def start(self, job_id: str) -> str:
        """A worker begins planning: queued -> running. Returns the state before ('' if gone)."""
        return await self._start(keys=[job_key(job_id), ACTIVE], args=[time.time()])

    async def is_planned(self, job_id: str) -> bool:
        return bool(await self.redis.hexists(job_key(job_id), "planned"))

    async def planned(
        self, job_id: str, *, total: int, chunks: int, failed: int, message: str,
        errors: Sequence[tuple[str, str]] = (),
    ) -> bool:  # fmt: skip
        """Record the plan (``failed``: images refused while planning, ``errors`` a sample of
        them), enqueue one message per chunk (once) and acknowledge ``message``."""
        keys = [job_key(job_id), QUEUE, job_key(job_id) + ":errors", ACTIVE]
        sample = [json.dumps({"image": i, "reason": r}) for i, r in errors[:ERROR_SAMPLE]]
        args = [total, chunks, failed, job_id, message, GROUP, time.time(), *sample]
        return bool(await self._planned(keys=keys, args=args))

    async def complete_chunk(
        self, job_id: str, chunk: int, *, message: str, done: int, failed: int,
        errors: list[tuple[str, str]],
    ) -> bool:  # fmt: skip
        """Count a stored chunk once and acknowledge ``message``; the last one enqueues the
        finalize message. False when the chunk was counted before (or the job is not running)."""
        key = job_key(job_id)
        keys = [key, key + ":chunks", key + ":errors", QUEUE, STATS, ACTIVE]
        sample = [json.dumps({"image": i, "reason": r}) for i, r in errors[:ERROR_SAMPLE]]
        args = [message, GROUP, chunk, done, failed, job_id, time.time(), *sample]
        return bool(await self._complete(keys=keys, args=args))

    async def attempt_failed(self, job_id: str, part: str, error: str) -> None:
        """Remember why a try of ``part`` (a chunk number, plan or finalize) failed: the dead
        letter quotes the last one. Nothing is noted for a job no longer active."""
        counter = "chunks_retried" if part.isdigit() else "steps_retried"
        keys = [job_key(job_id), job_key(job_id) + ":attempts", STATS]
        await self._attempt_failed(keys=keys, args=[part, error, counter])

    async def last_error(self, job_id: str, part: str) -> str | None:
        return await self.redis.hget(job_key(job_id) + ":attempts", part)

    async def dead_letter(
        self, job_id: str, *, message: str, kind: str, chunk: int | None, error: str,
        deliveries: int, images: list[str],
    ) -> bool:  # fmt: skip
        """Move ``message`` to the dead-letter stream with ``error`` (once: False when another
        worker did). A chunk counts its ``images`` as failed and the job goes on; a plan or
        finalize message fails the job."""
        key = job_key(job_id)
        keys = [
            key, key + ":chunks", key + ":errors", QUEUE, DEAD, STATS, key + ":dead", ACTIVE,
            EXPIRING,
        ]  # fmt: skip
        reason = f"chunk {chunk} failed {deliveries} times: {error}"
        sample = [json.dumps({"image": i, "reason": reason}) for i in images[:ERROR_SAMPLE]]
        args = [
            message, GROUP, kind, "" if chunk is None else chunk, error, deliveries, time.time(),
            job_id, len(images), self.retention_s, *sample,
        ]  # fmt: skip
        return bool(await self._dead_letter(keys=keys, args=args))

    async def dead_chunks(self, job_id: str) -> dict[int, str]:
        """The job's dead-lettered chunks and their errors."""
        found = await self.redis.hgetall(job_key(job_id) + ":dead")
        return {int(n): error for n, error in found.items()}

    async def complete(self, job_id: str, *, summary: dict[str, Any], message: str) -> str:
        """running -> completed with ``summary``; acknowledges the finalize ``message``."""
        return await self._finish_job(
            job_id, JobState.completed, allowed="running", summary=summary, message=message
        )

    async def fail(self, job_id: str, error: str, *, message: str = "") -> str:
        """queued or running -> failed with ``error`` (acknowledging ``message`` if given)."""
        return await self._finish_job(
            job_id, JobState.failed, allowed="queued,running", error=error, message=message
        )

    async def _finish_job(
        self, job_id: str, state: JobState, *, allowed: str, error: str = "",
        summary: dict[str, Any] | None = None, message: str = "",
    ) -> str:  # fmt: skip
        if not valid_job_id(job_id):
            return ""
        args = [
            state.value, time.time(), error, self.retention_s, allowed,
            json.dumps(summary) if summary is not None else "", message, GROUP,
        ]  # fmt: skip
        return await self._finish(keys=[job_key(job_id), QUEUE, STATS, ACTIVE, EXPIRING], args=args)

    async def fail_stale(self, job_id: str, *, since: float, stale_s: float, error: str) -> str:
        """queued or running -> failed with ``error`` if neither the job nor any worker moved
        after ``since`` (what the caller read) and ``since`` is ``stale_s`` ago: 'failed', or
        why not (service.jobs.scripts.FAIL_STALE). A worker that comes back then finds the job
        failed: its steps change nothing."""
        keys = [job_key(job_id), STATS, ACTIVE, EXPIRING, WORKERS, WORKERS_SEEN]
        args = [repr(since), time.time(), stale_s, error, self.retention_s]
        return await self._fail_stale(keys=keys, args=args)

    async def mark_finalized(self, job_id: str, summary: dict[str, Any]) -> bool:
        """Note that the job's results are written (``summary``: their totals); False when the
        job is no longer running."""
        return bool(await self._finalized(keys=[job_key(job_id)], args=[json.dumps(summary)]))

    async def finalized(self, job_id: str) -> dict[str, Any] | None:
        """The totals noted by ``mark_finalized``, or None."""
        found = await self.redis.hget(job_key(job_id), "finalized")
        return json.loads(found) if found else None

    async def state(self, job_id: str) -> JobState | None:
        found = await self.redis.hget(job_key(job_id), "state")
        return JobState(found) if found else None

    # Workers' signs of life.

    async def heartbeat(self, name: str, info: dict[str, Any], *, ttl_s: int) -> None:
        """Worker ``name`` is alive: its record (for the health check) and its beat."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{PREFIX}worker:{name}", json.dumps(info), ex=ttl_s)
            pipe.zadd(WORKERS, {name: now})
            pipe.zremrangebyscore(WORKERS, "-inf", now - 86_400)
            pipe.set(WORKERS_SEEN, now)
            await pipe.execute()

    async def leave(self, name: str) -> None:
        """Worker ``name`` stops: gone from the live workers, its leaving the last sign of life."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(f"{PREFIX}worker:{name}")
            pipe.zrem(WORKERS, name)
            pipe.set(WORKERS_SEEN, time.time())
            await pipe.execute()

    async def workers_seen(self) -> float:
        """The last time any worker beat or left (0 when none ever did)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(WORKERS_SEEN)
            pipe.zrevrange(WORKERS, 0, 0, withscores=True)
            seen, top = await pipe.execute()
        return max([float(seen or 0), *(score for _, score in top)])

    async def stats(self, *, worker_ttl_s: float) -> dict[str, int]:
        """Counters for /metrics, with the queue's length, pending messages and live workers."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(STATS)
            pipe.xlen(QUEUE)
            pipe.xlen(DEAD)
            pipe.zcount(WORKERS, time.time() - worker_ttl_s, "+inf")
            counters, queued, dead, workers = await pipe.execute()
        out = {k: int(v) for k, v in counters.items()}
        out.update(queue_messages=queued, dead_letters=dead, workers=workers)
        return out
