"""No error of a bulk job quotes what a file holds, or the path a symlink resolves to: a caller
can name files that are not theirs. A secret is planted in the files a job reads (a labels file
that is not a CSV, cells of a labels CSV, an image that is not one); the 422s, the job's error
sample, errors.csv and the logs of the server and the worker name the field, the URI as given,
the line and the kind of problem, and never the secret. Real server, worker and redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import CLASSES, Dataset, Server, Workers, output, read_csv

SECRET = "SECRET-TOKEN-teamB=hunter2hunter2"
HEADER = "ImageID,Source,LabelName,Confidence\n"
IMAGES = 10


@pytest.fixture(scope="module")
def secrets(file_root: Path, dataset: Dataset) -> Path:
    """Under the file root: images (ten real ones and one that is the secret), labels CSVs with
    the secret in their cells, files that are no CSV, and ``alias``: a symlink to a folder
    whose name must not show."""
    folder = file_root / "secrets"
    (folder / "images").mkdir(parents=True)
    ids = sorted(dataset.images)[:IMAGES]
    for image in ids:
        (folder / "images" / f"{image}.png").write_bytes(dataset.images[image])
    (folder / "images" / "planted.png").write_text(f"{SECRET}\n")
    good = [f"{image},machine,{label},0.9\n" for image in ids for label, _ in CLASSES]  # 100
    bad = [f"{ids[0]},machine,/fm/bag,{SECRET}\n", f"{ids[1]},machine,{SECRET},1\n",
           f"{SECRET}\n", f"{SECRET},machine\n"]  # fmt: skip
    (folder / "labels.csv").write_text(HEADER + "".join(good) + "".join(bad))
    (folder / "not-a-csv.txt").write_text(f"{SECRET},more\nand {SECRET} again\n")
    (folder / "not-utf8.csv").write_bytes(HEADER.encode() + b"\xff\xfe" + SECRET.encode() + b"\n")
    (folder / "huge-field.csv").write_text(HEADER + f'"{SECRET * 5000}",machine,/fm/bag,1\n')
    (folder / "bad-row.csv").write_text(HEADER + bad[0])
    (folder / "real-folder-0xdead").mkdir()
    (folder / "alias").symlink_to(folder / "real-folder-0xdead")
    plan = folder / "planned" / "_work" / "plan.json"
    plan.parent.mkdir(parents=True)
    plan.write_text(f"{SECRET}\n")
    return folder


def body(folder: Path, **change: str) -> dict:
    uris = {"images": f"file://{folder}/images/", "labels": f"file://{folder}/labels.csv",
            "output": f"file://{folder}/out/"}  # fmt: skip
    return uris | {k: v.format(folder=folder) for k, v in change.items()}


def clean(text: str) -> None:
    """No trace of the secret or of the folder behind the symlink."""
    for word in (SECRET, "hunter2", "SECRET-TOKEN", "real-folder-0xdead"):
        assert word not in text, text


@pytest.mark.parametrize(
    ("field", "uri", "says"),
    [("labels", "file://{folder}/not-a-csv.txt",
      "not-a-csv.txt: line 1: expected the header ImageID,Source,LabelName,Confidence"),
     ("labels", "file://{folder}/not-utf8.csv", "not-utf8.csv: not UTF-8 text"),
     ("labels", "file://{folder}/huge-field.csv", "huge-field.csv: line 2: malformed CSV"),
     ("labels", "file://{folder}/bad-row.csv",
      "bad-row.csv: labels CSV line 2: Confidence is not a number in [0, 1]"),
     ("labels", "file://{folder}/alias/", "/alias/: cannot read (a folder, not a file)"),
     ("output", "file://{folder}/planned/", "planned/ already holds another job's work")],
)  # fmt: skip
def test_refusals_name_the_field_the_uri_and_the_kind(
    server: Server, secrets: Path, redis_db, field: str, uri: str, says: str
) -> None:
    with server.client() as c:
        r = c.post("/jobs", json=body(secrets, **{field: uri}))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field and says in r.json()["error"]["message"], r.text
    clean(r.text)


def test_errors_of_a_job_name_kinds_not_data(
    server: Server, workers: Workers, secrets: Path, redis_db
) -> None:
    with server.client() as c:
        job_id = c.post("/jobs", json=body(secrets)).json()["id"]
        workers.run()
        done = c.get(f"/jobs/{job_id}")
    assert done.json()["state"] == "completed", done.text
    errors = read_csv((secrets / "out" / "errors.csv").read_bytes())[1:]
    reasons = [reason for _, reason in errors]
    assert any("labels CSV line 102: Confidence is not a number in [0, 1]" in r for r in reasons)
    assert any("labels CSV line 103: unknown LabelName" in r for r in reasons)
    assert ["", "labels CSV line 104: 1 fields, expected 4"] in errors  # no ImageID to trust
    assert ["planted", "unsupported_image: not an image, or a format not allowed "
            "(LABELCLEAN_ALLOWED_FORMATS)"] in errors  # fmt: skip
    for text in (done.text, (secrets / "out" / "errors.csv").read_text(), server.log.read_text(),
                 *(output(w) for w in workers.started)):  # fmt: skip
        clean(text)


def test_a_dead_letter_names_the_uri_as_given_not_the_resolved_path(
    server: Server, workers: Workers, secrets: Path, redis_db
) -> None:
    """Chunk 0 cannot be stored (a folder where its part file goes, reached through a symlink):
    its dead letter, the job's errors and errors.csv name the URI the caller gave."""
    real = secrets / "real-folder-0xdead" / "out"
    (real / "_work" / "parts" / "000000.csv").mkdir(parents=True)
    with server.client() as c:
        job_id = c.post("/jobs", json=body(secrets, output="file://{folder}/alias/out/")).json()
        workers.run()
        done = c.get(f"/jobs/{job_id['id']}")
    assert done.json()["state"] == "completed" and done.json()["failed"] > IMAGES, done.text
    [dead] = [f for _, f in redis_db.xrange("labelclean:queue:dead", "-", "+")]
    assert dead["error"] == (
        f"file://{secrets}/alias/out/_work/parts/000000.csv: cannot write (a folder, not a file)"
    )
    for text in (done.text, (real / "errors.csv").read_text(), str(dead), server.log.read_text(),
                 *(output(w) for w in workers.started)):  # fmt: skip
        clean(text)
