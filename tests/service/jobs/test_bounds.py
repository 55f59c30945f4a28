"""Bounds of a bulk job on a real server, worker, redis-server and moto S3: an image over
LABELCLEAN_MAX_IMAGE_BYTES is refused before it is read (a line of errors.csv, the job
completes); a URI over 2 KiB and an ``options.chunk_size`` over LABELCLEAN_JOB_MAX_CHUNK_SIZE
are 422s naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import CLASSES, Dataset, Server, Workers, read_csv

DEFAULT_MAX_IMAGE_BYTES = 32 << 20


def labels_csv(ids: list[str]) -> str:
    rows = "".join(f"{image},machine,{CLASSES[0][0]},0.9\n" for image in ids)
    return "ImageID,Source,LabelName,Confidence\n" + rows


def test_a_local_image_over_the_limit_is_an_image_error_not_read(
    server: Server, workers: Workers, file_root: Path, dataset: Dataset, redis_db
) -> None:
    """A 64 MiB file (sparse: nothing to read) among real images, at the default limit."""
    folder = file_root / "bounds"
    (folder / "images").mkdir(parents=True)
    ids = sorted(dataset.images)[:3]
    for image in ids:
        (folder / "images" / f"{image}.png").write_bytes(dataset.images[image])
    with (folder / "images" / "huge.png").open("wb") as fh:
        fh.truncate(2 * DEFAULT_MAX_IMAGE_BYTES)
    (folder / "labels.csv").write_text(labels_csv([*ids, "huge"]))
    body = {"images": f"file://{folder}/images/", "labels": f"file://{folder}/labels.csv",
            "output": f"file://{folder}/out/"}  # fmt: skip
    with server.client() as c:
        job_id = c.post("/jobs", json=body).json()["id"]
        workers.run()
        done = c.get(f"/jobs/{job_id}").json()
    assert (done["state"], done["done"], done["failed"]) == ("completed", 3, 1), done
    errors = read_csv((folder / "out" / "errors.csv").read_bytes())[1:]
    assert errors == [["huge", f"image_too_large: over {DEFAULT_MAX_IMAGE_BYTES} bytes (not read)"]]
    assert done["errors"] == [{"image": "huge", "reason": errors[0][1]}]


def test_an_s3_object_over_the_limit_is_an_image_error(
    server: Server, workers: Workers, s3, dataset: Dataset, redis_db
) -> None:
    """The worker's limit (LABELCLEAN_MAX_IMAGE_BYTES=4096) against one a little larger."""
    client = s3.client
    client.create_bucket(Bucket="bounds")  # type: ignore[attr-defined]
    ids = sorted(dataset.images)[:3]
    for image in ids:
        assert len(dataset.images[image]) < 4096
        client.put_object(Bucket="bounds", Key=f"images/{image}.png", Body=dataset.images[image])  # type: ignore[attr-defined]
    client.put_object(Bucket="bounds", Key="images/big.png", Body=b"\0" * 4097)  # type: ignore[attr-defined]
    client.put_object(Bucket="bounds", Key="labels.csv", Body=labels_csv(ids).encode())  # type: ignore[attr-defined]
    body = {"images": "s3://bounds/images/", "labels": "s3://bounds/labels.csv",
            "output": "s3://bounds/out/"}  # fmt: skip
    with server.client() as c:
        job_id = c.post("/jobs", json=body).json()["id"]
        workers.run(LABELCLEAN_MAX_IMAGE_BYTES="4096")
        done = c.get(f"/jobs/{job_id}").json()
    assert (done["state"], done["done"], done["failed"]) == ("completed", 3, 1), done
    assert done["errors"] == [
        {"image": "big", "reason": "image_too_large: over 4096 bytes (not read)"}
    ]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [("images", "s3://jobs/" + "a" * 2040, "at most 2048 characters"),
     ("labels", "s3://jobs/" + "é" * 1020 + ".csv", "at most 2048 bytes"),
     ("output", "file:///" + "o/" * 1030, "at most 2048 characters")],
)  # fmt: skip
def test_uris_over_2_kib_are_refused_naming_the_field(
    server: Server, bucket: str, redis_db, field: str, value: str, says: str
) -> None:
    body = {"images": f"{bucket}/images/", "labels": f"{bucket}/labels.csv",
            "output": f"{bucket}/out-long/", field: value}  # fmt: skip
    with server.client() as c:
        r = c.post("/jobs", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
    assert says in r.json()["error"]["message"]


def test_chunk_size_is_bounded_by_the_server(server: Server, bucket: str, redis_db) -> None:
    body = {"images": f"{bucket}/images/", "labels": f"{bucket}/labels.csv",
            "output": f"{bucket}/out-chunks/"}  # fmt: skip
    with server.client() as c:
        over = c.post("/jobs", json=body | {"options": {"chunk_size": 10_001}})
        at = c.post("/jobs", json=body | {"options": {"chunk_size": 10_000}})
        c.delete(f"/jobs/{at.json()['id']}")
    assert over.status_code == 422 and over.json()["error"]["field"] == "options.chunk_size"
    assert "at most 10000 images a chunk" in over.json()["error"]["message"], over.text
    assert at.status_code == 202, at.text
