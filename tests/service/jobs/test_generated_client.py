"""A Python client generated from openapi.yaml with openapi-python-client, as a new user makes
one (``openapi-python-client generate --path openapi.yaml``), works against a live server
(real ``labelclean serve``, a real redis-server, moto's S3 server, a real worker): it
classifies, cleans several images with their labels, and runs a job to completion, results
downloaded, each answer as in-process cleaning gives it.

The generator leaves out a model it cannot make (with a warning: Job and JobList did, when Job
inlined its options beside JobOptions) and sends a nested array as one part per innermost item
(it ignores ``encoding``): /clean's labels parts are therefore JSON text, one string per image.
Its post hooks run ruff, found here beside this interpreter (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.service.conftest import API_KEY

from .conftest import Dataset, Server, Workers, read_csv
from .test_jobs import assert_same, rows_by_image

CONTRACT = Path(__file__).resolve().parents[3] / "openapi.yaml"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "labelclean_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package generated from openapi.yaml, imported."""
    folder = tmp_path_factory.mktemp("generated")
    tools = str(Path(sys.executable).parent)  # ruff, for the generator's post hooks
    env = {**os.environ, "PATH": tools + os.pathsep + os.environ.get("PATH", "")}
    found = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(CONTRACT)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    said = found.stdout + found.stderr
    assert found.returncode == 0, said
    assert "Warning" not in said and "Unable to" not in said, said  # nothing left out
    sys.path.insert(0, str(folder / "labelclean-client"))
    try:
        import labelclean_client

        yield labelclean_client
    finally:
        sys.path.remove(str(folder / "labelclean-client"))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def client(generated: ModuleType, server: Server) -> Any:
    return generated.AuthenticatedClient(base_url=server.url, token=API_KEY, timeout=30.0)


def image_file(data: bytes, name: str) -> Any:
    from labelclean_client.types import File

    return File(payload=BytesIO(data), file_name=name, mime_type="image/png")


def test_generated_client_classifies_and_cleans(
    generated: ModuleType, server: Server, dataset: Dataset, reference: dict
) -> None:
    from labelclean_client.api.inference import classify, clean
    from labelclean_client.models import ClassifyBody, ClassifyResponse, CleanBody, CleanResponse

    chosen = [i for i in sorted(reference) if len(dataset.labels[i]) > 1][:2]
    chosen += [i for i in sorted(reference) if len(dataset.labels[i]) == 1][:2]
    with client(generated, server) as c:
        classified = classify.sync_detailed(
            client=c, body=ClassifyBody(image=[image_file(dataset.images[chosen[0]], "a.png")],
                                        top_k=3)
        )  # fmt: skip
        labels = [json.dumps([{"label": k, "confidence": v} for k, v in dataset.labels[i]])
                  for i in chosen]  # fmt: skip
        files = [image_file(dataset.images[i], f"{i}.png") for i in chosen]
        cleaned = clean.sync_detailed(client=c, body=CleanBody(image=files, labels=labels))
    assert classified.status_code == 200, classified.content
    assert isinstance(classified.parsed, ClassifyResponse)
    assert len(classified.parsed.results) == 1 and len(classified.parsed.results[0].labels) <= 3
    assert cleaned.status_code == 200, cleaned.content
    assert isinstance(cleaned.parsed, CleanResponse)
    found = {
        chosen[r.index]: [(v.id, v.confidence, v.verdict.value, v.issue_score, v.cleaned)
                          for v in r.labels]
        for r in cleaned.parsed.results
    }  # fmt: skip
    assert_same(found, {i: reference[i] for i in chosen})  # each image with its own labels


def test_generated_client_runs_a_job(
    generated: ModuleType, server: Server, workers: Workers, bucket: str, reference: dict,
    redis_db,
) -> None:  # fmt: skip
    from labelclean_client.api.jobs import create_job, get_job, job_results, list_jobs
    from labelclean_client.models import Job, JobList, JobOptions, JobSpec

    spec = JobSpec(
        images=f"{bucket}/images/", labels=f"{bucket}/labels.csv", output=f"{bucket}/out-client/",
        options=JobOptions(chunk_size=50),
    )  # fmt: skip
    with client(generated, server) as c:
        created = create_job.sync_detailed(client=c, body=spec, idempotency_key="client-1")
        assert created.status_code == 202, created.content
        assert isinstance(created.parsed, Job) and created.parsed.state.value == "queued"
        workers.run()
        deadline = time.monotonic() + 30
        while (job := get_job.sync(created.parsed.id, client=c)).state.value != "completed":
            assert job.state.value in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.2)
        listed = list_jobs.sync(client=c)
        results = job_results.sync_detailed(created.parsed.id, client=c)
    assert isinstance(job, Job) and isinstance(job.options, JobOptions)
    assert job.options.chunk_size == 50 and job.options.keep_work is False
    assert job.total is not None and job.done + job.failed == job.total
    assert isinstance(listed, JobList) and [j.id for j in listed.jobs] == [job.id]
    assert results.status_code == 200, results.content
    assert_same(rows_by_image(read_csv(results.content)[1:]), reference)
