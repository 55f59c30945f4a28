"""The job store's atomic steps and the queue's delivery rules, against a real redis-server (no
model, no storage): each step here is what a worker or the API does, in the order they do it."""

from __future__ import annotations

import asyncio
import time
import warnings

import pytest
import redis
from labelclean.service.http.auth import ANONYMOUS, Caller
from labelclean.service.jobs.owners import Owners
from labelclean.service.jobs.queue import JobQueue, dead_letters
from labelclean.service.jobs.store import (
    DEAD,
    JOBS,
    QUEUE,
    CreateOutcome,
    JobState,
    JobStore,
    job_key,
    redis_client,
)

from .conftest import RedisServer

SPEC = {"images": "s3://b/i/", "labels": "s3://b/l.csv", "output": "s3://b/o/", "options": {}}


def run(coro):
    return asyncio.run(coro)


async def _store(server: RedisServer, retention_s: int = 3600) -> JobStore:
    return JobStore(redis_client(server.url, timeout_s=1, retries=0), retention_s=retention_s)


def test_create_is_idempotent_and_one_job_writes_an_output(redis_main: RedisServer, redis_db):
    async def scenario():
        store = await _store(redis_main)
        first, outcome = await store.create(SPEC, idempotency="key-1")
        assert outcome is CreateOutcome.created
        again, outcome = await store.create(SPEC, idempotency="key-1")
        assert (again, outcome) == (first, CreateOutcome.replayed)
        other = dict(SPEC, images="s3://b/other/")
        holder, outcome = await store.create(other)  # same output while the first is active
        assert (holder, outcome) == (first, CreateOutcome.busy)
        assert await store.cancel(first) == "ok"
        assert await store.cancel(first) == "cancelled"  # a second cancel changes nothing
        second, outcome = await store.create(other)
        assert outcome is CreateOutcome.created and second != first
        jobs = await store.list(10)
        assert [j.id for j in jobs] == [second, first]  # newest first
        assert jobs[1].state is JobState.cancelled and jobs[1].finished_at is not None
        await store.redis.aclose()

    run(scenario())
    assert redis_db.xlen(QUEUE) == 2  # one plan message per created job, none for replays


def test_a_chunk_counts_once_and_the_last_one_enqueues_finalize(redis_main, redis_db):
    async def scenario():
        store = await _store(redis_main, retention_s=120)
        queue = JobQueue(store.redis, consumer="w1", claim_idle_s=60)
        job_id, _ = await store.create(SPEC, idempotency="k")
        plan = await queue.next(block_s=0.1)
        assert (plan.kind, plan.job, plan.deliveries) == ("plan", job_id, 1)
        assert await store.start(job_id) == "queued"
        assert await store.planned(job_id, total=5, chunks=2, failed=1, message=plan.id)
        assert not await store.planned(job_id, total=5, chunks=2, failed=1, message=plan.id)
        chunks = [await queue.next(block_s=0.1) for _ in range(2)]
        assert [(m.kind, m.chunk) for m in chunks] == [("chunk", 0), ("chunk", 1)]
        errors = [("a", "corrupt")]
        kwargs = {"done": 2, "failed": 1, "errors": errors}
        assert await store.complete_chunk(job_id, 0, message=chunks[0].id, **kwargs)
        assert not await store.complete_chunk(job_id, 0, message=chunks[0].id, **kwargs)
        job = await store.get(job_id)
        assert (job.state, job.done, job.failed, job.chunks_done) == ("running", 2, 2, 1)
        assert await queue.next(block_s=0.1) is None  # no finalize before the last chunk
        assert await store.complete_chunk(job_id, 1, message=chunks[1].id, done=2, failed=0,
                                          errors=[])  # fmt: skip
        final = await queue.next(block_s=0.1)
        assert (final.kind, final.job) == ("finalize", job_id)
        assert await store.complete(job_id, summary={"images": 5}, message=final.id) == "ok"
        assert await queue.next(block_s=0.1) is None and await queue.drained()
        job = await store.get(job_id)
        assert job.state is JobState.completed and job.summary == {"images": 5}
        assert (job.total, job.done, job.failed) == (5, 4, 2)
        assert [e.model_dump() for e in job.errors] == [{"image": "a", "reason": "corrupt"}]
        assert job.images_per_s and job.images_per_s > 0
        await store.redis.aclose()
        return job_id

    job_id = run(scenario())
    for suffix in ("", ":chunks", ":errors"):  # finished: everything expires after retention
        assert 0 < redis_db.ttl(job_key(job_id) + suffix) <= 120
    assert redis_db.xlen(QUEUE) == 0  # acknowledged messages are deleted from the stream
    stats = redis_db.hgetall("labelclean:stats")
    assert stats["chunks_done"] == "2" and stats["jobs_completed"] == "1"


