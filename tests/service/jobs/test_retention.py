"""Stale jobs and retention, end to end: a real ``labelclean serve`` with a short stale time and
retention, real workers (one stopped with SIGSTOP mid-chunk, then let go on), a real
redis-server and moto's S3 server. Nothing here lists jobs to make the server tidy up: the
server's own periodic sweep must."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from labelclean.service.jobs.store import JOBS, QUEUE, job_key

from .conftest import BUCKET, Server, Workers, job_env, output, start_server, stop_server, wait_for
from .test_jobs import assert_same, held_chunks, job, read_csv, rows_by_image, spec, start_holding

STALE_S = 3
RETENTION_S = 15  # long enough for a stopped worker to come back and finish


@pytest.fixture(scope="module")
def quick(tmp_path_factory, bundle_dir, redis_main, s3, file_root) -> Iterator[Server]:
    """``labelclean serve`` with an API key, jobs stale after 3 s, kept 15 s once finished."""
    env = job_env(
        redis_main.url, s3, file_root, LABELCLEAN_API_KEYS="test-key-0123456789abcdef",
        LABELCLEAN_JOB_STALE_S=str(STALE_S), LABELCLEAN_JOB_RETENTION_S=str(RETENTION_S),
    )  # fmt: skip
    found = start_server(bundle_dir, tmp_path_factory.mktemp("quick") / "server.log", env)
    yield found
    stop_server(found)


def failed_job(c: httpx.Client, job_id: str, timeout: float = 30) -> dict:
    def check() -> dict | None:
        found = job(c, job_id)
        return found if found["state"] == "failed" else None

    return wait_for(check, "the job to be failed as stale", timeout=timeout)  # type: ignore[return-value]


def at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def uploads(s3, prefix: str) -> list[str]:
    found = s3.client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    return [u["Key"] for u in found.get("Uploads", [])]


def keys(s3, prefix: str) -> set[str]:
    found = s3.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"] for o in found.get("Contents", [])}


def test_a_job_with_no_worker_fails_when_stale_and_its_output_takes_a_new_job(
    quick: Server, bucket: str, redis_db
) -> None:
    body = spec(bucket, "out-stale-queued")
    with quick.client() as c:
        job_id = c.post("/jobs", json=body).json()["id"]
        busy = c.post("/jobs", json=body)
        failed = failed_job(c, job_id)
        again = c.post("/jobs", json=body)
        metrics = c.get("/metrics").text
        c.delete(f"/jobs/{again.json()['id']}")
    assert busy.status_code == 409
    assert failed["error"].startswith("stale: no live worker and no progress since ")
    assert f"LABELCLEAN_JOB_STALE_S={STALE_S}" in failed["error"]
    waited = at(failed["finished_at"]) - at(failed["created_at"])
    assert waited >= STALE_S and failed["started_at"] is None and failed["total"] is None
    assert again.status_code == 202, again.text  # the output lock was released
    assert 'labelclean_jobs_total{event="failed"} 1.0' in metrics


def test_a_stopped_workers_job_fails_and_its_late_chunk_is_neither_stored_nor_counted(
    quick: Server, workers: Workers, bucket: str, s3, reference: dict, redis_db
) -> None:
    """The only worker stops (SIGSTOP) holding a chunk: no heartbeat, no progress, so the job
    is failed, its unfinished upload aborted and its output freed. Let go on (SIGCONT), the
    worker finds the job failed: it neither stores nor counts the chunk it held. The output's
    _work/ stays, so the same job submitted again resumes there and completes."""
    body = spec(bucket, "out-stale-run")
    upload = s3.client.create_multipart_upload(Bucket=BUCKET, Key="out-stale-run/cleaned.csv")
    s3.client.upload_part(
        Bucket=BUCKET, Key="out-stale-run/cleaned.csv", UploadId=upload["UploadId"],
        PartNumber=1, Body=b"x" * 1024,
    )  # fmt: skip
    with quick.client() as c:
        job_id = c.post("/jobs", json=body).json()["id"]
        worker = start_holding(workers, redis_db, job_id, 5, burst=True)
        [held] = held_chunks(redis_db)
        [(_, fields)] = redis_db.xrange(QUEUE, held["message_id"], held["message_id"])
        chunk = int(fields["chunk"])
        worker.send_signal(signal.SIGSTOP)
        try:
            failed = failed_job(c, job_id)
        finally:
            worker.send_signal(signal.SIGCONT)
        assert worker.wait(60) == 0
        late = job(c, job_id)
        wait_for(lambda: not uploads(s3, "out-stale-run/"), "the upload to be aborted")
        stored = keys(s3, "out-stale-run/")
        again = c.post("/jobs", json=body)
        assert again.status_code == 202, again.text
        workers.run()
        resumed = job(c, again.json()["id"])
        rows = read_csv(c.get(f"/jobs/{resumed['id']}/results").content)[1:]
    assert failed["error"].startswith("stale: no live worker and no progress since ")
    assert late["state"] == "failed" and late["chunks_done"] == failed["chunks_done"] == 0
    assert late["done"] == 0 and late["error"] == failed["error"]
    assert f"is failed: chunk {chunk}'s result is dropped" in output(worker)
    assert f"out-stale-run/_work/parts/{chunk:06d}.summary.json" not in stored
    assert "out-stale-run/_work/plan.json" in stored  # kept after a failure, for resuming
    assert resumed["state"] == "completed" and resumed["chunks_done"] == 9
    assert_same(rows_by_image(rows), reference)


def test_finished_jobs_leave_every_index_after_retention(
    quick: Server, bucket: str, redis_db
) -> None:
    with quick.client() as c:
        job_id = c.post("/jobs", json=spec(bucket, "out-retention")).json()["id"]
        [owner_index] = redis_db.keys("labelclean:owner:*:jobs")
        assert c.delete(f"/jobs/{job_id}").json()["state"] == "cancelled"
        assert redis_db.zscore(JOBS, job_id) and redis_db.zscore(owner_index, job_id)
        wait_for(
            lambda: redis_db.zscore(JOBS, job_id) is None
            and redis_db.zscore(owner_index, job_id) is None,
            "the job to leave the indexes", timeout=RETENTION_S + 15,
        )  # fmt: skip
        assert not redis_db.exists(job_key(job_id))
        assert c.get(f"/jobs/{job_id}").status_code == 404
        assert c.get("/jobs").json()["jobs"] == []
