"""The /jobs part of the contract, driven by schemathesis with every check (``--checks all``)
from the /openapi.json a live server with Redis, S3 (moto) and storage roots serves to a
caller with a key (the main contract test's server has none of them): generated requests,
valid and not, get no 5xx, answers that conform to the document, valid ones are accepted, and
invalid ones refused.

A valid POST /jobs names URIs under the server's roots (the served document's pattern), which
hold nothing there: it is refused as ``uri_unusable``, the only 422 tests/service/
schemathesis_hooks.py lets a valid job have (state, not schema)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.http.test_contract import run_schemathesis

from .conftest import Server


def test_live_server_honours_the_jobs_contract(server: Server, redis_db, tmp_path: Path) -> None:
    found = run_schemathesis(server.url, tmp_path, "--max-examples", "25",
                             "--include-path-regex", "^/jobs")  # fmt: skip
    assert found.returncode == 0, found.stdout[-6000:] + found.stderr[-2000:]
    assert "Selected: 5/12" in found.stdout, found.stdout
    assert "FAILURES" not in found.stdout and "ERRORS" not in found.stdout, found.stdout


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
