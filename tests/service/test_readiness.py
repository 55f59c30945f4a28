"""Liveness and readiness are separate; CUDA demanded but absent means not ready, never a
silent fall-back to CPU. (This machine has no GPU, and onnxruntime-gpu's CUDA provider cannot
load here, which is exactly the case to test.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from labelclean.model.runtime import CUDA, gpu_present

from .conftest import Server


@pytest.fixture(scope="module")
def cuda_server(server_factory, bundle_dir: Path) -> Server:
    if gpu_present():
        pytest.skip("a GPU is present: CUDA may well load here")
    return server_factory(bundle_dir, {"LABELCLEAN_DEVICE": "cuda"}, ready=False)


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
    assert r.status_code == 200 and r.json() == {
        "status": "ready",
        "provider": "CPUExecutionProvider",
    }
