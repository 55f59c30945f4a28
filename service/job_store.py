"""Bulk jobs' records in Redis: state, progress, a sample of errors, retention, and the atomic
steps that move a job along. Torch-free; redis-py's asyncio client.

    store = JobStore(redis, retention_s=settings.job_retention_s)
    job_id, outcome = await store.create(spec, idempotency_key="k1")  # + the plan message
    job = await store.get(job_id)          # Job: state, counts, times, images/s, error sample

Every step that changes a job and the queue together is one Lua script, so a worker that dies
between two Redis calls leaves nothing half done: creating a job enqueues its plan message;
planning enqueues its chunk messages once (``planned`` is set once); a stored chunk is counted
once (the set ``job:{id}:chunks``) and its message acknowledged in the same step; the step that
counts the last chunk enqueues the finalize message; a dead-lettered chunk counts its images as
failed. Finished jobs' keys expire after ``retention_s``.

Keys (prefix ``labelclean:``; one Redis, not Redis Cluster: scripts name keys they read):

    job:{id}             hash: state, spec (JSON), *_at times, total/done/failed images,
                         chunks/chunks_done, planned, error, summary (JSON totals)
    job:{id}:chunks      set of the chunks counted
    job:{id}:errors      list: the first ERROR_SAMPLE per-image errors (JSON)
    job:{id}:dead        hash chunk -> error of its dead letter
    job:{id}:attempts    hash chunk -> error of its last failed try
    jobs                 sorted set id -> created time (GET /jobs), pruned of expired jobs
    idempotency:{sha256} the job created with that Idempotency-Key
    output:{uri}         the active job writing to that output prefix (one at a time)
    queue, queue:dead    the work stream (consumer group ``workers``) and the dead letters
    stats                counters for /metrics;  workers: sorted set name -> last heartbeat
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

PREFIX = "labelclean:"
QUEUE = PREFIX + "queue"
DEAD = PREFIX + "queue:dead"
GROUP = "workers"
STATS = PREFIX + "stats"
WORKERS = PREFIX + "workers"
JOBS = PREFIX + "jobs"
ERROR_SAMPLE = 20
DEAD_MAXLEN = 10_000
UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
"""What redis-py raises when Redis cannot be reached (down, restarting, network)."""


def redis_client(url: str, *, timeout_s: float, retries: int) -> Redis:
    """A client with decoded responses that gives up after ``retries`` quick retries (callers
    handle an outage: the API answers 503, a worker backs off and reconnects)."""
    return Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=timeout_s,
        socket_timeout=max(timeout_s, 10.0), health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
    )  # fmt: skip


def safe_url(url: str) -> str:
    """A Redis URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = frozenset({JobState.completed, JobState.failed, JobState.cancelled})


class JobError(BaseModel):
    image: str = Field(description="ImageID")
    reason: str


class Job(BaseModel):
    """A job as GET /jobs/{id} shows it."""

    id: str
    state: JobState
    images: str = Field(description="the URI prefix of the images")
    labels: str = Field(description="the URI of the noisy labels CSV")
    output: str = Field(description="the URI prefix written: cleaned.csv, errors.csv, summary.json")
    options: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = Field(None, description="when a worker began planning it")
    finished_at: datetime | None = None
    total: int | None = Field(None, description="images in the job; null until planned")
    done: int = Field(0, description="images cleaned")
    failed: int = Field(0, description="images that could not be cleaned (errors.csv)")
    chunks: int | None = Field(None, description="chunks in the job; null until planned")
    chunks_done: int = 0
    images_per_s: float | None = Field(None, description="(done + failed) / running time")
    errors: list[JobError] = Field(
        default_factory=list, description=f"a sample of per-image errors (the first {ERROR_SAMPLE})"
    )
    error: str | None = Field(None, description="why the job failed")
    summary: dict[str, Any] | None = Field(None, description="totals of summary.json, when done")


def new_job_id() -> str:
    return uuid.uuid4().hex


def valid_job_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def idempotency_key(key: str) -> str:
    return f"{PREFIX}idempotency:{hashlib.sha256(key.encode()).hexdigest()}"


def output_key(output: str) -> str:
    return f"{PREFIX}output:{output.rstrip('/')}"


def _time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None else None


