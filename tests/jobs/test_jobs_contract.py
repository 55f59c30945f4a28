"""The /jobs part of the contract, driven by schemathesis against a live server that has Redis
and S3 (the main contract test's server has neither): generated requests, valid and not, get no
5xx and answers that conform to openapi.yaml."""

from __future__ import annotations

import pytest
import schemathesis
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

CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance,
    response_schema_conformance, response_headers_conformance,
]  # fmt: skip

schema = schemathesis.openapi.from_dict(openapi_document()).include(path_regex="^/jobs")


@schema.parametrize()
@settings(
    max_examples=15, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
def test_live_server_honours_the_jobs_contract(
    case: schemathesis.Case, server: Server, redis_db
) -> None:
    case.call_and_validate(base_url=server.url, headers=server.headers, checks=CHECKS, timeout=30)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
