"""Bulk jobs end to end: a real ``labelclean serve`` takes the job, real ``labelclean worker``
processes do it from a real redis-server, images and results in moto's S3 server (or under the
allowed file root)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
import redis
from labelclean.service.jobs import steps as bulk
from labelclean.service.jobs.store import GROUP, QUEUE, JobStore, job_key, redis_client

from labelclean.storage import Storage

from .conftest import (
    CORRUPT,
    MISSING,
    S3_ROOTS,
    THRESHOLDS,
    Dataset,
    RedisServer,
    Server,
    Workers,
    output,
    read_csv,
    s3_bytes,
    wait_for,
)


def spec(bucket: str, out: str, **options: object) -> dict:
    return {"images": f"{bucket}/images/", "labels": f"{bucket}/labels.csv",
            "output": f"{bucket}/{out}/", "options": options}  # fmt: skip


def rows_by_image(csv_rows: list[list[str]]) -> dict[str, list[tuple]]:
    """ImageID -> [(label, confidence, verdict, issue score, cleaned score)] in file order; each
    image's rows must be one run (an image listed twice would show up as a second run)."""
    found: dict[str, list[tuple[str, float, str, float, float]]] = defaultdict(list)
    runs: list[str] = []
    for image, source, label, confidence, verdict, issue, cleaned, _reason in csv_rows:
        assert source == "labelclean"
        if not runs or runs[-1] != image:
            runs.append(image)
        found[image].append((label, float(confidence), verdict, float(issue), float(cleaned)))
    assert len(runs) == len(set(runs)), "an image's rows appear in more than one place"
    return dict(found)


def assert_same(found: dict, reference: dict) -> None:
    """Every image's rows as in-process cleaning gives them (scores to 1e-5), once each."""
    assert sorted(found) == sorted(reference)
    for image, expected in reference.items():
        got = found[image]
        assert [(row[0], row[2]) for row in got] == [(row[0], row[2]) for row in expected], image
        for column in (1, 3, 4):  # confidence, issue score, cleaned score
            assert [row[column] for row in got] == pytest.approx(
                [row[column] for row in expected], abs=1e-5
            ), image


def job(client: httpx.Client, job_id: str) -> dict:
    r = client.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def held_chunks(redis_db, consumer: str | None = None) -> list[dict]:
    pending = redis_db.xpending_range(QUEUE, GROUP, "-", "+", 100)
    return [p for p in pending if consumer is None or p["consumer"] == consumer]


def start_holding(
    workers: Workers, redis_db, job_id: str, delay_s: float, **kwargs: object
) -> subprocess.Popen:
    """A worker that waits ``delay_s`` between cleaning each chunk and storing it, returned once
    it holds one of ``job_id``'s chunks."""
    kwargs.setdefault("burst", False)
    worker = workers.start(delay_s=delay_s, **kwargs)
    wait_for(lambda: redis_db.hget(job_key(job_id), "planned") and held_chunks(redis_db),
             "the worker to hold a chunk", timeout=60)  # fmt: skip
    return worker


