"""Who owns a bulk job: the caller's API key, stored as a keyed hash, never as the key.

    owners = Owners(redis)
    owner = await owners.of(caller)   # 64 hex digits; None when API keys are off
    visible(job_owner, owner)         # whether that caller may see the job

The hash is HMAC-SHA256 of the key under the deployment's salt: 32 random bytes kept in Redis
(``labelclean:owner-salt``), made by the first API process that needs it, so every API process
sharing the Redis computes the same owner and nothing stored in Redis is the key or a plain
hash of it. The salt is read on each use (one GET), so a Redis that was emptied (its jobs gone)
gets a new salt that every process then uses alike.

With API keys off there is one shared caller: owner None, which sees every job. Jobs created
before owners existed (or while keys were off) have no owner: they are seen only with keys off.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from redis.asyncio import Redis

from .keys import OWNER_SALT


@dataclass(frozen=True)
class Caller:
    """Who sent a request (service.http.auth answers it): ``name`` (for logs) and ``key`` (None
    when keys are off: then every caller is the same one)."""

    name: str
    key: bytes | None = field(default=None, repr=False)


ANONYMOUS = Caller("anonymous")


class Owners:
    """Owner hashes of callers, on one Redis (decoded responses)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._hashes: dict[tuple[str, bytes], str] = {}

    async def salt(self) -> str:
        """The deployment's salt (hex), made once with SET NX: concurrent makers agree."""
        found = await self.redis.get(OWNER_SALT)
        if found is None:
            await self.redis.set(OWNER_SALT, secrets.token_hex(32), nx=True)
            found = await self.redis.get(OWNER_SALT)
        return found

    async def of(self, caller: Caller) -> str | None:
        """The owner id of ``caller``'s jobs; None when API keys are off."""
        if caller.key is None:
            return None
        salt = await self.salt()
        owner = self._hashes.get((salt, caller.key))
        if owner is None:
            owner = hmac.new(bytes.fromhex(salt), caller.key, hashlib.sha256).hexdigest()
            self._hashes[(salt, caller.key)] = owner  # one entry per key (and salt)
        return owner


def visible(job_owner: str | None, owner: str | None) -> bool:
    """Whether a job owned by ``job_owner`` is shown to the caller ``owner`` (None: keys off,
    every job)."""
    if owner is None:
        return True
    return job_owner is not None and hmac.compare_digest(job_owner, owner)
