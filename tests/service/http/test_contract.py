"""openapi.yaml is the API: the app generates exactly it, and a live server honours it under
schemathesis with every check (``schemathesis run --checks all``): requests the contract allows
are answered, those it forbids are refused with a 4xx, nothing is a 5xx, every response is as
documented.

The live run is driven from what the server serves at /openapi.json to a caller with a key: the
served document (service.http.openapi), openapi.yaml narrowed to the server's model and settings
(its label ids, class count, max_images, image formats, highest min_precision and storage
roots), with the settings of tests/service/http/schemathesis.toml and the hooks it loads
(schemathesis_hooks.py), as ``schemathesis --config-file tests/service/http/schemathesis.toml run
--checks all URL/openapi.json -H "Authorization: Bearer KEY"`` runs it. /jobs is driven in
tests/service/jobs/test_jobs_contract.py, against a server with Redis and storage roots."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from labelclean.service.http.contract import openapi_document, served_document

from labelclean.settings import Settings
from labelclean.storage import Storage

from ..conftest import AUTH, CLASSES, MAIN_ENV, Server, tiny_decision

ROOT = Path(__file__).resolve().parents[3]
CONTRACT = ROOT / "openapi.yaml"
CONFIG = Path(__file__).with_name("schemathesis.toml")  # loads schemathesis_hooks.py
AUTH_VALUE = AUTH["Authorization"]
MAIN = Settings(**{k.removeprefix("LABELCLEAN_").lower(): v for k, v in MAIN_ENV.items()})
IDS = [i for i, _ in CLASSES]  # the test bundle's label ids
LEVELS = tiny_decision(len(IDS)).min_precision_levels  # the minimum precisions it can meet


def test_app_schema_is_the_contract() -> None:
    """Fails when the app's generated schema and openapi.yaml disagree; to change the API on
    purpose: python -m labelclean.service.http.contract > openapi.yaml"""
    assert openapi_document() == yaml.safe_load(CONTRACT.read_text())


def test_contract_paths() -> None:
    paths = yaml.safe_load(CONTRACT.read_text())["paths"]
    jobs = {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/results"}
    assert set(paths) == {"/classify", "/clean", "/healthz", "/readyz", "/model", "/model/reload",
                          "/metrics", *jobs}  # fmt: skip
    assert "security" not in paths["/healthz"]["get"]
    for path in ("/classify", "/clean", "/readyz", "/model", "/model/reload", "/metrics"):
        method = "post" if path in ("/classify", "/clean", "/model/reload") else "get"
        assert paths[path][method]["security"] == [{"HTTPBearer": []}]
    for path in jobs:
        for operation in paths[path].values():
            assert operation["security"] == [{"HTTPBearer": []}]


def narrows(wide: Any, narrow: Any, where: str = "") -> None:
    """``narrow`` is ``wide`` with constraints added (and the allowed image types a subset of the
    listed ones, maximums lowered)."""
    if where.endswith("/encoding/image/contentType"):
        assert set(narrow.split(", ")) <= set(wide.split(", ")), where
    elif where.endswith("/maximum"):
        assert narrow <= wide, where
    elif isinstance(wide, dict):
        assert isinstance(narrow, dict) and wide.keys() <= narrow.keys(), where
        for key, value in wide.items():
            narrows(value, narrow[key], f"{where}/{key}")
    elif isinstance(wide, list) and where.endswith(("/anyOf", "/oneOf")):
        assert isinstance(narrow, list) and len(narrow) == len(wide), where
        for n, (a, b) in enumerate(zip(wide, narrow, strict=True)):
            narrows(a, b, f"{where}/{n}")
    else:
        assert narrow == wide, where


def test_served_document_only_narrows_the_contract() -> None:
    """The served document is openapi.yaml with constraints added: everything the contract says
    still holds in it."""
    served = served_document(MAIN, IDS, LEVELS)
    narrows(openapi_document(), served)
    assert served["components"]["schemas"]["LabelId"]["enum"] == IDS
    assert len(served["components"]["schemas"]["NoisyLabels"]["allOf"]) == len(IDS)
    clean = served["paths"]["/clean"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert clean["encoding"]["image"]["contentType"] == "image/png, image/jpeg"
    assert clean["schema"]["properties"]["image"]["maxItems"] == 16
    assert clean["schema"]["properties"]["labels"]["maxItems"] == 16
    classify = served["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert classify["multipart/form-data"]["schema"]["properties"]["top_k"]["maximum"] == 10
    assert clean["schema"]["properties"]["min_precision"]["maximum"] == max(LEVELS)


def test_job_uris_are_narrowed_to_the_storage_roots() -> None:
    """A job URI the served document allows passes the server's confinement; the spellings the
    confinement refuses or reads as another place do not match it."""
    roots = {"storage_roots": ("s3://jobs/", "s3://confined/in/"), "file_roots": (Path("/srv/in"),)}
    confined = MAIN.model_copy(update=roots)
    spec = served_document(confined, IDS, LEVELS)["components"]["schemas"]["JobSpec"]
    pattern = re.compile(spec["properties"]["images"]["pattern"])
    storage = Storage.from_settings(confined)
    allowed = ["s3://jobs", "s3://jobs/", "s3://jobs/a/b.csv", "s3://confined/in/x_y-1.2/",
               "file:///srv/in", "file:///srv/in/images/"]  # fmt: skip
    for uri in allowed:
        assert pattern.search(uri), uri
        storage.check(uri)
    refused = ["s3://jobs/../x", "s3://jobs/./a", "s3://jobs//a", "s3://confined/input",
               "s3://confined/in/%2e%2e", "S3://jobs/a", "s3a://jobs/a", "/srv/in/a",
               "file:///srv/in/.hidden", "file:///srv", "http://jobs/a", "s3://other/a",
               "simplecache::s3://jobs/a", "s3://jobs/a b"]  # fmt: skip
    for uri in refused:
        assert not pattern.search(uri), uri
    options = served_document(confined, IDS, LEVELS)["components"]["schemas"]["JobOptions"]
    number, table, _ = options["properties"]["thresholds"]["anyOf"]
    assert (number["minimum"], number["maximum"]) == (0, 1)
    assert table["propertyNames"] == {"$ref": "#/components/schemas/LabelId"}
    assert options["properties"]["chunk_size"]["anyOf"][0]["maximum"] == MAIN.job_max_chunk_size
    no_roots = served_document(MAIN, IDS, LEVELS)["components"]["schemas"]["JobSpec"]
    assert no_roots["properties"]["output"]["not"] == {}  # every job URI is refused

    @given(st.from_regex(pattern))
    @settings(max_examples=300, deadline=None)
    def its_own_canonical_form(uri: str) -> None:  # what a URI matching it names: itself
        assert storage.location(uri) == uri.rstrip("/")

    its_own_canonical_form()


def test_openapi_json_is_the_served_document_to_a_caller_with_a_key(server: Server) -> None:
    """With a key, /openapi.json is this server's document; without one, openapi.yaml (the
    storage roots and label ids are the deployment's business)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        keyed = client.get("/openapi.json", headers=AUTH).json()
        anonymous = client.get("/openapi.json").json()
        wrong = client.get(
            "/openapi.json", headers={"Authorization": "Bearer wrong-key-0123456789"}
        )
    assert keyed == served_document(MAIN, IDS, LEVELS)
    assert anonymous == wrong.json() == yaml.safe_load(CONTRACT.read_text())


