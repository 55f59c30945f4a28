"""Where bulk jobs live in Redis: the key names, the limits the scripts share, job ids, and the
client (decoded responses, quick retries). Torch-free.

Keys (prefix ``labelclean:``; one Redis, not Redis Cluster: scripts name keys they read):

    job:{id}             hash: state, spec (JSON), *_at times (progress_at: the last step
                         that moved it), total/done/failed images, chunks/chunks_done,
                         planned, error, summary (JSON totals), finalized (the summary, once
                         the results are written), owner (a keyed hash of the caller's API
                         key; absent when keys are off)
    job:{id}:chunks      set of the chunks counted
    job:{id}:errors      list: the first ERROR_SAMPLE per-image errors (JSON)
    job:{id}:dead        hash chunk -> error of its dead letter
    job:{id}:attempts    hash chunk -> error of its last failed try
    jobs                 sorted set id -> created time (GET /jobs), pruned of expired jobs
    owner:{owner}:jobs   the same, of one owner's jobs (GET /jobs with API keys)
    jobs:active          sorted set id -> progress_at of queued and running jobs (stale checks)
    jobs:expiring        sorted set "id" or "id:owner" -> when a finished job's keys expire:
                         what prunes the two indexes above (service.jobs.upkeep)
    owner-salt           the deployment's random salt of owner hashes (service.jobs.owners)
    idempotency:{sha256} the job created with that Idempotency-Key (by that owner)
    output:{uri}         the active job writing to that output prefix (one at a time)
    queue, queue:dead    the work stream (consumer group ``workers``) and the dead letters
    stats                counters for /metrics;  workers: sorted set name -> last heartbeat
    workers:seen         the last time any worker beat or left (a worker that left is gone
                         from ``workers``; this remembers when)
"""

from __future__ import annotations

import hashlib
import uuid

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

PREFIX = "labelclean:"
QUEUE = PREFIX + "queue"
DEAD = PREFIX + "queue:dead"
GROUP = "workers"
STATS = PREFIX + "stats"
WORKERS = PREFIX + "workers"
JOBS = PREFIX + "jobs"
ACTIVE = PREFIX + "jobs:active"
EXPIRING = PREFIX + "jobs:expiring"
WORKERS_SEEN = PREFIX + "workers:seen"
OWNER_SALT = PREFIX + "owner-salt"
ERROR_SAMPLE = 20
DEAD_MAXLEN = 10_000
UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
"""What redis-py raises when Redis cannot be reached (down, restarting, network)."""


def redis_client(url: str, *, timeout_s: float, retries: int) -> Redis:
    """A client with decoded responses that gives up after ``retries`` quick retries (callers
    handle an outage: the API answers 503, a worker backs off and reconnects). The retry is
    redis.asyncio's own: a synchronous one is converted with a warning on every start."""
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


def new_job_id() -> str:
    return uuid.uuid4().hex


def valid_job_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def idempotency_key(key: str, owner: str | None = None) -> str:
    """Where the job of an Idempotency-Key lives: one per owner and key (``owner`` None: keys
    are off, and the key alone names it, as before owners)."""
    scoped = key if owner is None else f"{owner}\n{key}"  # a header value holds no newline
    return f"{PREFIX}idempotency:{hashlib.sha256(scoped.encode()).hexdigest()}"


def owner_jobs_key(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:jobs"


def output_key(output: str) -> str:
    return f"{PREFIX}output:{output.rstrip('/')}"
