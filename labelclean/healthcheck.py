"""Container health checks (docker/docker-compose.yml, docker/Dockerfile*): exit 0 when healthy,
else 1 with one line on stderr saying why. The settings are the LABELCLEAN_* variables of the
environment, the same as the checked process has in its container.

    python -m labelclean.healthcheck api          # GET /readyz: model ready and Redis reachable
    python -m labelclean.healthcheck api --no-redis   # the model only (a server without jobs)
    python -m labelclean.healthcheck worker       # a live `labelclean worker` on this host

The API check asks the server itself (with the first API key when keys are on). The worker check
reads the heartbeats in Redis: every worker refreshes ``labelclean:worker:<name>`` every few seconds
with a short expiry (service/jobs/worker.py), and the check passes when one of them names this host
and a process that is alive here. Torch-free and quick: nothing but the settings, urllib and redis
is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import urllib.error
import urllib.request

from .service.jobs.store import PREFIX
from .settings import Settings

HEARTBEAT_PREFIX = PREFIX + "worker:"  # + the worker's name (service/jobs/store.py, heartbeat)
TIMEOUT_S = 4.0


class Unhealthy(Exception):
    pass


def local_url(settings: Settings, path: str) -> str:
    """The server's own address: a wildcard bind is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{path}"


def check_api(settings: Settings, *, redis: bool = True) -> str:
    """GET /readyz; raises Unhealthy unless the model is ready (and, with ``redis``, Redis too)."""
    request = urllib.request.Request(local_url(settings, "/readyz"))
    if settings.named_keys:  # the key alone, without its name
        request.add_header("Authorization", f"Bearer {settings.named_keys[0].secret.decode()}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"/readyz answered {exc.code}: {_message(exc.read())}") from None
    except (OSError, ValueError) as exc:
        raise Unhealthy(f"/readyz at {request.full_url}: {exc}") from None
    if body.get("status") != "ready":
        raise Unhealthy(f"/readyz: {body}")
    if redis and body.get("redis") != "ok":
        raise Unhealthy(f"Redis unreachable: {body.get('redis_error') or body.get('redis')}")
    return f"ready on {body.get('provider')}, redis {body.get('redis')}"


def _message(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw[:200].decode(errors="replace")


def check_worker(settings: Settings, *, host: str | None = None) -> str:
    """Raises Unhealthy unless a worker on ``host`` (this one) with a live process beats."""
    import redis

    host = host or socket.gethostname()
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
        decode_responses=True,
    )  # fmt: skip
    try:
        keys = list(client.scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=1000))
        beats = [json.loads(raw) for raw in client.mget(keys) if raw] if keys else []
    except (redis.RedisError, OSError) as exc:
        raise Unhealthy(f"cannot read worker heartbeats from Redis: {exc}") from None
    finally:
        client.close()
    mine = [b for b in beats if isinstance(b, dict) and b.get("host") == host]
    alive = [b for b in mine if _alive(b.get("pid"))]
    if not alive:
        raise Unhealthy(
            f"no live worker on {host} beats in Redis ({len(beats)} heartbeat(s), "
            f"{len(mine)} from this host)"
        )
    return ", ".join(f"{b.get('name')} on {b.get('provider')}, {b.get('handled')} handled"
                     for b in alive)  # fmt: skip


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labelclean.healthcheck", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("what", choices=["api", "worker"])
    parser.add_argument(
        "--no-redis", action="store_true", help="api: healthy without Redis (no bulk jobs)"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        if args.what == "api":
            said = check_api(settings, redis=not args.no_redis)
        else:
            said = check_worker(settings)
    except (Unhealthy, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"healthy: {said}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
