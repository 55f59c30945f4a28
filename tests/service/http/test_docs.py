"""/docs (Swagger UI, with the bearer key field) and /openapi.json serve the contract file
openapi.yaml without a key; LABELCLEAN_DOCS=false turns both off. Neither is in the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from labelclean.service.http.app import create_app

from labelclean.settings import Settings

CONTRACT = Path(__file__).resolve().parents[3] / "openapi.yaml"
KEY = "docs-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def client() -> TestClient:
    # No lifespan (no model, no inference process): these routes need neither.
    return TestClient(create_app(Settings(api_keys=[KEY])))


def test_openapi_json_is_the_contract_and_needs_no_key(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    document = r.json()
    assert document == yaml.safe_load(CONTRACT.read_text())
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert not {"/docs", "/openapi.json"} & set(document["paths"])
    assert client.get("/model").status_code == 401  # the rest still needs the key


def test_docs_is_swagger_ui_on_the_contract(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in r.text and "url: '/openapi.json'" in r.text
    assert '"persistAuthorization": true' in r.text  # the key typed in Authorize is kept


def test_a_setting_turns_both_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELCLEAN_DOCS", "false")
    off = TestClient(create_app(Settings()))
    for path in ("/docs", "/openapi.json"):
        r = off.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"], path
