"""A real Label Studio for the tests: `label-studio start` from its own virtual environment
(label-studio's dependencies conflict with the project's), on a
free loopback port with a fresh data folder, one user with a legacy API token.

    with label_studio(tmp_path / "ls", images=folder) as ls:
        ls.api.post("/api/projects", json={...})

The executable: $TEST_LABEL_STUDIO (`make test` sets it), else the one `make label-studio`
builds (~/.cache/labelclean/label-studio-VERSION). A missing one fails the test with the
command that builds it: nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ....conftest import free_port

VERSION = "1.23.2"
TOKEN = "0123456789abcdef0123456789abcdef01234567"  # the user's legacy API token
START_TIMEOUT_S = 240  # a fresh data folder runs every migration first (about 30 s here)


def executable() -> Path:
    default = Path.home() / f".cache/labelclean/label-studio-{VERSION}/bin/label-studio"
    path = Path(os.environ.get("TEST_LABEL_STUDIO") or default)
    if not path.is_file():
        pytest.fail(
            f"no Label Studio at {path}: run `make label-studio` (a virtual environment with "
            f"label-studio=={VERSION}), or set TEST_LABEL_STUDIO to a label-studio executable"
        )
    return path


@dataclass
class LabelStudio:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    started_s: float  # seconds from the start to the first healthy answer

    @property
    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=120
        )


@contextmanager
def label_studio(folder: Path, *, images: Path) -> Iterator[LabelStudio]:
    """Label Studio serving local files under ``images`` (document root /), allowed to call
    a backend and webhooks on loopback (ML_BLOCK_LOCAL_IP, SSRF_PROTECTION_ENABLED off)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")},
        "LABEL_STUDIO_BASE_DATA_DIR": str(folder / "data"),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "/",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "WEBHOOK_TIMEOUT": "30",
        "HOME": str(folder),  # nothing written to the user's ~/.local/share/label-studio
    }
    log = folder / "label-studio.log"
    command = [
        str(executable()), "start", "--no-browser", "--port", str(port),
        "--internal-host", "127.0.0.1", "--data-dir", str(folder / "data"),
        "--username", "reviewer@example.com", "--password", "reviewer-password-123",
        "--user-token", TOKEN, "--enable-legacy-api-token", "--log-level", "WARNING",
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=folder)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Label Studio exited ({process.returncode}): {log.read_text()}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"Label Studio not up after {START_TIMEOUT_S} s")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield LabelStudio(url, TOKEN, process, log, time.monotonic() - started)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
