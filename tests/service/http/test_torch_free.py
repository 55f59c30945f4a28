"""The service never imports torch: checked in a fresh interpreter that builds the app, serves
requests through it, and in the memory maps of the live server's two processes (HTTP and
inference)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..conftest import Server

SCRIPT = """
import sys
from fastapi.testclient import TestClient
from labelclean.service.http.app import create_app
from labelclean.settings import Settings
import time
with TestClient(create_app(Settings(model=sys.argv[1]))) as client:
    for _ in range(200):
        if client.get("/readyz").status_code == 200:
            break
        time.sleep(0.05)
    r = client.post("/classify", files=[("image", ("a.png", open(sys.argv[2], "rb").read()))])
    assert r.status_code == 200, r.text
    r = client.post("/clean", files=[("image", ("a.png", open(sys.argv[2], "rb").read()))],
                    data={"labels": "[]"})
    assert r.status_code == 200, r.text
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision")))
print("TORCH MODULES:", loaded)
"""


def test_app_and_requests_load_no_torch(bundle_dir: Path, images, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(images[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle_dir), str(image)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "TORCH MODULES: []" in out.stdout


def test_live_server_has_no_torch_library_mapped(server: Server) -> None:
    with server.client() as c:
        assert c.post("/classify", files=[("image", ("a", b"x"))]).status_code == 415
    http_maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    inference_maps = Path(f"/proc/{server.inference_pid()}/maps").read_text()
    assert "onnxruntime" in inference_maps  # the check can see libraries
    for maps in (http_maps, inference_maps):
        assert "libtorch" not in maps and "/torch/" not in maps