def job_from_hash(fields: dict[str, str], errors: list[str], now: float | None = None) -> Job:
    """A job hash (and its error sample) -> Job."""
    spec = json.loads(fields["spec"])
    done, failed = int(fields.get("done", 0)), int(fields.get("failed", 0))
    rate = None
    if fields.get("started_at"):
        end = float(fields.get("finished_at") or (now or time.time()))
        elapsed = end - float(fields["started_at"])
        rate = round((done + failed) / elapsed, 3) if elapsed > 0 else None
    return Job(
        id=fields["id"],
        state=JobState(fields["state"]),
        images=spec["images"],
        labels=spec["labels"],
        output=spec["output"],
        options=spec.get("options") or {},
        created_at=_time(fields["created_at"]),
        started_at=_time(fields.get("started_at")),
        finished_at=_time(fields.get("finished_at")),
        total=_int(fields.get("total")),
        done=done,
        failed=failed,
        chunks=_int(fields.get("chunks")),
        chunks_done=int(fields.get("chunks_done", 0)),
        images_per_s=rate,
        errors=[JobError(**json.loads(e)) for e in errors],
        error=fields.get("error"),
        summary=json.loads(fields["summary"]) if fields.get("summary") else None,
    )


# Shared by the scripts below: end a job (state, time, error), let its keys expire, release
# its output prefix, count it. KEYS are never built here but for the job's own suffixes.
_FINISH = """
local function finish(job, state, now, err, retention, stats)
  redis.call('HSET', job, 'state', state, 'finished_at', now)
  if err ~= '' then redis.call('HSET', job, 'error', err) end
  for _, suffix in ipairs({'', ':chunks', ':errors', ':dead', ':attempts'}) do
    redis.call('EXPIRE', job .. suffix, retention)
  end
  local idem = redis.call('HGET', job, 'idempotency')
  if idem then redis.call('EXPIRE', idem, retention) end
  local out = redis.call('HGET', job, 'output_lock')
  if out and redis.call('GET', out) == redis.call('HGET', job, 'id') then
    redis.call('DEL', out)
  end
  redis.call('HINCRBY', stats, 'jobs_' .. state, 1)
end
local function push_errors(list, first, cap)
  local room = cap - redis.call('LLEN', list)
  for i = first, math.min(#ARGV, first + room - 1) do redis.call('RPUSH', list, ARGV[i]) end
end
local function chunk_counted(job, queue, job_id)
  local d = redis.call('HINCRBY', job, 'chunks_done', 1)
  if d == tonumber(redis.call('HGET', job, 'chunks')) then
    redis.call('XADD', queue, '*', 'kind', 'finalize', 'job', job_id)
  end
end
"""

# KEYS job, jobs, idempotency (or ''), output lock, queue, stats
# ARGV id, spec, now, has idempotency key ('1'/'0')
_CREATE = """
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {'replayed', existing} end
end
local holder = redis.call('GET', KEYS[4])
if holder then return {'busy', holder} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'state', 'queued', 'spec', ARGV[2],
  'created_at', ARGV[3], 'done', 0, 'failed', 0, 'chunks_done', 0, 'output_lock', KEYS[4])
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[1], 'idempotency', KEYS[3])
end
redis.call('SET', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[5], '*', 'kind', 'plan', 'job', ARGV[1])
redis.call('HINCRBY', KEYS[6], 'jobs_created', 1)
return {'created', ARGV[1]}
"""

# KEYS job; ARGV now -> the state before (a queued job becomes running)
_START = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' then redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1]) end
return state or ''
"""

# KEYS job, queue, errors; ARGV total, chunks, failed (planning errors), job id, message id,
#      group, errors JSON...
_PLANNED = (
    _FINISH
    + """
local enqueued = 0
if redis.call('HGET', KEYS[1], 'state') == 'running'
    and redis.call('HSETNX', KEYS[1], 'planned', 1) == 1 then
  redis.call('HSET', KEYS[1], 'total', ARGV[1], 'chunks', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[3])
  push_errors(KEYS[3], 7, $SAMPLE)
  local n = tonumber(ARGV[2])
  if n == 0 then
    redis.call('XADD', KEYS[2], '*', 'kind', 'finalize', 'job', ARGV[4])
  end
  for i = 0, n - 1 do
    redis.call('XADD', KEYS[2], '*', 'kind', 'chunk', 'job', ARGV[4], 'chunk', i)
  end
  enqueued = 1
