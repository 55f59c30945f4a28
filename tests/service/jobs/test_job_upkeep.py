"""Stale jobs, the indexes' retention and the chunk wall-time limit against a real redis-server
(no model, no storage): the steps the API's sweep (service.jobs.upkeep) and a worker's queue
(service.jobs.queue) take, in the order they take them."""

from __future__ import annotations

import asyncio

from labelclean.service.jobs.queue import JobQueue
from labelclean.service.jobs.store import JOBS, CreateOutcome, JobState, owner_jobs_key
from labelclean.service.jobs.upkeep import JobUpkeep

from .conftest import RedisServer
from .test_job_store import SPEC, _store, run


def test_a_job_is_failed_as_stale_only_with_no_live_worker_and_no_progress(
    redis_main: RedisServer, redis_db
):
    async def scenario():
        store = await _store(redis_main)
        upkeep = JobUpkeep(store, stale_s=0.3)
        queue = JobQueue(store.redis, consumer="w1", claim_idle_s=60)
        job_id, _ = await store.create(SPEC)
        plan = await queue.next(block_s=0.1)
        await store.start(job_id)
        await store.planned(job_id, total=4, chunks=2, failed=0, message=plan.id)
        first, second = await queue.next(block_s=0.1), await queue.next(block_s=0.1)
        await asyncio.sleep(0.4)
        await store.complete_chunk(job_id, 0, message=first.id, done=2, failed=0, errors=[])
        assert (await upkeep.sweep()).failed == []  # no worker seen, but the job moved
        await asyncio.sleep(0.4)
        await store.heartbeat("w1", {"name": "w1"}, ttl_s=15)
        assert (await upkeep.sweep()).failed == []  # nothing moved, but a worker lives
        await store.leave("w1")  # its last sign of life
        assert (await upkeep.sweep()).failed == []
        await asyncio.sleep(0.4)
        assert (await upkeep.sweep()).failed == [job_id]
        job = await store.get(job_id)
        assert job.state is JobState.failed
        assert job.error.startswith("stale: no live worker and no progress since ")
        assert "(LABELCLEAN_JOB_STALE_S=0.3)" in job.error
        # the worker comes back with the chunk it held: nothing of it counts, nothing moves
        late = {"message": second.id, "done": 2, "failed": 0, "errors": []}
        assert not await store.complete_chunk(job_id, 1, **late)
        assert await store.complete(job_id, summary={}, message="") == "failed"
        again = await store.get(job_id)
        assert (again.state, again.done, again.chunks_done) == (JobState.failed, 2, 1)
        assert (await store.create(SPEC))[1] is CreateOutcome.created  # the output is free
        assert (await upkeep.sweep()).failed == []  # the new job just started waiting
        await store.redis.aclose()

    run(scenario())


def test_finished_jobs_leave_every_index_after_retention(redis_main: RedisServer, redis_db):
    owner = "ab" * 32

    async def scenario():
        store = await _store(redis_main, retention_s=1)
        upkeep = JobUpkeep(store, stale_s=0)
        ids = []
        for n, who in enumerate([owner, owner, None, owner]):
            job_id, _ = await store.create(dict(SPEC, output=f"s3://b/o{n}/"), owner=who)
            ids.append(job_id)
        for job_id in ids[:3]:
            await store.cancel(job_id)
        assert (await upkeep.sweep()).pruned == 0  # finished, not yet past retention
        await asyncio.sleep(1.2)
        assert (await upkeep.sweep()).pruned == 3
        assert (await upkeep.sweep()).pruned == 0
        await store.redis.aclose()
        return ids

    ids = run(scenario())
    assert redis_db.zrange(JOBS, 0, -1) == [ids[3]]  # the active one stays
    assert redis_db.zrange(owner_jobs_key(owner), 0, -1) == [ids[3]]


def test_a_chunk_held_past_the_wall_time_can_be_taken_by_another_consumer(
    redis_main: RedisServer, redis_db
):
    async def scenario():
        store = await _store(redis_main)
        a = JobQueue(store.redis, consumer="a", claim_idle_s=0.2, chunk_wall_s=0.6)
        b = JobQueue(store.redis, consumer="b", claim_idle_s=0.2, chunk_wall_s=0.6)
        job_id, _ = await store.create(SPEC)
        plan = await a.next(block_s=0.1)
        await asyncio.sleep(0.7)
        assert await a.touch(plan)  # a plan (or a finalize) has no wall-time limit
        await store.start(job_id)
        await store.planned(job_id, total=3, chunks=1, failed=0, message=plan.id)
        held = await a.next(block_s=0.1)
        for _ in range(4):
            await asyncio.sleep(0.1)
            assert await a.touch(held)  # within the limit: a keeps it
        assert await b.next(block_s=0.05) is None
        await asyncio.sleep(0.3)
        assert not await a.touch(held)  # past it: touching keeps it no longer
        await asyncio.sleep(0.25)
        taken = await b.next(block_s=0.05)
        assert (taken.id, taken.deliveries) == (held.id, 2)
        assert await b.holds(taken) and not await a.holds(held)
        await store.redis.aclose()

    run(scenario())
