"""openapi.yaml is the API: the app generates exactly it, and a live server honours it under
schemathesis with every check (``schemathesis run --checks all``): requests the contract allows
are answered, those it forbids are refused with a 4xx, nothing is a 5xx, every response is as
documented.

The live run is driven from the served document (service.openapi): openapi.yaml narrowed to the
test server's model and settings (its label ids, class count, max_images, image formats and
highest min_precision),
with schemathesis' multipart encoding adapted in schemathesis_hooks.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from labelclean.service.openapi import openapi_document, served_document
from schemathesis.config import SchemathesisConfig

from labelclean.settings import Settings

from . import schemathesis_hooks  # noqa: F401 - registers the multipart encoding
from .conftest import AUTH, CLASSES, MAIN_ENV, Server, tiny_decision

CONTRACT = Path(__file__).resolve().parents[2] / "openapi.yaml"
MAIN = Settings(**{k.removeprefix("LABELCLEAN_").lower(): v for k, v in MAIN_ENV.items()})
IDS = [i for i, _ in CLASSES]  # the test bundle's label ids
LEVELS = tiny_decision(len(IDS)).min_precision_levels  # the minimum precisions it can meet


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


def test_served_document_only_narrows_the_contract() -> None:
    """The served document is openapi.yaml with constraints added (and the allowed image types
    a subset of the listed ones): everything the contract says still holds in it."""
    served = served_document(MAIN, IDS, LEVELS)

    def check(wide: Any, narrow: Any, where: str) -> None:
        if where.endswith("/encoding/image/contentType"):
            assert set(narrow.split(", ")) <= set(wide.split(", ")), where
        elif where.endswith("/maximum"):
            assert narrow <= wide, where
        elif isinstance(wide, dict):
            assert isinstance(narrow, dict) and wide.keys() <= narrow.keys(), where
            for key, value in wide.items():
                check(value, narrow[key], f"{where}/{key}")
        else:
            assert narrow == wide, where

    check(openapi_document(), served, "")
    assert served["components"]["schemas"]["LabelId"]["enum"] == IDS
    assert len(served["components"]["schemas"]["NoisyLabels"]["allOf"]) == len(IDS)
    clean = served["paths"]["/clean"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert clean["encoding"]["image"]["contentType"] == "image/png, image/jpeg"
    assert clean["schema"]["properties"]["image"]["maxItems"] == 16
    assert clean["schema"]["properties"]["labels"]["maxItems"] == 16
    classify = served["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert classify["multipart/form-data"]["schema"]["properties"]["top_k"]["maximum"] == 10
    assert clean["schema"]["properties"]["min_precision"]["maximum"] == max(LEVELS)


config = SchemathesisConfig.from_path(Path(__file__).with_name("schemathesis.toml"))
# /jobs needs Redis and a bucket, which this server lacks: tests/jobs/test_jobs_contract.py
# drives those operations against a server that has both.
served = served_document(MAIN, IDS, LEVELS)
schema = schemathesis.openapi.from_dict(served, config=config).exclude(path_regex="^/jobs")
schema.config.update(headers=AUTH)  # schemathesis run -H "Authorization: Bearer ..."
schema.config.checks.update(included_check_names=["all"])  # --checks all


@schema.parametrize()
@settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
def test_live_server_honours_contract(case: schemathesis.Case, server: Server) -> None:
    case.call_and_validate(base_url=server.url, timeout=30)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
