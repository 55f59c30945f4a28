"""Retraining jobs in Redis: what Label Studio's "Start Training" queues (the
/label-studio/webhook's START_TRAINING, with LABELCLEAN_TRAINING_DATA set) and what
``labelclean train-worker`` runs (service.review.retrain_worker). Torch-free.

    queue = TrainingQueue(redis)
    job, new = await queue.submit(project="7")    # one job at a time: another ask gets it
    job_id = await queue.take("host-1-ab12", 1.0)  # a worker holds it (None: none waiting)
    await queue.finish(job_id, "host-1-ab12", "succeeded", run=..., bundle=...)

Keys (prefix ``labelclean:training:``; one Redis, as the bulk jobs):

    job:{id}        hash: state (queued, running, succeeded, failed), requested_at,
                    started_at, finished_at (epoch seconds), project, worker, tries, run,
                    bundle, report (JSON: the run's sizes and validation figures), error, note
    jobs            sorted set id -> requested_at (newest last)
    queue           list of the ids waiting (taken from the right)
    taken:{worker}  list: the id a worker holds (moved from the queue in one step)
    worker:{name}   a training worker's heartbeat (expires: its job goes back to the queue)
    active          the id of the job queued or running: a second START_TRAINING answers it

A worker that dies mid-training loses nothing: its heartbeat expires and the next worker that
looks puts the job back at the head of the queue (``recover``), up to ``max_tries`` tries. Only
the worker whose taken list holds a job records its outcome or gives it back: one that missed
its heartbeats (and lost the job to another) changes nothing. The newest ``KEEP`` jobs stay in
Redis: queueing one drops the older finished ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from ..jobs.keys import PREFIX, new_job_id, valid_job_id

TRAINING = PREFIX + "training:"
QUEUE = TRAINING + "queue"
ACTIVE = TRAINING + "active"
JOBS = TRAINING + "jobs"
STATES = ("queued", "running", "succeeded", "failed")
KEEP = 100  # jobs kept in Redis (GET /label-studio/training lists the newest 20)

# KEYS active, queue, jobs; ARGV id, now, project, job key prefix, KEEP -> {id, 1 if new}
_SUBMIT = """
local current = redis.call('GET', KEYS[1])
if current then
  local state = redis.call('HGET', ARGV[4] .. current, 'state')
  if state == 'queued' or state == 'running' then return {current, 0} end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', ARGV[4] .. ARGV[1], 'state', 'queued', 'requested_at', ARGV[2],
           'project', ARGV[3], 'tries', 0)
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
for _, old in ipairs(redis.call('ZRANGE', KEYS[3], 0, -tonumber(ARGV[5]) - 1)) do
  local state = redis.call('HGET', ARGV[4] .. old, 'state')
  if state ~= 'queued' and state ~= 'running' then
    redis.call('DEL', ARGV[4] .. old)
    redis.call('ZREM', KEYS[3], old)
  end
end
return {ARGV[1], 1}
"""

# KEYS taken list, job, active; ARGV id, then field, value pairs -> 1, or 0 (nothing changed)
# when the worker no longer holds the job (another took it back after its heartbeat expired).
_FINISH = """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return 1
"""

# KEYS taken list, job, queue; ARGV id, note -> 1, or 0 as _FINISH.
_RELEASE = """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'state', 'queued', 'note', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'tries', -1)
redis.call('RPUSH', KEYS[3], ARGV[1])
return 1
"""

# KEYS taken list, heartbeat, queue, active; ARGV job key prefix, max tries, now -> ids moved
# back to the queue (or failed past max tries), only when the worker's heartbeat is gone.
_RECOVER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local moved = {}
while true do
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  local key = ARGV[1] .. id
  local tries = tonumber(redis.call('HGET', key, 'tries') or '0')
  local worker = redis.call('HGET', key, 'worker') or '?'
  if tries >= tonumber(ARGV[2]) then
    redis.call('HSET', key, 'state', 'failed', 'finished_at', ARGV[3], 'error',
      'its training worker (' .. worker .. ') stopped mid-training on each of ' .. tries ..
      ' tries')
    if redis.call('GET', KEYS[4]) == id then redis.call('DEL', KEYS[4]) end
  else
    redis.call('HSET', key, 'state', 'queued', 'note',
      'its training worker (' .. worker .. ') stopped mid-training (try ' .. tries ..
      '); queued again')
    redis.call('RPUSH', KEYS[3], id)
  end
  table.insert(moved, id)
end
return moved
"""


def job_key(job_id: str) -> str:
    return f"{TRAINING}job:{job_id}"


def taken_key(worker: str) -> str:
    return f"{TRAINING}taken:{worker}"


def heartbeat_key(worker: str) -> str:
    return f"{TRAINING}worker:{worker}"


