"""A bulk job's plan in flat memory (service/jobs/plan.py, service/jobs/sorted_runs.py): spilled to
sorted runs it writes exactly what it writes in memory, memory holds at most a run's worth of
records, input already in order is chained (no merge), manifests in flight are bounded, the
scratch folder goes in every case, and finalize counts the plan's errors while streaming them."""

from __future__ import annotations

import csv
import io
import json
import random
import threading
import time
from pathlib import Path

import pytest
from labelclean.model.labels import InputError
from labelclean.service.jobs import files as bulk_io
from labelclean.service.jobs import plan as bulk_plan
from labelclean.service.jobs import sorted_runs
from labelclean.service.jobs import steps as bulk
from labelclean.service.jobs.sorted_runs import SortedRuns
from labelclean.service.jobs.steps import JobSpec

from labelclean.storage import Storage

LABELS = [f"/m/{c}" for c in "abcdefgh"]
INDEX = {label: i for i, label in enumerate(LABELS)}


def make_job(root: Path, n: int = 300, *, shuffled: bool = True) -> tuple[JobSpec, dict]:
    """``n`` images (empty files: planning reads none) and a labels CSV with every kind of
    problem; returns the spec and what the plan must make of it."""
    rnd = random.Random(7)
    images = root / "images"
    images.mkdir(parents=True)
    ids = [f"img{i:05d}" for i in range(n)]
    for image in ids:
        (images / f"{image}.png").touch()
    (images / f"{ids[3]}.jpg").touch()  # several files
    (images / "notes.txt").touch()  # not an image
    rows = []
    for image in ids:
        for label in rnd.sample(LABELS, 3):
            rows.append([image, "machine", label, str(rnd.randrange(0, 10001) / 10000)])
    rows += [["ghost", "machine", LABELS[0], "0.5"], [ids[5], "machine", "/m/zzz", "0.5"],
             [ids[6], "machine", LABELS[0], "high"], ["", "machine", LABELS[1], "0.5"],
             ["x", "y"], [ids[7], "machine", rows[21][2], "0.1"]]  # fmt: skip
    if shuffled:
        rnd.shuffle(rows)
    else:
        rows.sort(key=lambda row: row[0])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["ImageID", "Source", "LabelName",
                                                        "Confidence"], *rows])  # fmt: skip
    (root / "labels.csv").write_text(buffer.getvalue())
    refused = {ids[3], "ghost", ids[5], ids[6], ids[7]}
    given: dict[str, dict[str, float]] = {}
    for image, _, label, value in (row for row in rows if len(row) == 4):
        if image in ids and image not in refused:
            given.setdefault(image, {})[label] = float(value)
    expected = {"ok": [i for i in ids if i not in refused], "refused": refused, "given": given}
    spec = JobSpec(images=f"file://{images}/", labels=f"file://{root}/labels.csv",
                   output=f"file://{root}/out/")  # fmt: skip
    return spec, expected


def work_files(root: Path) -> dict[str, bytes]:
    work = root / "out" / "_work"
    return {
        str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()
    }


def test_spilled_plan_is_the_in_memory_plan(tmp_path: Path, monkeypatch) -> None:
    storage = Storage.local()
    spec, expected = make_job(tmp_path / "a")
    in_memory = bulk.plan(spec, storage, chunk_size=16, label_index=INDEX)
    spills = []
    real_spill = SortedRuns._spill
    monkeypatch.setattr(SortedRuns, "_spill", lambda self: (spills.append(1), real_spill(self)))
    spec_b, _ = make_job(tmp_path / "b")
    spilled = bulk.plan(spec_b, storage, chunk_size=16, label_index=INDEX, run_items=7)
    assert len(spills) > 100  # 300 images and ~900 rows in runs of 7
    assert in_memory == spilled
    a, b = work_files(tmp_path / "a"), work_files(tmp_path / "b")
    assert list(a) == list(b)
    for name in a:  # the same bytes, but for the folder names in the URIs and messages
        assert a[name].replace(b"/a/", b"/b/") == b[name], name
    # And what those files say is what the inputs ask for.
    items = [json.loads(line) for name in sorted(b) if name.startswith("chunks/")
             for line in b[name].decode().splitlines()]  # fmt: skip
    assert [item["id"] for item in items] == expected["ok"]
    for item in items:
        want = {k: v for k, v in expected["given"].get(item["id"], {}).items() if v > 0}
        assert {g["label"]: g["confidence"] for g in item["labels"]} == want
        assert [g["label"] for g in item["labels"]] == sorted(want)
    errors = list(csv.reader(io.StringIO(b["plan-errors.csv"].decode())))
    assert {image for image, _ in errors} == expected["refused"] | {""}
    why = dict(errors)
    assert why["ghost"].startswith("no image file under")
    assert "several image files" in why["img00003"]
    assert "unknown LabelName" in why["img00005"]
    assert "Confidence is not a number" in why["img00006"]
    assert "listed twice" in why["img00007"]
    assert spilled.errors == len(errors) == len(expected["refused"]) + 2  # + two rows with no ID


