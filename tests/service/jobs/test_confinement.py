"""Every job URI stays under LABELCLEAN_STORAGE_ROOTS, checked on its canonical location: a real
``labelclean serve`` on a real redis-server, S3 on moto's server. The servers' roots
(tests/service/jobs/conftest.py): the file root (LABELCLEAN_FILE_ROOTS, the alias) and
``s3://jobs/,s3://bounds/,s3://confined/in/``.

Each escape (protocol aliases and case, ``//``, ``..``, percent-encoding, a chained URL, http,
an s3 bucket or key prefix outside the list, a symlink inside the root pointing out, a symlink
planted where the job writes its own files) is a 422 naming the field and the kind of refusal,
never the path a symlink resolves to; nothing is read or written outside. The same places
spelled otherwise inside the roots are accepted, and one output spelled two ways is one lock."""

from __future__ import annotations

from pathlib import Path

import pytest
from labelclean.service.jobs.store import QUEUE

from .conftest import CLASSES, Dataset, Server, Workers

OUTSIDE = "outside-0xfeed"  # the name of the folder beside the root: never in an answer
ROOTS = "outside the allowed roots (LABELCLEAN_STORAGE_ROOTS)"
PROTOCOL = "is not allowed (LABELCLEAN_STORAGE_PROTOCOLS"


def labels_csv(ids: list[str]) -> str:
    rows = "".join(f"{image},machine,{CLASSES[0][0]},0.9\n" for image in ids)
    return "ImageID,Source,LabelName,Confidence\n" + rows


@pytest.fixture(scope="module")
def places(
    file_root: Path, tmp_path_factory: pytest.TempPathFactory, dataset: Dataset, s3
) -> dict[str, Path]:
    """``root``: the file root's ``confine/`` (images, labels, symlinks pointing out, an output
    whose ``_work`` is a symlink pointing out, a symlink to a folder inside); ``outside``: a
    folder beside the file root with images and a secret. On S3: the bucket ``confined`` with
    images and labels under ``in/`` (a root) and beside it, and ``not-listed`` (no root)."""
    ids = sorted(dataset.images)[:3]
    outside = tmp_path_factory.mktemp(OUTSIDE)
    (outside / "images").mkdir()
    for image in ids:
        (outside / "images" / f"{image}.png").write_bytes(dataset.images[image])
    (outside / "labels.csv").write_text(labels_csv(ids))
    root = file_root / "confine"
    (root / "images").mkdir(parents=True)
    for image in ids:
        (root / "images" / f"{image}.png").write_bytes(dataset.images[image])
    (root / "labels.csv").write_text(labels_csv(ids))
    (root / "link-out.csv").symlink_to(outside / "labels.csv")
    (root / "dir-out").symlink_to(outside / "images", target_is_directory=True)
    (root / "out-link").symlink_to(outside, target_is_directory=True)
    (root / "planted-out").mkdir()
    (root / "planted-out" / "_work").symlink_to(outside, target_is_directory=True)
    (root / "locked").mkdir()
    (root / "locked-alias").symlink_to(root / "locked", target_is_directory=True)
    client = s3.client
    for bucket in ("confined", "not-listed"):
        client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    for key in ("in/", "", "input/"):
        for image in ids:
            body = dataset.images[image]
            client.put_object(Bucket="confined", Key=f"{key}images/{image}.png", Body=body)  # type: ignore[attr-defined]
            client.put_object(Bucket="not-listed", Key=f"images/{image}.png", Body=body)  # type: ignore[attr-defined]
        client.put_object(Bucket="confined", Key=f"{key}labels.csv", Body=labels_csv(ids))  # type: ignore[attr-defined]
    return {"root": root, "outside": outside}


def body(root: Path, out: str = "out") -> dict[str, str]:
    return {"images": f"file://{root}/images/", "labels": f"file://{root}/labels.csv",
            "output": f"file://{root}/{out}/"}  # fmt: skip


def outside_files(outside: Path) -> list[str]:
    return sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))