end
redis.call('XACK', KEYS[2], ARGV[6], ARGV[5])
redis.call('XDEL', KEYS[2], ARGV[5])
return enqueued
"""
).replace("$SAMPLE", str(ERROR_SAMPLE))

# KEYS job, chunks, errors, queue, stats
# ARGV message id, group, chunk, images done, images failed, job id, errors JSON...
_COMPLETE = (
    _FINISH
    + """
local counted = 0
if redis.call('HGET', KEYS[1], 'state') == 'running'
    and redis.call('SADD', KEYS[2], ARGV[3]) == 1 then
  counted = 1
  redis.call('HINCRBY', KEYS[1], 'done', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[5])
  redis.call('HINCRBY', KEYS[5], 'images_done', ARGV[4])
  redis.call('HINCRBY', KEYS[5], 'images_failed', ARGV[5])
  redis.call('HINCRBY', KEYS[5], 'chunks_done', 1)
  push_errors(KEYS[3], 7, $SAMPLE)
  chunk_counted(KEYS[1], KEYS[4], ARGV[6])
end
redis.call('XACK', KEYS[4], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[4], ARGV[1])
return counted
"""
).replace("$SAMPLE", str(ERROR_SAMPLE))

# KEYS job, chunks, errors, queue, dead stream, stats, dead hash
# ARGV message id, group, kind, chunk, error, deliveries, now, job id, images, retention,
#      errors JSON...
_DEAD_LETTER = (
    (
        _FINISH
        + """
if redis.call('XACK', KEYS[4], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', $DEAD_MAXLEN, '*', 'job', ARGV[8], 'kind', ARGV[3],
  'chunk', ARGV[4], 'error', ARGV[5], 'deliveries', ARGV[6], 'at', ARGV[7])
redis.call('HINCRBY', KEYS[6], 'messages_dead', 1)
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' and state ~= 'queued' then return 1 end
if ARGV[3] ~= 'chunk' then
  finish(KEYS[1], 'failed', ARGV[7],
    ARGV[3] .. ' failed ' .. ARGV[6] .. ' times: ' .. ARGV[5], ARGV[10], KEYS[6])
  return 1
end
if redis.call('SADD', KEYS[2], ARGV[4]) == 1 then
  redis.call('HSET', KEYS[7], ARGV[4], ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[9])
  redis.call('HINCRBY', KEYS[6], 'images_failed', ARGV[9])
  redis.call('HINCRBY', KEYS[6], 'chunks_dead', 1)
  push_errors(KEYS[3], 11, $SAMPLE)
  chunk_counted(KEYS[1], KEYS[4], ARGV[8])
end
return 1
"""
    )
    .replace("$SAMPLE", str(ERROR_SAMPLE))
    .replace("$DEAD_MAXLEN", str(DEAD_MAXLEN))
)

# KEYS job, queue, stats; ARGV state, now, error, retention, allowed states (comma-separated),
#      summary JSON ('' for none), message id ('' for none), group
_FINISH_JOB = (
    _FINISH
    + """
local state = redis.call('HGET', KEYS[1], 'state')
local result = state or ''
if state and string.find(',' .. ARGV[5] .. ',', ',' .. state .. ',', 1, true) then
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'summary', ARGV[6]) end
  finish(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], KEYS[3])
  result = 'ok'
end
if ARGV[7] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[8], ARGV[7])
  redis.call('XDEL', KEYS[2], ARGV[7])
