"""A worker whose Redis refuses its credentials (no password, or a wrong one, against a Redis with
``requirepass``) says so and exits with status 3, instead of calling Redis unreachable and
retrying for ever; the password never reaches its log. With the right one it works."""

from __future__ import annotations

import pytest

from .conftest import Workers, output


@pytest.mark.parametrize("credentials", ["", ":wrong-password-123@"])
def test_refused_credentials_stop_the_worker(redis_factory, workers: Workers, credentials) -> None:
    redis = redis_factory()
    redis.client().config_set("requirepass", "right-password-456")
    url = f"redis://{credentials}127.0.0.1:{redis.port}/0"
    process = workers.start(burst=False, redis_url=url)
    code = process.wait(60)
    log = output(process)
    assert code == 3, log
    assert "refused this worker's credentials" in log and "LABELCLEAN_REDIS_URL" in log
    assert "unreachable" not in log
    assert "wrong-password-123" not in log and "right-password-456" not in log
    right = f"redis://:right-password-456@127.0.0.1:{redis.port}/0"
    workers.run(redis_url=right)  # a burst worker: an empty queue, exit 0


def test_a_worker_without_storage_roots_does_not_start(workers: Workers) -> None:
    """Without LABELCLEAN_STORAGE_ROOTS (or FILE_ROOTS) every job's files are refused to a
    worker, so it would take jobs and fail them: it stops at once, naming the setting."""
    process = workers.start(
        burst=False, LABELCLEAN_STORAGE_ROOTS="", LABELCLEAN_FILE_ROOTS=""
    )  # fmt: skip
    code = process.wait(60)
    log = output(process)
    assert code == 2, log
    assert "LABELCLEAN_STORAGE_ROOTS is not set" in log and "Traceback" not in log
