"""``labelclean serve --workers 2``: two uvicorn workers share one inference process (one model,
one dynamic batcher), which ``serve`` restarts when it dies and stops on the way out, and they
pool their metrics."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import Server, burst

WORKERS_ENV = {
    "LABELCLEAN_DEVICE": "cpu",
    "LABELCLEAN_MAX_BATCH_SIZE": "8",
    "LABELCLEAN_MAX_QUEUE_DELAY_MS": "50",
}


def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)[1])


def ready_everywhere(server: Server, timeout: float = 60) -> None:
    """/readyz is 200 on ten fresh connections in a row (each may reach either worker)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 10:
        assert time.monotonic() < deadline, "the workers did not all become ready"
        status = httpx.get(server.url + "/readyz", timeout=5).status_code
        streak = streak + 1 if status == 200 else 0
        if status != 200:
            time.sleep(0.1)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_workers_share_one_inference_process_and_its_batches(
    server_factory, bundle_dir: Path, images
) -> None:
    server = server_factory(bundle_dir, WORKERS_ENV, args=("--workers", "2"))
    ready_everywhere(server)
    inference = server.inference_pid()  # one, not one per worker
    parent = int(Path(f"/proc/{inference}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent == server.process.pid  # started by `serve`, not by a worker

    requests = [
        httpx.Request("POST", f"{server.url}/classify",
                      files=[("image", (f"{i}.png", images[i % len(images)]))])
        for i in range(48)
    ]  # fmt: skip
    for first in (0, 24):  # two bursts of 24 concurrent requests, over both workers
        answers = burst(requests[first : first + 24])
        assert [a["results"][0]["filename"] for a in answers] == [
            f"{i}.png" for i in range(first, first + 24)
        ]
    # The workers pool their metrics, so whichever one answers the scrape reports the whole
    # server: 48 requests and images, each batch counted once, fewer batches than images.
    classify = 'endpoint="/classify",method="POST",status="200"'
    for _ in range(6):
        text = httpx.get(server.url + "/metrics", timeout=5).text
        assert metric(text, f"labelclean_requests_total{{{classify}}}") == 48
        assert metric(text, 'labelclean_images_total{endpoint="/classify"}') == 48
        assert metric(text, "labelclean_batch_size_sum") == 48
        assert metric(text, "labelclean_batch_size_count") < 48
        assert metric(text, "labelclean_model_ready") == 1


def test_a_killed_shared_inference_process_is_restarted_and_stopped_with_the_server(
    server_factory, bundle_dir: Path, images
) -> None:
    server = server_factory(bundle_dir, WORKERS_ENV, args=("--workers", "2"))
    ready_everywhere(server)
    first = server.inference_pid()
    socket_dir = Path(cmdline(first)[cmdline(first).index("--listen") + 1]).parent
    assert socket_dir.is_dir() and socket_dir.stat().st_mode & 0o077 == 0  # this user only

    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/readyz", timeout=5).status_code == 200:
        assert time.monotonic() < deadline, "the death went unnoticed"
        time.sleep(0.05)
    down = httpx.post(server.url + "/classify", files=[("image", ("a.png", images[0]))])
    assert down.status_code == 503 and down.json()["error"]["code"] == "model_not_ready"

    ready_everywhere(server)
    second = server.inference_pid()
    assert second != first
    for _ in range(4):  # both workers are back
        r = httpx.post(server.url + "/classify", files=[("image", ("a.png", images[0]))])
        assert r.status_code == 200 and r.json()["results"][0]["filename"] == "a.png"

    server.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert server.process.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    assert not socket_dir.exists()
