"""API keys as ``LABELCLEAN_API_KEYS`` lists them: ``team-a:KEY`` (a named key) or ``KEY``.

    parse_api_keys("team-a:0123456789abcdef01,fedcba98765432100123")
    -> (ApiKey(name="team-a", ...), ApiKey(name="key-3f2a9c1e", ...))

The name says who a caller is in logs; it is never a secret and never the job's owner (that is
a keyed hash of the key itself, service.jobs.owners). An unnamed key is named ``key-`` and the
first 8 hex digits of its SHA-256, so it can be told apart in logs without showing it. A name is
what comes before the first ``:`` when that is 1-64 letters, digits, ``.``, ``_`` or ``-``;
otherwise the whole entry is the key. Torch-free and free of the web stack (settings use it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

MIN_API_KEY_LENGTH = 16
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class ApiKey:
    """One key: its ``name`` (for logs) and its ``secret`` (compared, hashed, never shown)."""

    name: str
    secret: bytes = field(repr=False)


def unnamed(secret: str) -> str:
    """The name of a key given without one: ``key-`` + a short hash of it."""
    return "key-" + hashlib.sha256(secret.encode()).hexdigest()[:8]


def parse_api_key(entry: str) -> ApiKey:
    """One entry (``name:KEY`` or ``KEY``); ValueError naming the problem, never the key."""
    name, sep, secret = entry.partition(":")
    if not (sep and NAME.fullmatch(name)):
        name, secret = unnamed(entry), entry
    if len(secret) < MIN_API_KEY_LENGTH:
        raise ValueError(
            f"API key {name!r} is shorter than {MIN_API_KEY_LENGTH} characters: use long random "
            "keys (e.g. `openssl rand -hex 24`)"
        )
    if any(c.isspace() or c == "," for c in secret):
        raise ValueError(f"API key {name!r}: API keys may not contain spaces or commas")
    return ApiKey(name, secret.encode())


def parse_api_keys(entries: list[str]) -> tuple[ApiKey, ...]:
    """Every entry parsed; the same entry twice counts once; two keys with one name, or one
    key under two names, are refused (a caller would be two people, or two callers one)."""
    keys: dict[bytes, ApiKey] = {}
    names: dict[str, bytes] = {}
    for entry in entries:
        key = parse_api_key(entry)
        if names.get(key.name, key.secret) != key.secret:
            raise ValueError(f"two API keys are named {key.name!r}: give each key its own name")
        if keys.get(key.secret, key).name != key.name:
            raise ValueError(
                f"one API key is listed as {keys[key.secret].name!r} and as {key.name!r}"
            )
        keys[key.secret], names[key.name] = key, key.secret
    return tuple(keys.values())