def run_schemathesis(url: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``schemathesis --config-file tests/service/http/schemathesis.toml run --checks all
    URL/openapi.json -H "Authorization: Bearer KEY" ARGS``, the command a person runs (its
    crash cache goes to ``folder``)."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG),
        "run", "--checks", "all", f"{url}/openapi.json", "-H", f"Authorization: {AUTH_VALUE}",
        "--no-color", "--seed", "1", *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the config's hooks: tests.service...
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        env.pop(name, None)
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def test_live_server_honours_contract(server: Server, tmp_path: Path) -> None:
    """Every operation but /jobs (this server has no Redis and no storage roots): no failure.
    POST /model/reload is among them: its bundle is the same one, so each call changes nothing,
    and the server answers as before afterwards."""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        before = client.get("/model").json()["sha256"]
    found = run_schemathesis(server.url, tmp_path, "--max-examples", "25",
                             "--exclude-path-regex", "^/jobs")  # fmt: skip
    assert found.returncode == 0, found.stdout[-6000:] + found.stderr[-2000:]
    assert "Selected: 7/12" in found.stdout, found.stdout
    assert "FAILURES" not in found.stdout and "ERRORS" not in found.stdout, found.stdout
    reloads = re.search(r'labelclean_requests_total\{endpoint="/model/reload",method="POST",'
                        r'status="200"\} (\d+)', server.metrics())  # fmt: skip
    assert reloads and int(reloads[1]) > 0, "schemathesis did not reload"
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/model").json()["sha256"] == before


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