@dataclass(frozen=True)
class TrainingJob:
    id: str
    state: str
    fields: dict[str, str]

    def public(self) -> dict[str, Any]:
        """The job as the API answers it: numbers as numbers, the report as an object."""
        out: dict[str, Any] = {"id": self.id, "state": self.state}
        for name, value in sorted(self.fields.items()):
            if name == "state":
                continue
            if name.endswith("_at"):
                out[name] = float(value)
            elif name == "tries":
                out[name] = int(value)
            elif name == "report":
                out[name] = json.loads(value)
            else:
                out[name] = value
        return out


class TrainingQueue:
    def __init__(self, redis: Redis, *, max_tries: int = 3) -> None:
        self.redis = redis
        self.max_tries = max_tries
        self._submit = redis.register_script(_SUBMIT)
        self._recover = redis.register_script(_RECOVER)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)

    async def submit(self, *, project: str) -> tuple[TrainingJob, bool]:
        """Queue a retraining, or answer the one queued or running: (the job, whether new)."""
        keys = [ACTIVE, QUEUE, JOBS]
        args = [new_job_id(), time.time(), project, job_key(""), KEEP]
        job_id, new = await self._submit(keys, args)
        job = await self.get(job_id)
        assert job is not None  # written by the script just now, or queued/running before
        return job, bool(new)

    async def get(self, job_id: str) -> TrainingJob | None:
        if not valid_job_id(job_id):
            return None
        fields = await self.redis.hgetall(job_key(job_id))
        return TrainingJob(job_id, fields["state"], fields) if fields else None

    async def latest(self, count: int) -> list[TrainingJob]:
        """The newest ``count`` jobs, newest first."""
        found = [await self.get(i) for i in await self.redis.zrevrange(JOBS, 0, count - 1)]
        return [job for job in found if job is not None]

    async def workers(self) -> int:
        """Training workers alive now (their heartbeat not expired)."""
        return len([k async for k in self.redis.scan_iter(match=heartbeat_key("*"), count=100)])

    async def beat(self, worker: str, ttl_s: float, job_id: str | None = None) -> bool:
        """Renew the worker's heartbeat; whether it still holds ``job_id`` (a worker that
        missed its heartbeats may have lost it to another)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(heartbeat_key(worker), "1", px=max(1, int(ttl_s * 1000)))
            if job_id is not None:
                pipe.lpos(taken_key(worker), job_id)
            answers = await pipe.execute()
        return job_id is None or answers[1] is not None

    async def recover(self) -> list[str]:
        """Put back on the queue the jobs of workers whose heartbeat expired."""
        moved: list[str] = []
        async for key in self.redis.scan_iter(match=taken_key("*"), count=100):
            worker = key[len(taken_key("")) :]
            keys = [key, heartbeat_key(worker), QUEUE, ACTIVE]
            moved += await self._recover(keys, [job_key(""), self.max_tries, time.time()])
        return moved

    async def take(self, worker: str, block_s: float) -> str | None:
        """The next job for ``worker`` (held in its taken list), marked running; None if none
        came within ``block_s``. One its list holds already comes first: a take (or an outcome)
        cut short by Redis going away, begun again rather than held by a live worker forever."""
        job_id = await self.redis.lindex(taken_key(worker), -1)
        if job_id is None:
            job_id = await self.redis.blmove(QUEUE, taken_key(worker), block_s, "RIGHT", "LEFT")
        if job_id is None:
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(job_key(job_id), mapping={
                "state": "running", "started_at": time.time(), "worker": worker,
            })  # fmt: skip
            pipe.hincrby(job_key(job_id), "tries", 1)
            pipe.hdel(job_key(job_id), "error")
            await pipe.execute()
        return job_id

    async def release(self, job_id: str, worker: str, note: str) -> bool:
        """Give a job back untried (the worker is stopping): first in the queue again. False
        (nothing changed) when ``worker`` no longer holds it."""
        keys = [taken_key(worker), job_key(job_id), QUEUE]
        return bool(await self._release(keys, [job_id, note]))

    async def finish(self, job_id: str, worker: str, state: str, **fields: str) -> bool:
        """Record the outcome (succeeded or failed) and free the one-at-a-time slot. False
        (nothing changed) when ``worker`` no longer holds the job."""
        assert state in ("succeeded", "failed")
        pairs = {"state": state, "finished_at": time.time(), **fields}
        args = [job_id, *(x for pair in pairs.items() for x in pair)]
        return bool(await self._finish([taken_key(worker), job_key(job_id), ACTIVE], args))

    async def drained(self) -> bool:
        """No job waits and no worker holds one (a dead worker's job comes back: not yet)."""
        if await self.redis.llen(QUEUE):
            return False
        async for _ in self.redis.scan_iter(match=taken_key("*"), count=100):
            return False  # an emptied list is gone from Redis
        return True