def test_an_idle_message_is_reclaimed_and_dead_lettered_after_its_tries(redis_main, redis_db):
    async def scenario():
        store = await _store(redis_main)
        a = JobQueue(store.redis, consumer="a", claim_idle_s=0.2)
        b = JobQueue(store.redis, consumer="b", claim_idle_s=0.2)
        job_id, _ = await store.create(SPEC)
        plan = await a.next(block_s=0.1)
        await store.start(job_id)
        await store.planned(job_id, total=3, chunks=1, failed=0, message=plan.id)
        held = await a.next(block_s=0.1)
        assert held.deliveries == 1
        await asyncio.sleep(0.1)
        assert await a.touch(held)  # a works on it: b may not take it yet
        assert await b.next(block_s=0.05) is None
        await asyncio.sleep(0.3)  # a went silent
        taken = await b.next(block_s=0.05)
        assert (taken.id, taken.deliveries) == (held.id, 2)
        assert not await a.touch(held)  # a no longer holds it (and does not take it back)
        await store.attempt_failed(job_id, "0", "OSError: disk gone")
        await b.retry_later(taken, 0.0)
        again = await a.next(block_s=0.05)  # claimable at once after the failed try
        assert (again.id, again.deliveries) == (held.id, 3)
        assert await store.last_error(job_id, "0") == "OSError: disk gone"
        assert await store.dead_letter(
            job_id, message=again.id, kind="chunk", chunk=0, error="OSError: disk gone",
            deliveries=3, images=["x", "y", "z"],
        )  # fmt: skip
        assert not await store.dead_letter(
            job_id, message=again.id, kind="chunk", chunk=0, error="twice", deliveries=3,
            images=["x", "y", "z"],
        )  # fmt: skip
        final = await a.next(block_s=0.1)  # the dead chunk was the last one: finalize
        assert final.kind == "finalize"
        assert await store.dead_chunks(job_id) == {0: "OSError: disk gone"}
        job = await store.get(job_id)
        assert (job.failed, job.chunks_done) == (3, 1)
        assert "chunk 0 failed 3 times: OSError: disk gone" in job.errors[0].reason
        dead = await dead_letters(store.redis, job_id)
        assert len(dead) == 1 and dead[0]["chunk"] == "0" and dead[0]["deliveries"] == "3"
        await store.redis.aclose()

    run(scenario())


def test_a_plan_that_keeps_failing_fails_the_job(redis_main, redis_db):
    async def scenario():
        store = await _store(redis_main)
        queue = JobQueue(store.redis, consumer="a", claim_idle_s=60)
        job_id, _ = await store.create(SPEC, idempotency="k2")
        plan = await queue.next(block_s=0.1)
        await store.start(job_id)
        await store.dead_letter(
            job_id, message=plan.id, kind="plan", chunk=None, error="StorageError: gone",
            deliveries=3, images=[],
        )  # fmt: skip
        job = await store.get(job_id)
        assert job.state is JobState.failed and "plan failed 3 times" in job.error
        # the output is free again, the key still names the failed job
        assert (await store.create(SPEC, idempotency="k2"))[0] == job_id
        assert (await store.create(SPEC))[1] is CreateOutcome.created
        await store.redis.aclose()

    run(scenario())
    assert redis_db.xlen(DEAD) == 1


def test_expired_jobs_leave_the_list(redis_main, redis_db):
    async def scenario():
        store = await _store(redis_main)
        ids = []
        for i in range(3):
            job_id, _ = await store.create(dict(SPEC, output=f"s3://b/o{i}/"))
            ids.append(job_id)
            time.sleep(0.01)
        await store.redis.delete(job_key(ids[1]))  # as retention would
        assert [j.id for j in await store.list(2)] == [ids[2], ids[0]]
        assert await store.get(ids[1]) is None and await store.get("../../etc") is None
        await store.redis.aclose()

    run(scenario())
    assert redis_db.zcard(JOBS) == 2


def test_unreachable_redis_raises_connection_errors(redis_factory):
    server = redis_factory()
    server.kill()

    async def scenario():
        store = await _store(server)
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.create(SPEC)
        await store.redis.aclose()

    run(scenario())


def test_owners_scope_what_a_caller_sees(redis_main: RedisServer, redis_db):
    """Owner hashes agree across API processes (one salt in Redis) and differ per key; ``get``,
    ``list`` and ``find_idempotent`` answer for the owner's jobs only; a job without an owner
    (made before owners, or with keys off) shows only to the shared caller (owner None)."""

    async def scenario():
        store = await _store(redis_main)
        owners, elsewhere = Owners(store.redis), Owners(store.redis)  # two API processes
        a = await owners.of(Caller("team-a", b"a" * 16))
        b = await elsewhere.of(Caller("team-b", b"b" * 16))
        assert a == await elsewhere.of(Caller("renamed", b"a" * 16)) and len(a) == 64 and a != b
        assert await owners.of(ANONYMOUS) is None
        a_job, _ = await store.create(SPEC, idempotency="k", owner=a)
        b_job, outcome = await store.create(dict(SPEC, output="s3://b/o2/"), idempotency="k",
                                            owner=b)  # fmt: skip
        assert outcome is CreateOutcome.created and b_job != a_job
        legacy, _ = await store.create(dict(SPEC, output="s3://b/o3/"))
        assert [j.id for j in await store.list(10, owner=a)] == [a_job]
        assert [j.id for j in await store.list(10)] == [legacy, b_job, a_job]
        assert await store.get(a_job, owner=b) is None and await store.get(legacy, owner=a) is None
        assert (await store.get(a_job, owner=a)).id == (await store.get(a_job)).id == a_job
        assert (await store.find_idempotent("k", owner=b)).id == b_job
        assert await store.find_idempotent("k") is None  # keys off: its own key space
        holder, outcome = await store.create(SPEC, owner=b)  # A's output: busy, A's id
        assert (holder, outcome) == (a_job, CreateOutcome.busy)
        await store.redis.aclose()

    run(scenario())
    assert len(redis_db.get("labelclean:owner-salt")) == 64


def test_the_client_retries_the_asyncio_way(redis_main: RedisServer):
    """No "synchronous redis.retry.Retry was passed to an asyncio client" warning."""

    async def scenario():
        client = redis_client(redis_main.url, timeout_s=1, retries=2)
        assert await client.ping()
        await client.aclose()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(scenario())
