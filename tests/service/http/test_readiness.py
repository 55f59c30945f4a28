"""Liveness and readiness are separate; CUDA demanded but absent means not ready, never a
silent fall-back to CPU. (This machine has no GPU, and onnxruntime-gpu's CUDA provider cannot
load here, which is exactly the case to test.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from labelclean.model.runtime import CUDA, gpu_present

from ..conftest import Server


@pytest.fixture(scope="module")
def cuda_server(server_factory, bundle_dir: Path) -> Server:
    if gpu_present():
        pytest.skip("a GPU is present: CUDA may well load here")
    server = server_factory(bundle_dir, {"LABELCLEAN_DEVICE": "cuda"}, ready=False)
    wait_for(server, lambda info: bool(info["providers"]), "the inference process to report")
    return server


def wait_for(server: Server, done, what: str, timeout: float = 60) -> dict:
    """Poll GET /model until ``done(info)``; the model loads in the inference process."""
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while True:
            info = c.get("/model").json()
            if done(info):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {info}")
            time.sleep(0.1)


def test_cuda_demanded_but_absent_is_live_not_ready(cuda_server: Server, images) -> None:
    with cuda_server.client() as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        info = c.get("/model").json()
        classify = c.post("/classify", files=[("image", ("a.png", images[0]))])
        metrics = c.get("/metrics").text
    assert ready.status_code == 503
    error = ready.json()["error"]
    assert error["code"] == "model_not_ready"
    assert "CUDA was demanded" in error["message"] and "CPUExecutionProvider" in error["message"]
    assert info["ready"] is False and info["device"] == "cuda"
    assert info["provider"] == "CPUExecutionProvider" and CUDA not in info["providers"]
    assert classify.status_code == 503 and classify.json()["error"]["code"] == "model_not_ready"
    assert "labelclean_model_ready 0.0" in metrics


def test_auto_device_runs_on_cpu_and_is_ready(server: Server) -> None:
    with server.client() as c:
        r = c.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["provider"]) == ("ready", "CPUExecutionProvider")
    assert body["redis"] in ("ok", "unreachable")  # bulk jobs' Redis: reported, not required


def test_a_killed_inference_process_is_restarted_and_the_server_stays_up(
    server_factory, bundle_dir: Path, images
) -> None:
    server = server_factory(bundle_dir, {})
    os.kill(server.inference_pid(), signal.SIGKILL)
    info = wait_for(server, lambda i: not i["ready"], "the death to be noticed", timeout=10)
    assert "inference process exited" in info["reason"]
    with server.client() as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and "inference process exited" in r.json()["error"]["message"]
        down = c.post("/classify", files=[("image", ("a.png", images[0]))])
        assert down.status_code == 503 and down.json()["error"]["code"] == "model_not_ready"
    wait_for(server, lambda i: i["ready"], "the restarted inference process")
    with server.client() as c:
        r = c.post("/classify", files=[("image", ("a.png", images[0]))])
    assert r.status_code == 200 and r.json()["results"][0]["filename"] == "a.png"
    assert server.process.poll() is None