end
return result
"""
)


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
        self._create = script(_CREATE)
        self._start = script(_START)
        self._planned = script(_PLANNED)
        self._complete = script(_COMPLETE)
        self._dead_letter = script(_DEAD_LETTER)
        self._finish = script(_FINISH_JOB)

    async def ensure_group(self) -> None:
        """The work stream and its consumer group (from the stream's start: nothing is missed)."""
        try:
            await self.redis.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
        except Exception as exc:  # redis.ResponseError; BUSYGROUP: it exists
            if "BUSYGROUP" not in str(exc):
                raise

    async def create(
        self, spec: dict[str, Any], *, idempotency: str | None = None, job_id: str | None = None
    ) -> tuple[str, CreateOutcome]:
        """A queued job for ``spec`` (JSON-able) and its plan message. With ``idempotency``, the
        job created earlier with that key instead; ``busy`` with the id of the active job that
        writes to the same output."""
        await self.ensure_group()
        job_id = job_id or new_job_id()
        keys = [
            job_key(job_id), JOBS, idempotency_key(idempotency) if idempotency else JOBS,
            output_key(spec["output"]), QUEUE, STATS,
        ]  # fmt: skip
        args = [job_id, json.dumps(spec, sort_keys=True), time.time(), "1" if idempotency else "0"]
        outcome, found = await self._create(keys=keys, args=args)
        return found, CreateOutcome(outcome)

    async def find_idempotent(self, idempotency: str) -> Job | None:
        job_id = await self.redis.get(idempotency_key(idempotency))
        return await self.get(job_id) if job_id else None

    async def get(self, job_id: str) -> Job | None:
        if not valid_job_id(job_id):
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(job_key(job_id))
            pipe.lrange(job_key(job_id) + ":errors", 0, ERROR_SAMPLE - 1)
            fields, errors = await pipe.execute()
        return job_from_hash(fields, errors) if fields else None

    async def spec(self, job_id: str) -> tuple[JobState, dict[str, Any]] | None:
        """The job's state and spec (what a worker needs), or None when it is gone."""
        state, spec = await self.redis.hmget(job_key(job_id), ["state", "spec"])
        return (JobState(state), json.loads(spec)) if state and spec else None

    async def list(self, limit: int = 20) -> list[Job]:
        """The most recent jobs first; expired ones are dropped from the index on the way."""
        ids = await self.redis.zrevrange(JOBS, 0, limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(job_key(job_id))
                pipe.lrange(job_key(job_id) + ":errors", 0, ERROR_SAMPLE - 1)
            replies = await pipe.execute()
        jobs, gone = [], []
        for job_id, fields, errors in zip(ids, replies[::2], replies[1::2], strict=True):
            if fields:
                jobs.append(job_from_hash(fields, errors))
            else:
                gone.append(job_id)
        if gone:
            await self.redis.zrem(JOBS, *gone)
            if len(ids) == limit:  # room for older ones now
                return await self.list(limit)
        return jobs

    async def cancel(self, job_id: str) -> str:
        """Cancel a queued or running job: 'ok', or the state it is in ('' when unknown)."""
        return await self._finish_job(job_id, JobState.cancelled, allowed="queued,running")

    async def start(self, job_id: str) -> str:
        """A worker begins planning: queued -> running. Returns the state before ('' if gone)."""
        return await self._start(keys=[job_key(job_id)], args=[time.time()])

    async def is_planned(self, job_id: str) -> bool:
        return bool(await self.redis.hexists(job_key(job_id), "planned"))

    async def planned(
        self, job_id: str, *, total: int, chunks: int, failed: int, message: str,
        errors: Sequence[tuple[str, str]] = (),
    ) -> bool:  # fmt: skip
        """Record the plan (``failed``: images refused while planning, ``errors`` a sample of
        them), enqueue one message per chunk (once) and acknowledge ``message``."""
        keys = [job_key(job_id), QUEUE, job_key(job_id) + ":errors"]
        sample = [json.dumps({"image": i, "reason": r}) for i, r in errors[:ERROR_SAMPLE]]
        args = [total, chunks, failed, job_id, message, GROUP, *sample]
        return bool(await self._planned(keys=keys, args=args))

    async def complete_chunk(
        self, job_id: str, chunk: int, *, message: str, done: int, failed: int,
        errors: list[tuple[str, str]],
    ) -> bool:  # fmt: skip
        """Count a stored chunk once and acknowledge ``message``; the last one enqueues the
        finalize message. False when the chunk was counted before (or the job is not running)."""
        key = job_key(job_id)
        keys = [key, key + ":chunks", key + ":errors", QUEUE, STATS]
        sample = [json.dumps({"image": i, "reason": r}) for i, r in errors[:ERROR_SAMPLE]]
        args = [message, GROUP, chunk, done, failed, job_id, *sample]
        return bool(await self._complete(keys=keys, args=args))

    async def attempt_failed(self, job_id: str, part: str, error: str) -> None:
        """Remember why a try of ``part`` (a chunk number, plan or finalize) failed: the dead
        letter quotes the last one."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(job_key(job_id) + ":attempts", part, error)
            pipe.hincrby(STATS, "chunks_retried" if part.isdigit() else "steps_retried", 1)
            await pipe.execute()

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
        keys = [key, key + ":chunks", key + ":errors", QUEUE, DEAD, STATS, key + ":dead"]
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
        return await self._finish(keys=[job_key(job_id), QUEUE, STATS], args=args)

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
