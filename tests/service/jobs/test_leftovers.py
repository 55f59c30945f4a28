"""What a bulk job leaves behind, end to end (real ``labelclean serve``, real workers, a real
redis-server, moto's S3 server): its ``_work/`` goes after success unless ``options.keep_work``,
unfinished S3 multipart uploads and temporary files under its output go too; and a chunk that
a live worker holds past the wall-time limit is given to another worker, counted once."""

from __future__ import annotations

import os
import time
from pathlib import Path

from labelclean.service.jobs import leftovers
from labelclean.service.jobs.store import PREFIX

from labelclean.storage import Storage

from .conftest import BUCKET, Server, Workers, output
from .test_jobs import assert_same, held_chunks, job, read_csv, rows_by_image, spec, start_holding
from .test_retention import at, keys, uploads


def start_upload(s3, key: str) -> str:
    """An unfinished multipart upload of ``key`` with one part, as a killed writer leaves it."""
    upload = s3.client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    s3.client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 512)
    return upload


def test_work_and_unfinished_uploads_are_gone_after_success(
    server: Server, workers: Workers, bucket: str, s3, reference: dict, redis_db
) -> None:
    inside = [start_upload(s3, "out-tidy/cleaned.csv"), start_upload(s3, "out-tidy/_work/x")]
    outside = {"out-tidy-other/cleaned.csv": start_upload(s3, "out-tidy-other/cleaned.csv")}
    with server.client() as c:
        job_id = c.post("/jobs", json=spec(bucket, "out-tidy")).json()["id"]
        workers.run()
        done = job(c, job_id)
        rows = read_csv(c.get(f"/jobs/{job_id}/results").content)[1:]
    left = keys(s3, "out-tidy/")
    in_flight = uploads(s3, "out-tidy/")
    others = uploads(s3, "out-tidy-other/")
    for key, upload in outside.items():
        s3.client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload)
    assert left == {f"out-tidy/{name}" for name in ("cleaned.csv", "errors.csv", "summary.json")}
    assert in_flight == [] and len(inside) == 2
    assert done["state"] == "completed" and done["options"]["keep_work"] is False
    assert others == ["out-tidy-other/cleaned.csv"]  # another prefix: not this job's
    assert_same(rows_by_image(rows), reference)


def test_keep_work_keeps_it_and_stray_temporary_files_go(
    server: Server, workers: Workers, bucket: str, file_root: Path, redis_db
) -> None:
    out = file_root / "out-keep"
    strays = [out / ".tmp-killed.part", out / "_work" / "parts" / ".tmp-killed.part"]
    for stray in strays:  # what a worker killed while writing leaves (labelclean/storage.py)
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"half a file")
        os.utime(stray, (time.time() - 60, time.time() - 60))
    body = dict(spec(bucket, "x", keep_work=True), output=f"file://{out}/")
    with server.client() as c:
        r = c.post("/jobs", json=body)
        assert r.status_code == 202, r.text
        workers.run()
        done = job(c, r.json()["id"])
    assert done["state"] == "completed" and done["options"]["keep_work"] is True
    assert (out / "_work" / "plan.json").is_file() and (out / "cleaned.csv").is_file()
    assert len(list((out / "_work" / "parts").glob("*.summary.json"))) == 9
    assert not [stray for stray in strays if stray.exists()]


def test_a_chunk_held_past_the_wall_time_goes_to_another_worker_and_counts_once(
    server: Server, workers: Workers, bucket: str, s3, reference: dict, redis_db
) -> None:
    """A live worker (heartbeating) that holds a chunk longer than LABELCLEAN_JOB_CHUNK_WALL_S
    loses it to another worker, and the job completes while the holder is still stuck; the
    holder's late result is neither stored nor counted."""
    wall, stuck_s = {"LABELCLEAN_JOB_CHUNK_WALL_S": "2"}, 20
    with server.client() as c:
        job_id = c.post("/jobs", json=spec(bucket, "out-wall")).json()["id"]
        stuck = start_holding(workers, redis_db, job_id, stuck_s, burst=True, **wall)
        [held] = held_chunks(redis_db)
        held_at = time.time()
        helper = workers.start(burst=True, **wall)
        assert helper.wait(90) == 0, output(helper)
        done = job(c, job_id)
        beating = stuck.poll() is None and redis_db.exists(f"{PREFIX}worker:{held['consumer']}")
        assert stuck.wait(60) == 0, output(stuck)
        after = job(c, job_id)
        rows = read_csv(c.get(f"/jobs/{job_id}/results").content)[1:]
    assert done["state"] == "completed", done
    assert at(done["finished_at"]) - held_at < stuck_s - 5  # not waiting for the stuck worker
    assert beating  # it was alive and heartbeating all along
    assert (done["done"], done["failed"], done["chunks_done"]) == (200, 3, 9)
    assert (after["done"], after["chunks_done"], after["finished_at"]) == (
        done["done"], done["chunks_done"], done["finished_at"]
    )  # fmt: skip
    assert_same(rows_by_image(rows), reference)
    assert not keys(s3, "out-wall/_work/")  # the late holder wrote nothing back
    assert "was held past LABELCLEAN_JOB_CHUNK_WALL_S" in output(stuck)


def test_removing_leftovers_follows_no_symlink(tmp_path: Path) -> None:
    """A ``_work`` or a temporary file that is a symlink (swapped in by someone who can write
    the output) is left alone: nothing outside the output is removed through it."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    out = root / "out"
    (elsewhere / "parts").mkdir(parents=True)
    kept = [elsewhere / "plan.json", elsewhere / "parts" / ".tmp-x.part", elsewhere / "secret"]
    for path in kept:
        path.write_text("not the job's")
    out.mkdir(parents=True)
    (out / "_work").symlink_to(elsewhere)
    (out / ".tmp-link.part").symlink_to(elsewhere / "secret")
    (out / ".tmp-real.part").write_text("a killed writer's")
    storage = Storage(roots=[str(root)])
    removed = leftovers.tidy(storage, f"file://{out}/", keep_work=False)
    assert (removed.work, removed.temporary, removed.uploads) == (0, 1, 0)
    assert all(path.read_text() == "not the job's" for path in kept)
    assert (out / "_work").is_symlink() and (out / ".tmp-link.part").is_symlink()
    assert not (out / ".tmp-real.part").exists()
