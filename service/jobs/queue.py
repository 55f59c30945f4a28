"""The work queue: one Redis stream (``labelclean:queue``) read by the consumer group ``workers``.

    queue = JobQueue(redis, consumer="host-1234-ab12", claim_idle_s=60, chunk_wall_s=3600)
    message = await queue.next(block_s=1.0)    # Message(id, kind, job, chunk, deliveries) | None
    ...work...                                 # the job store's steps acknowledge it
    await queue.retry_later(message, delay_s)  # a failed try: claimable again after the delay

Messages: ``plan`` (list the images, write chunk manifests, enqueue the chunks), ``chunk`` (clean
one chunk, store its results), ``finalize`` (join the parts). A message stays pending until the
step that stored its results acknowledges it (service.jobs.store). ``next`` gives, in order:
this consumer's own pending messages after a (re)connect, a message some consumer has held
longer than ``claim_idle_s`` (XAUTOCLAIM: its worker died or hung), then a new one. A worker
``touch``es the message it works on every few seconds, so a long chunk is not reclaimed from a
live worker, but only for ``chunk_wall_s`` after it took a chunk: a chunk held longer (its
worker is stuck, e.g. on a read that never returns, while its heartbeat goes on) is then
reclaimed like a silent worker's. Before it stores a chunk's results a worker checks that it
still ``holds`` it; if another took it, its result is dropped (the chunk is counted once
anyway: service.jobs.store). ``deliveries`` counts the tries; the worker dead-letters a message
past ``job_max_tries`` (service.jobs.store.JobStore.dead_letter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from .keys import DEAD, GROUP, QUEUE

# KEYS queue; ARGV group, consumer, message id, idle ms: reset (or set) the idle time of a
# message only while this consumer holds it (XCLAIM alone would take it from another).
_SET_IDLE = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #held == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""


@dataclass(frozen=True)
class Message:
    id: str
    kind: str  # plan | chunk | finalize
    job: str
    chunk: int | None
    deliveries: int  # 1 on the first try
    taken_at: float = field(default_factory=time.monotonic, compare=False)  # by this consumer

    @property
    def part(self) -> str:
        """What the message is about within its job: the chunk number, or plan / finalize."""
        return self.kind if self.chunk is None else str(self.chunk)

    @classmethod
    def parse(cls, message_id: str, fields: dict[str, str], deliveries: int) -> Message:
        chunk = fields.get("chunk")
        return cls(
            message_id, fields.get("kind", ""), fields.get("job", ""),
            int(chunk) if chunk not in (None, "") else None, deliveries,
        )  # fmt: skip


class JobQueue:
    """One consumer of the work stream."""

    def __init__(
        self, redis: Redis, *, consumer: str, claim_idle_s: float, chunk_wall_s: float = 0
    ) -> None:  # fmt: skip
        """``chunk_wall_s``: the longest this consumer keeps a chunk from others (0: no limit)."""
        self.redis = redis
        self.consumer = consumer
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.chunk_wall_s = chunk_wall_s
        self._own_first = True  # after start and every reconnect: our pending messages first
        self._set_idle = redis.register_script(_SET_IDLE)

    def reconnected(self) -> None:
        """Redis was away: messages this consumer held are read again first."""
        self._own_first = True

    async def next(self, *, block_s: float) -> Message | None:
        """The next message for this consumer, waiting up to ``block_s`` for a new one."""
        if self._own_first:
            own = await self._read("0", block_s=None)
            if own is not None:
                return own
            self._own_first = False
        claimed = await self.redis.xautoclaim(
            QUEUE, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=1
        )
        for message_id, fields in claimed[1]:
            if fields:  # None: the entry was deleted meanwhile (XAUTOCLAIM drops it)
                return Message.parse(message_id, fields, await self.deliveries(message_id))
        return await self._read(">", block_s=block_s)

    async def _read(self, start: str, *, block_s: float | None) -> Message | None:
        block = None if block_s is None else max(1, int(block_s * 1000))
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {QUEUE: start}, count=1, block=block
        )
        for _stream, entries in reply or ():
            for message_id, fields in entries:
                if not fields:  # pending but deleted from the stream: nothing left to do
                    await self.redis.xack(QUEUE, GROUP, message_id)
                    continue
                deliveries = 1 if start == ">" else await self.deliveries(message_id)
                return Message.parse(message_id, fields, deliveries)
        return None

    async def deliveries(self, message_id: str) -> int:
        """How often the message was delivered, this time included."""
        found = await self.redis.xpending_range(QUEUE, GROUP, message_id, message_id, 1)
        return int(found[0]["times_delivered"]) if found else 1

    def past_wall_time(self, message: Message) -> bool:
        """Whether ``message`` is a chunk this consumer has held longer than ``chunk_wall_s``."""
        held = time.monotonic() - message.taken_at
        return message.kind == "chunk" and 0 < self.chunk_wall_s < held

    async def touch(self, message: Message) -> bool:
        """Keep ``message`` from being reclaimed while this consumer works on it: False (and
        nothing done) when it does not hold it, or holds a chunk past the wall-time limit."""
        if self.past_wall_time(message):
            return False
        return await self._set_idle(
            keys=[QUEUE], args=[GROUP, self.consumer, message.id, 0]
        ) == 1  # fmt: skip

    async def holds(self, message: Message) -> bool:
        """Whether ``message`` is still pending with this consumer (no other took it)."""
        found = await self.redis.xpending_range(
            QUEUE, GROUP, message.id, message.id, 1, consumername=self.consumer
        )  # fmt: skip
        return bool(found)

    async def retry_later(self, message: Message, delay_s: float) -> None:
        """A failed try: any consumer may claim the message again after ``delay_s``."""
        idle = max(0, self.claim_idle_ms - int(delay_s * 1000))
        await self._set_idle(keys=[QUEUE], args=[GROUP, self.consumer, message.id, idle])

    async def skip(self, message: Message) -> None:
        """Acknowledge and drop a message with nothing to do (its job was cancelled or is gone)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(QUEUE, GROUP, message.id)
            pipe.xdel(QUEUE, message.id)
            await pipe.execute()

    async def drained(self) -> bool:
        """No message waits and none is pending with any consumer (``--burst`` stops then)."""
        pending = await self.redis.xpending(QUEUE, GROUP)
        if int(pending["pending"]) > 0:
            return False
        stream = await self.redis.xinfo_stream(QUEUE)
        groups = await self.redis.xinfo_groups(QUEUE)
        delivered = next((g["last-delivered-id"] for g in groups if g["name"] == GROUP), "0-0")
        return _id(delivered) >= _id(stream["last-generated-id"])

    async def held(self, consumer: str | None = None) -> list[dict[str, Any]]:
        """Pending messages (of one consumer): id, consumer, idle time, deliveries."""
        return await self.redis.xpending_range(
            QUEUE, GROUP, "-", "+", 1000, **({"consumername": consumer} if consumer else {})
        )


def _id(message_id: str) -> tuple[int, int]:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


async def dead_letters(redis: Redis, job_id: str | None = None, count: int = 1000) -> list[dict]:
    """The dead-letter stream's entries (of one job): job, kind, chunk, error, deliveries, at."""
    entries = await redis.xrange(DEAD, "-", "+", count=count)
    found = [dict(fields, id=message_id) for message_id, fields in entries]
    return [f for f in found if job_id is None or f.get("job") == job_id]