def test_finalize_counts_the_plans_errors_while_streaming_them(tmp_path: Path) -> None:
    storage = Storage.local()
    spec, expected = make_job(tmp_path)
    job = bulk.plan(spec, storage, chunk_size=50, label_index=INDEX, run_items=5)
    summary = bulk.finalize(spec, storage, job.chunks, dead={n: "gone" for n in range(job.chunks)})
    rows = list(csv.reader((tmp_path / "out" / "errors.csv").open(newline="")))[1:]
    assert summary["failed"] == len(rows) == job.errors + job.total
    assert job.total == len(expected["ok"])


def test_an_image_with_thousands_of_bad_rows_is_one_bounded_error(tmp_path: Path) -> None:
    """Its reason names the first problems and counts the rest: one CSV field that csv can read
    back (at most 128 KiB), so finalize and the job's error sample do not fail on it; and the
    plan's errors reach errors.csv byte for byte."""
    storage = Storage.local()
    spec, _ = make_job(tmp_path, 20)
    with (tmp_path / "labels.csv").open("a") as fh:
        fh.writelines(f"img00001,machine,/m/a,bad{i}\n" for i in range(3000))
    job = bulk.plan(spec, storage, chunk_size=10, label_index=INDEX, run_items=50)
    errors = (tmp_path / "out" / "_work" / "plan-errors.csv").read_bytes()
    why = dict(csv.reader(io.StringIO(errors.decode())))["img00001"]
    assert why.count("Confidence is not a number") == bulk_plan.MAX_REASONS
    assert why.endswith("and 2980 more problems") and len(why) < 10_000
    summary = bulk.finalize(spec, storage, job.chunks, dead={n: "gone" for n in range(job.chunks)})
    assert summary["failed"] == job.errors + job.total
    header = b"ImageID,Reason\n"
    assert (tmp_path / "out" / "errors.csv").read_bytes().startswith(header + errors)


def test_a_malformed_record_is_named_by_the_line_it_starts_on(tmp_path: Path) -> None:
    """A quoted field over csv's size limit spans 200 lines: the error names line 3, where the
    record starts, not where csv gave up (and never what the field holds)."""
    spec, _ = make_job(tmp_path, 10)
    body = "".join(f"{'y' * 1000}\n" for _ in range(200))
    (tmp_path / "labels.csv").write_text(
        f'ImageID,Source,LabelName,Confidence\nimg00000,m,/m/a,0.5\nimg00001,"{body}",/m/a,0.5\n'
    )
    for read in (lambda: bulk.plan(spec, Storage.local(), chunk_size=10),
                 lambda: list(bulk_io.read_label_rows(Storage.local(), spec.labels))):  # fmt: skip
        with pytest.raises(InputError, match=r"labels.csv: line 3: malformed CSV$") as caught:
            read()
        assert caught.value.field == "labels" and "yyy" not in str(caught.value)


