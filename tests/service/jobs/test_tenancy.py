"""Bulk jobs on a shared server: a real ``labelclean serve`` with three API keys (two named, one
not) on a real redis-server, a real worker. Each key lists, reads, cancels, fetches the results
of and replays (Idempotency-Key) only its own jobs; another key's job answers exactly as an
absent one; Redis holds a keyed hash of each key, never the key. Without keys, one shared
owner sees every job, as before."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import (
    API_KEY,
    CLASSES,
    Dataset,
    RedisServer,
    Server,
    Workers,
    job_env,
    start_server,
    stop_server,
)

KEY_A = "alpha-0123456789abcdef"
KEY_B = "bravo-0123456789abcdef"
KEY_C = API_KEY  # unnamed: named key-<short hash>; the one the fixtures probe /readyz with
API_KEYS = f"team-a:{KEY_A},team-b:{KEY_B},{KEY_C}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def bucket_dir(file_root: Path, dataset: Dataset) -> Path:
    """A local bucket of three images and their labels under the file root."""
    folder = file_root / "tenancy"
    (folder / "images").mkdir(parents=True)
    rows = ["ImageID,Source,LabelName,Confidence"]
    for image in sorted(dataset.images)[:3]:
        (folder / "images" / f"{image}.png").write_bytes(dataset.images[image])
        rows.append(f"{image},machine,{CLASSES[0][0]},0.9")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def body(bucket_dir: Path, out: str) -> dict:
    return {"images": f"file://{bucket_dir}/images/", "labels": f"file://{bucket_dir}/labels.csv",
            "output": f"file://{bucket_dir}/{out}/"}  # fmt: skip


def start(tmp_path_factory, bundle_dir: Path, redis_main: RedisServer, s3, file_root: Path,
          **extra: str) -> Server:  # fmt: skip
    env = job_env(redis_main.url, s3, file_root, **extra)
    return start_server(bundle_dir, tmp_path_factory.mktemp("server") / "server.log", env)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, bundle_dir, redis_main, s3, file_root) -> Iterator[Server]:
    """``labelclean serve`` with three API keys."""
    found = start(tmp_path_factory, bundle_dir, redis_main, s3, file_root,
                  LABELCLEAN_API_KEYS=API_KEYS)  # fmt: skip
    yield found
    stop_server(found)


@pytest.fixture(scope="module")
def keyless(tmp_path_factory, bundle_dir, redis_main, s3, file_root) -> Iterator[Server]:
    """``labelclean serve`` without API keys, on the same Redis."""
    found = start(tmp_path_factory, bundle_dir, redis_main, s3, file_root)
    yield found
    stop_server(found)


def client(server: Server, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=bearer(key) if key else {}, timeout=30)


def as_if_absent(c: httpx.Client, method: str, path: str, job_id: str) -> None:
    """``method path`` answers for ``job_id`` exactly as for a job id that never existed."""
    absent = uuid.uuid4().hex
    got = c.request(method, path.format(job_id))
    expected = c.request(method, path.format(absent))
    assert got.status_code == expected.status_code == 404, got.text
    assert got.text == expected.text.replace(absent, job_id)
    assert {k: v for k, v in got.headers.items() if k not in ("date", "content-length")} == {
        k: v for k, v in expected.headers.items() if k not in ("date", "content-length")
    }


def test_each_key_sees_reads_and_cancels_only_its_own_jobs(
    shared: Server, bucket_dir: Path, redis_db
) -> None:
    with client(shared, KEY_A) as a, client(shared, KEY_B) as b, client(shared, KEY_C) as c:
        a_job = a.post("/jobs", json=body(bucket_dir, "out-a")).json()["id"]
        b_job = b.post("/jobs", json=body(bucket_dir, "out-b")).json()["id"]
        assert [j["id"] for j in a.get("/jobs").json()["jobs"]] == [a_job]
        assert [j["id"] for j in b.get("/jobs").json()["jobs"]] == [b_job]
        assert c.get("/jobs").json()["jobs"] == []
        for method, path in (("GET", "/jobs/{}"), ("GET", "/jobs/{}/results"),
                             ("DELETE", "/jobs/{}")):  # fmt: skip
            as_if_absent(b, method, path, a_job)
            as_if_absent(c, method, path, a_job)
        after = a.get(f"/jobs/{a_job}")
        assert after.status_code == 200 and after.json()["state"] == "queued"  # not cancelled
        assert a.get(f"/jobs/{a_job}/results").json()["error"]["code"] == "job_not_completed"
        assert a.delete(f"/jobs/{a_job}").json()["state"] == "cancelled"
        assert b.delete(f"/jobs/{b_job}").json()["state"] == "cancelled"
    log = shared.log.read_text()
    assert f"job {a_job} created by team-a" in log and f"job {b_job} created by team-b" in log
    assert not [line for line in log.splitlines() if a_job in line and "team-b" in line]


def test_idempotency_keys_are_per_caller_and_conflicts_name_no_other_callers_job(
    shared: Server, bucket_dir: Path, redis_db
) -> None:
    retry = {"Idempotency-Key": "upload-1"}
    with client(shared, KEY_A) as a, client(shared, KEY_B) as b:
        first_a = a.post("/jobs", json=body(bucket_dir, "out-a"), headers=retry)
        first_b = b.post("/jobs", json=body(bucket_dir, "out-b"), headers=retry)
        again_a = a.post("/jobs", json=body(bucket_dir, "out-a"), headers=retry)
        reused_b = b.post("/jobs", json=body(bucket_dir, "out-a"), headers=retry)
        busy_b = b.post("/jobs", json=body(bucket_dir, "out-a"), headers={"Idempotency-Key": "2"})
        busy_a = a.post("/jobs", json=body(bucket_dir, "out-a"))
        a_job, b_job = first_a.json()["id"], first_b.json()["id"]
        a.delete(f"/jobs/{a_job}")
        b.delete(f"/jobs/{b_job}")
    assert first_a.status_code == first_b.status_code == 202 and a_job != b_job
    assert "idempotent-replayed" not in first_b.headers
    assert again_a.json()["id"] == a_job and again_a.headers["idempotent-replayed"] == "true"
    assert reused_b.status_code == 422, reused_b.text
    assert reused_b.json()["error"]["code"] == "idempotency_key_reused"
    assert b_job in reused_b.text and a_job not in reused_b.text
    assert busy_b.status_code == 409 and busy_b.json()["error"]["code"] == "output_in_use"
    assert a_job not in busy_b.text
    assert busy_a.status_code == 409 and a_job in busy_a.text  # its owner is told which job
    assert len(redis_db.keys("labelclean:idempotency:*")) == 2


def test_results_only_for_the_owner_and_redis_holds_no_key(
    shared: Server, workers: Workers, bucket_dir: Path, redis_db
) -> None:
    with client(shared, KEY_A) as a, client(shared, KEY_B) as b:
        a_job = a.post("/jobs", json=body(bucket_dir, "out-done")).json()["id"]
        workers.run()
        results = a.get(f"/jobs/{a_job}/results")
        assert results.status_code == 200 and results.text.startswith("ImageID,")
        assert a.get(f"/jobs/{a_job}").json()["state"] == "completed"
        as_if_absent(b, "GET", "/jobs/{}/results", a_job)
        as_if_absent(b, "GET", "/jobs/{}", a_job)
        b_job = b.post("/jobs", json=body(bucket_dir, "out-b")).json()["id"]
        b.delete(f"/jobs/{b_job}")
    owner_a = redis_db.hget(f"labelclean:job:{a_job}", "owner")
    owner_b = redis_db.hget(f"labelclean:job:{b_job}", "owner")
    assert len(owner_a) == 64 and owner_a != owner_b
    everything = dump(redis_db)
    for key in (KEY_A, KEY_B):
        for form in (key, f"team-a:{key}", hashlib.sha256(key.encode()).hexdigest()):
            assert form not in everything


def dump(redis_db) -> str:
    """Every key and value in Redis, as text."""
    parts = []
    for key in redis_db.scan_iter("*"):
        kind = redis_db.type(key)
        if kind == "string":
            value = redis_db.get(key)
        elif kind == "hash":
            value = redis_db.hgetall(key)
        elif kind == "list":
            value = redis_db.lrange(key, 0, -1)
        elif kind == "set":
            value = redis_db.smembers(key)
        elif kind == "zset":
            value = redis_db.zrange(key, 0, -1)
        else:  # streams
            value = redis_db.xrange(key)
        parts.append(f"{key} {value}")
    return "\n".join(parts)


def test_without_keys_one_shared_owner_sees_every_job(
    keyless: Server, shared: Server, bucket_dir: Path, redis_db
) -> None:
    """Keys off: the jobs of keys (made while keys were on) and the keyless ones alike; an
    Idempotency-Key is the server's, as before."""
    with client(shared, KEY_A) as a, client(keyless, None) as anyone:
        a_job = a.post("/jobs", json=body(bucket_dir, "out-a")).json()["id"]
        retry = {"Idempotency-Key": "k"}
        mine = anyone.post("/jobs", json=body(bucket_dir, "out-b"), headers=retry)
        again = anyone.post("/jobs", json=body(bucket_dir, "out-b"), headers=retry)
        listed = [j["id"] for j in anyone.get("/jobs").json()["jobs"]]
        seen = anyone.get(f"/jobs/{a_job}")
        assert a.get("/jobs").json()["jobs"] == [seen.json()]  # the keyless job is not A's
        as_if_absent(a, "GET", "/jobs/{}", mine.json()["id"])
        for job_id in listed:
            anyone.delete(f"/jobs/{job_id}")
    assert again.json()["id"] == mine.json()["id"]
    assert listed == [mine.json()["id"], a_job] and seen.status_code == 200


def test_the_health_check_sends_the_first_key_without_its_name(shared: Server, redis_db) -> None:
    from labelclean.healthcheck import check_api
    from labelclean.settings import Settings

    port = int(shared.url.rsplit(":", 1)[1])
    assert check_api(Settings(api_keys=API_KEYS, port=port)).startswith("ready")