def test_a_job_over_a_bucket_matches_clean_image_by_image(
    server: Server, workers: Workers, bucket: str, dataset: Dataset, s3, redis_db
) -> None:
    with server.client() as c:
        r = c.post("/jobs", json=spec(bucket, "out-e2e", thresholds=THRESHOLDS))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.headers["location"] == f"/jobs/{job_id}" and r.json()["state"] == "queued"
        assert c.get(f"/jobs/{job_id}/results").json()["error"]["code"] == "job_not_completed"
        workers.run()
        done = job(c, job_id)
        results = c.get(f"/jobs/{job_id}/results")
        listed = c.get("/jobs").json()["jobs"]
        metrics = c.get("/metrics").text
        assert results.status_code == 200 and results.headers["content-type"].startswith("text/csv")
        header, *rows = read_csv(results.content)
        by_image = rows_by_image(rows)
        # the same images through POST /clean, 16 per request
        ids = sorted(dataset.images)
        for start in range(0, len(ids), 16):
            batch = ids[start : start + 16]
            labels = [json.dumps([{"label": k, "confidence": v} for k, v in dataset.labels[i]])
                      for i in batch]  # fmt: skip
            answer = c.post(
                "/clean", files=[("image", (f"{i}.png", dataset.images[i])) for i in batch],
                data={"labels": labels, "threshold": json.dumps(THRESHOLDS)},
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
            for image, result in zip(batch, answer.json()["results"], strict=True):
                expected = [(v["id"], v["confidence"], v["verdict"]) for v in result["labels"]]
                got = by_image.get(image, [])
                assert [row[:3] for row in got] == expected, image
                issues = [v["issue_score"] for v in result["labels"]]
                assert [row[3] for row in got] == pytest.approx(issues, abs=1e-6), image
    assert header == [
        "ImageID", "Source", "LabelName", "Confidence", "Verdict", "IssueScore", "Cleaned",
        "Reason",
    ]  # fmt: skip
    assert set(by_image) <= set(dataset.images)  # nothing for the corrupt or missing images
    assert done["state"] == "completed" and done["error"] is None
    assert (done["total"], done["done"], done["failed"]) == (203, 200, 3)  # 2 corrupt, 1 missing
    assert done["chunks"] == done["chunks_done"] == 9  # 202 images, 25 a chunk
    assert done["images_per_s"] > 0 and done["started_at"] and done["finished_at"]
    assert {e["image"] for e in done["errors"]} == {*CORRUPT, MISSING}
    assert done["summary"]["cleaned"] == 200 and done["summary"]["failed"] == 3
    assert listed[0]["id"] == job_id
    errors = {row[0]: row[1] for row in read_csv(s3_bytes(s3, "out-e2e/errors.csv"))[1:]}
    assert set(errors) == {*CORRUPT, MISSING} and "no image file" in errors[MISSING]
    summary = json.loads(s3_bytes(s3, "out-e2e/summary.json"))
    assert summary["cleaned"] == 200 and "/fm/bag" in summary["classes"]
    assert s3_bytes(s3, "out-e2e/cleaned.csv") == results.content
    assert 'labelclean_jobs_total{event="completed"} 1.0' in metrics
    assert 'labelclean_job_chunks_total{event="stored"} 9.0' in metrics
    assert 'labelclean_job_images_total{outcome="done"} 200.0' in metrics
    assert "labelclean_redis_up 1.0" in metrics


def test_a_killed_workers_chunk_is_reclaimed_and_every_image_done_once(
    server: Server, workers: Workers, bucket: str, reference: dict, redis_db
) -> None:
    with server.client() as c:
        job_id = c.post("/jobs", json=spec(bucket, "out-kill")).json()["id"]
        victim = start_holding(workers, redis_db, job_id, 60)  # 60 s: it is killed first
        [held] = held_chunks(redis_db)
        maps = Path(f"/proc/{victim.pid}/maps").read_text()
        assert "onnxruntime" in maps and "libtorch" not in maps and "/torch/" not in maps
        helper = workers.start(burst=True)
        wait_for(lambda: int(redis_db.hget(job_key(job_id), "chunks_done") or 0) >= 2,
                 "the second worker to store chunks", timeout=60)  # fmt: skip
        victim.send_signal(signal.SIGKILL)  # mid-chunk: cleaned, not stored, not acknowledged
        victim.wait(10)
        assert helper.wait(90) == 0, output(helper)
        done = job(c, job_id)
        rows = read_csv(c.get(f"/jobs/{job_id}/results").content)[1:]
    assert done["state"] == "completed", done
    assert (done["done"], done["failed"], done["chunks_done"]) == (200, 3, 9)
    assert_same(rows_by_image(rows), reference)
    assert held["consumer"] not in {p["consumer"] for p in held_chunks(redis_db)}
    assert dead_letters_of(redis_db, job_id) == []


def dead_letters_of(redis_db, job_id: str) -> list[dict]:
    entries = redis_db.xrange("labelclean:queue:dead", "-", "+")
    return [f for _, f in entries if f.get("job") == job_id]


def test_a_chunk_that_always_fails_is_dead_lettered_and_the_job_completes(
    server: Server, workers: Workers, bucket: str, file_root: Path, redis_db
) -> None:
    out = file_root / "out-dead"
    blocker = out / "_work" / "parts" / "000001.csv"  # chunk 1's results cannot be written
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("a folder where the part file should go")
    body = dict(spec(bucket, "x"), output=f"file://{out}")
    with server.client() as c:
        job_id = c.post("/jobs", json=body).json()["id"]
        workers.run()
        done = job(c, job_id)
        metrics = c.get("/metrics").text
        assert c.delete(f"/jobs/{job_id}").json()["error"]["code"] == "job_finished"
    assert done["state"] == "completed" and done["failed"] == 3 + 25, done
    [dead] = dead_letters_of(redis_db, job_id)
    assert dead["chunk"] == "1" and dead["deliveries"] == "3" and "000001.csv" in dead["error"]
    errors = read_csv((out / "errors.csv").read_bytes())[1:]
    given_up = [image for image, reason in errors if "chunk 1 failed and was given up" in reason]
    assert len(given_up) == 25
    cleaned = {row[0] for row in read_csv((out / "cleaned.csv").read_bytes())[1:]}
    assert not cleaned & set(given_up)
    assert 'labelclean_job_chunks_total{event="dead"} 1.0' in metrics
    assert 'labelclean_job_chunks_total{event="retried"} 2.0' in metrics


def test_cancelled_jobs_are_dropped_by_workers(
    server: Server, workers: Workers, bucket: str, redis_db
) -> None:
    with server.client() as c:
        job_id = c.post("/jobs", json=spec(bucket, "out-cancel")).json()["id"]
        cancelled = c.delete(f"/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        workers.run()
        after = job(c, job_id)
        assert c.delete(f"/jobs/{job_id}").json()["state"] == "cancelled"  # again: the same
        results = c.get(f"/jobs/{job_id}/results")
        assert c.get("/jobs/0123456789abcdef0123456789abcdef").status_code == 404
        again = c.post("/jobs", json=spec(bucket, "out-cancel"))  # the output is free again
        assert again.status_code == 202 and c.delete(f"/jobs/{again.json()['id']}").is_success
    assert after["state"] == "cancelled" and after["total"] is None and after["done"] == 0
    assert results.status_code == 409 and results.json()["error"]["code"] == "job_not_completed"
    assert redis_db.xlen(QUEUE) == 1  # only the second job's plan message is left


def test_sigterm_finishes_the_chunk_in_hand(
    server: Server, workers: Workers, bucket: str, redis_db
) -> None:
    with server.client() as c:
        job_id = c.post("/jobs", json=spec(bucket, "out-term")).json()["id"]
        worker = start_holding(workers, redis_db, job_id, 2)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0, output(worker)
        assert held_chunks(redis_db) == []  # acknowledged, not left to be reclaimed
        assert job(c, job_id)["chunks_done"] == 1
        assert "finishing the message in hand" in output(worker)
        workers.run()
        assert job(c, job_id)["state"] == "completed"


def test_idempotency_key_returns_the_same_job(server: Server, bucket: str, redis_db) -> None:
    body = spec(bucket, "out-idem")
    with server.client() as c:
        first = c.post("/jobs", json=body, headers={"Idempotency-Key": "retry-me"})
        second = c.post("/jobs", json=body, headers={"Idempotency-Key": "retry-me"})
        other = c.post("/jobs", json=dict(body, labels=body["images"] + "x.csv"),
                       headers={"Idempotency-Key": "retry-me"})  # fmt: skip
        busy = c.post("/jobs", json=body)  # no key: a second job for the same output
        c.delete(f"/jobs/{first.json()['id']}")
    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422 and other.json()["error"]["field"] == "Idempotency-Key"
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "output_in_use"
    assert redis_db.xlen(QUEUE) == 1


def test_a_body_that_is_not_json_is_refused(server: Server, redis_db) -> None:
    json_type = {"Content-Type": "application/json"}
    with server.client() as c:
        not_text = c.post("/jobs", content=b"\xff\xfe{", headers=json_type)
        not_json = c.post("/jobs", content=b"{images", headers=json_type)
    assert not_text.status_code == 400 and not_text.json()["error"]["code"] == "invalid_json"
    assert not_json.status_code == 422 and not_json.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("images", "file://{root}/../"),
        ("images", "file://{root}/link-out/"),
        ("labels", "file:///etc/passwd"),
        ("labels", "file://{root}/link-out/passwd"),
        ("output", "file:///tmp/elsewhere/"),
        ("output", "file://{root}/../out/"),
        ("images", "http://example.com/images/"),
        ("images", "s3://no-such-bucket/images/"),
        ("labels", "{bucket}/images/img0000.png"),
    ],
)  # fmt: skip
def test_inputs_outside_the_allowed_places_are_refused_naming_the_field(
    server: Server, bucket: str, file_root: Path, redis_db, field: str, value: str
) -> None:
    link = file_root / "link-out"
    if not link.exists():
        link.symlink_to("/etc")
    body = spec(bucket, "out-refused")
    body[field] = value.format(root=file_root, bucket=bucket)
    with server.client() as c:
        r = c.post("/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert redis_db.xlen(QUEUE) == 0


def test_redis_down_then_back(
    server: Server, redis_main: RedisServer, bucket: str, images_one: bytes, redis_db
) -> None:
    redis_main.kill()
    try:
        with server.client() as c:
            down = c.post("/jobs", json=spec(bucket, "out-down"))
            wait_for(lambda: c.get("/readyz").json()["redis"] == "unreachable", "readyz")
            ready = c.get("/readyz")
            listing = c.get("/jobs")
            clean = c.post("/clean", files=[("image", ("a.png", images_one))],
                           data={"labels": '["/fm/bag"]'})  # fmt: skip
            metrics = c.get("/metrics").text
    finally:
        redis_main.start()
    assert down.status_code == 503
    error = down.json()["error"]
    assert error["code"] == "jobs_unavailable" and "cannot reach Redis" in error["message"]
    assert ready.status_code == 200 and "cannot reach Redis" in ready.json()["redis_error"]
    assert listing.status_code == 503
    assert clean.status_code == 200 and clean.json()["results"][0]["labels"]
    assert "labelclean_redis_up 0.0" in metrics
    with server.client() as c:
        up = c.post("/jobs", json=spec(bucket, "out-down"))
        assert up.status_code == 202, up.text
        wait_for(lambda: c.get("/readyz").json()["redis"] == "ok", "readyz")
        c.delete(f"/jobs/{up.json()['id']}")


@pytest.fixture(scope="module")
def images_one(dataset: Dataset) -> bytes:
    return dataset.images["img0000"]


def test_a_job_survives_a_redis_restart_with_the_append_only_file(
    redis_factory, workers: Workers, bucket: str, reference: dict, s3
) -> None:
    """Redis SIGKILLed mid-job and started again on its port and folder: the worker reconnects
    and the job completes, every image once."""
    aof = redis_factory(appendonly=True)
    client = aof.client()
    body = spec(bucket, "out-aof")
    job_id = create_job(aof.url, body)
    worker = workers.start(redis_url=aof.url, delay_s=0.3)
    wait_for(lambda: int(client.hget(job_key(job_id), "chunks_done") or 0) >= 2,
             "two chunks", timeout=60)  # fmt: skip
    aof.kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    time.sleep(1.5)  # longer than redis-py's own quick retries: the worker backs off
    aof.start()
    assert worker.wait(90) == 0, output(worker)
    found = client.hgetall(job_key(job_id))
    assert found["state"] == "completed", found
    assert (found["total"], found["done"], found["failed"]) == ("203", "200", "3")
    assert found["chunks_done"] == "9"
    assert "redis unreachable" in output(worker) and "redis is back" in output(worker)
    assert_same(rows_by_image(read_csv(s3_bytes(s3, "out-aof/cleaned.csv"))[1:]), reference)


def create_job(redis_url: str, body: dict) -> str:
    """A job created the way POST /jobs creates it (validated, then stored with its plan
    message), without a server."""
    storage = Storage(roots=S3_ROOTS.split(","), s3_endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    spec_ = bulk.JobSpec(**body)
    bulk.validate_spec(spec_, storage, None)

    async def create() -> str:
        store = JobStore(redis_client(redis_url, timeout_s=1, retries=0), retention_s=3600)
        job_id, _ = await store.create(spec_.model_dump(mode="json"))
        await store.redis.aclose()
        return job_id

    return asyncio.run(create())