def test_sorted_runs_hold_a_run_and_chain_ordered_input(tmp_path: Path, monkeypatch) -> None:
    records = [(f"{i:04d}", i) for i in range(1000)]
    merges = []
    real_merge = sorted_runs.heapq.merge
    monkeypatch.setattr(sorted_runs.heapq, "merge", lambda *s: (merges.append(len(s)),
                                                                real_merge(*s))[1])  # fmt: skip
    for order, merged in (("sorted", False), ("shuffled", True)):
        given = list(records)
        if order == "shuffled":
            random.Random(3).shuffle(given)
        runs = SortedRuns(str(tmp_path), order, limit=10)
        largest = 0
        for record in given[:500]:
            runs.add(record)
            largest = max(largest, len(runs.buffer))
        runs.extend(given[500:])
        assert largest <= 11 and len(runs.buffer) <= 11
        assert len(runs.runs) >= 90
        merges.clear()
        assert list(runs.sorted()) == records, order
        assert bool(merges) == merged, order
        assert list(tmp_path.iterdir()) == []  # every run file removed once read


def test_merging_many_runs_holds_a_few_at_once(tmp_path: Path, monkeypatch) -> None:
    """A merge holds a block of each run it merges: 25 overlapping runs are merged five at a
    time (limit 40, blocks of 4), in passes, never all at once."""
    monkeypatch.setattr(sorted_runs, "BLOCK", 4)
    widths = []
    real_merge = sorted_runs.heapq.merge
    monkeypatch.setattr(sorted_runs.heapq, "merge", lambda *s: (widths.append(len(s)),
                                                                real_merge(*s))[1])  # fmt: skip
    records = [(f"{i:04d}", i) for i in range(1000)]
    given = list(records)
    random.Random(5).shuffle(given)
    runs = SortedRuns(str(tmp_path), "many", limit=40)
    runs.extend(given)
    assert len(runs.runs) == 24  # and 40 records in the buffer
    assert list(runs.sorted()) == records
    assert max(widths) <= 5 and len(widths) >= 6  # five merges of five, then the last one
    assert list(tmp_path.iterdir()) == []


def test_manifests_in_flight_are_bounded(tmp_path: Path, monkeypatch) -> None:
    """A slow store does not let the plan run ahead: at most IN_FLIGHT manifests wait."""
    monkeypatch.setattr(bulk_plan, "IN_FLIGHT", 2)
    made, written, most = [0], [0], [0]
    lock = threading.Lock()
    real_uri = bulk_plan.io.manifest_uri

    def manifest_uri(*args):
        with lock:
            made[0] += 1
            most[0] = max(most[0], made[0] - written[0])
        return real_uri(*args)

    class Slow(Storage):
        def write_bytes(self, uri: str, data: bytes) -> None:
            if "/chunks/" in uri:
                time.sleep(0.02)
            super().write_bytes(uri, data)
            if "/chunks/" in uri:
                with lock:
                    written[0] += 1

    monkeypatch.setattr(bulk_plan.io, "manifest_uri", manifest_uri)
    spec, _ = make_job(tmp_path, 200)
    job = bulk.plan(spec, Slow.local(), chunk_size=5, label_index=INDEX)
    assert job.chunks == made[0] == written[0] >= 30
    assert most[0] <= 3  # the two being written and the one just made


def test_scratch_is_removed_when_the_plan_fails(tmp_path: Path) -> None:
    class Failing(Storage):
        def write_bytes(self, uri: str, data: bytes) -> None:
            if "/chunks/000003" in uri:
                raise OSError("disk full")
            super().write_bytes(uri, data)

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    spec, _ = make_job(tmp_path / "job")
    with pytest.raises(OSError, match="disk full"):
        bulk.plan(spec, Failing.local(), chunk_size=10, label_index=INDEX, run_items=20,
                  scratch=str(scratch))  # fmt: skip
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "job" / "out" / "_work" / "plan.json").exists()
    bulk.plan(spec, Storage.local(), chunk_size=10, label_index=INDEX, scratch=str(scratch))
    assert list(scratch.iterdir()) == []
    assert (tmp_path / "job" / "out" / "_work" / "plan.json").exists()


@pytest.mark.parametrize("shuffled", [False, True])
def test_sorted_and_shuffled_csv_plan_alike(tmp_path: Path, shuffled: bool) -> None:
    storage = Storage.local()
    spec, expected = make_job(tmp_path, 120, shuffled=shuffled)
    job = bulk.plan(spec, storage, chunk_size=1000, label_index=INDEX, run_items=9)
    items = bulk.load_chunk(spec, storage, 0).items
    assert [item.id for item in items] == expected["ok"] and job.total == len(expected["ok"])
