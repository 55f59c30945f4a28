"""openapi.yaml is the API: the app generates exactly it, and a live server honours it under
schemathesis (generated requests, valid and not: no 5xx, every response conforms)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from labelclean.service.openapi import openapi_document
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Server

CONTRACT = Path(__file__).resolve().parents[2] / "openapi.yaml"
# /jobs needs Redis and a bucket, which this server lacks: tests/jobs/test_jobs_contract.py
# drives those operations against a server that has both.
schema = schemathesis.openapi.from_path(CONTRACT).exclude(path_regex="^/jobs")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_app_schema_is_the_contract() -> None:
    """Fails when the app's generated schema and openapi.yaml disagree; to change the API on
    purpose: python -m labelclean.service.openapi > openapi.yaml"""
    assert openapi_document() == yaml.safe_load(CONTRACT.read_text())


def test_contract_paths() -> None:
    paths = yaml.safe_load(CONTRACT.read_text())["paths"]
    jobs = {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/results"}
    assert set(paths) == {"/classify", "/clean", "/healthz", "/readyz", "/model", "/metrics", *jobs}
    assert "security" not in paths["/healthz"]["get"]
    for path in ("/classify", "/clean", "/readyz", "/model", "/metrics"):
        method = "post" if path in ("/classify", "/clean") else "get"
        assert paths[path][method]["security"] == [{"HTTPBearer": []}]
    for path in jobs:
        for operation in paths[path].values():
            assert operation["security"] == [{"HTTPBearer": []}]


@schema.parametrize()
@settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
def test_live_server_honours_contract(case: schemathesis.Case, server: Server) -> None:
    case.call_and_validate(base_url=server.url, headers=server.headers, checks=CHECKS, timeout=30)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