ESCAPES = [
    ("images", "local:///etc/", "uri_outside_roots", ROOTS),
    ("labels", "FILE:///etc/passwd", "uri_outside_roots", ROOTS),
    ("labels", "file:////etc/passwd", "uri_outside_roots", ROOTS),
    ("labels", "file://{root}//../../{outside}/labels.csv", "uri_outside_roots", ROOTS),
    ("output", "file://{root}/../../escaped/", "uri_outside_roots", ROOTS),
    ("images", "file://{root}/%2e%2e/%2E%2E/{outside}/images/", "uri_outside_roots", ROOTS),
    ("labels", "file://{root}/%2e%2e%2f%2e%2e/{outside}/labels.csv", "uri_outside_roots", ROOTS),
    ("images", "simplecache::file://{root}/images/", "protocol_not_allowed", "chained URLs"),
    ("labels", "s3://confined/in/labels.csv::file:///etc/passwd", "protocol_not_allowed",
     "chained URLs"),
    ("images", "{server}/images/", "protocol_not_allowed", "protocol 'http' " + PROTOCOL),
    ("labels", "memory://labels.csv", "protocol_not_allowed", "protocol 'memory' " + PROTOCOL),
    ("images", "s3://not-listed/images/", "uri_outside_roots", ROOTS),
    ("output", "s3://not-listed/out/", "uri_outside_roots", ROOTS),
    ("images", "s3://confined/images/", "uri_outside_roots", ROOTS),
    ("labels", "s3://confined/in/../labels.csv", "uri_outside_roots", ROOTS),
    ("images", "s3://confined/input/images/", "uri_outside_roots", ROOTS),
    ("output", "S3A://confined/in/x/../../out/", "uri_outside_roots", ROOTS),
    ("labels", "file://{root}/link-out.csv", "uri_outside_roots", ROOTS),
    ("images", "file://{root}/dir-out/", "uri_outside_roots", ROOTS),
    ("output", "file://{root}/out-link/escaped/", "uri_outside_roots", ROOTS),
    ("output", "file://{root}/planted-out/", "uri_outside_roots", ROOTS),
]  # fmt: skip


@pytest.mark.parametrize(("field", "uri", "code", "says"), ESCAPES)
def test_every_escape_is_a_422_naming_the_field_and_the_kind(
    server: Server, places: dict[str, Path], redis_db, field: str, uri: str, code: str, says: str
) -> None:
    outside = places["outside"]
    before = outside_files(outside)
    given = uri.format(root=places["root"], outside=outside.name, server=server.url)
    with server.client() as c:
        r = c.post("/jobs", json=body(places["root"]) | {field: given})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["field"], error["code"]) == (field, code), r.text
    assert given in error["message"] and says in error["message"], r.text
    assert str(outside) not in r.text, r.text  # never the path a symlink resolves to
    assert redis_db.xlen(QUEUE) == 0
    assert outside_files(outside) == before  # no probe, no _work written outside


def test_the_same_places_spelled_otherwise_inside_the_roots_are_accepted(
    server: Server, places: dict[str, Path], redis_db
) -> None:
    root = places["root"]
    spellings = [
        {"images": f"local://{root}/./images//", "labels": f"FILE://{root}/x/../labels.csv",
         "output": f"file://{root}//out-%61/"},
        {"images": "S3A://confined/in/images/", "labels": "s3://confined/in//labels.csv",
         "output": "s3://confined/in/x/%2e%2e/./out/"},
    ]  # fmt: skip
    with server.client() as c:
        for spelling in spellings:
            r = c.post("/jobs", json=spelling)
            assert r.status_code == 202, r.text
            assert r.json()["output"] == spelling["output"]  # the URI as given
    assert (root / "out-a").is_dir()  # %61 is "a": the probe was written there


def test_one_output_spelled_two_ways_is_one_lock(
    server: Server, places: dict[str, Path], redis_db
) -> None:
    """A symlink inside the root, dot segments, ``//``, a protocol alias and upper case: each
    names the output an active job already writes to, so each is a 409."""
    root = places["root"]
    first = {**body(root), "output": f"file://{root}/locked/out/"}
    s3_first = {"images": "s3://confined/in/images/", "labels": "s3://confined/in/labels.csv",
                "output": "s3://confined/in/o/"}  # fmt: skip
    with server.client() as c:
        assert c.post("/jobs", json=first).status_code == 202
        assert c.post("/jobs", json=s3_first).status_code == 202
        for output in (f"file://{root}/locked-alias/out", f"FILE://{root}/./locked//out/",
                       f"local://{root}/locked/x/../out/"):  # fmt: skip
            r = c.post("/jobs", json={**first, "output": output})
            assert r.status_code == 409 and r.json()["error"]["code"] == "output_in_use", r.text
            assert "locked-alias" not in r.text or output.endswith("locked-alias/out")
        for output in ("S3A://confined/in//o", "s3://confined/in/p/../o/"):
            r = c.post("/jobs", json={**s3_first, "output": output})
            assert r.status_code == 409 and r.json()["error"]["code"] == "output_in_use", r.text
    assert redis_db.xlen(QUEUE) == 2


def test_a_symlink_planted_after_the_job_was_accepted_does_not_lead_out(
    server: Server, workers: Workers, places: dict[str, Path], redis_db
) -> None:
    """The output's ``_work`` becomes a symlink pointing out after POST /jobs checked it: the
    worker writes nothing outside and the job fails, naming the URI as given."""
    root, outside = places["root"], places["outside"]
    before = outside_files(outside)
    with server.client() as c:
        r = c.post("/jobs", json=body(root, "late"))
        assert r.status_code == 202, r.text
        work = root / "late" / "_work"
        work.rmdir()  # the probe's folder, empty
        work.symlink_to(outside, target_is_directory=True)
        workers.run()
        done = c.get(f"/jobs/{r.json()['id']}").json()
    assert done["state"] == "failed", done
    assert f"file://{root}/late/_work/" in done["error"] and ROOTS in done["error"], done
    assert str(outside) not in str(done)
    assert outside_files(outside) == before
