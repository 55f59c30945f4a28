"""Fixtures for the bulk-job tests: a folder of real Fashion-MNIST PNGs (and a few broken
files), an Open Images style labels CSV for them, the tiny bundle of the service tests, the
/clean path's answer for an image, and moto's S3 server on 127.0.0.1.

    from .bulk_fixtures import bundle_dir, job_files, s3  # noqa: F401 (fixtures)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from labelclean.model.bundle import Bundle, load_bundle
from labelclean.model.cleaning import clean_images_sync
from labelclean.model.runtime import OnnxModel

from ..s3_server import moto_s3
from .conftest import CLASSES, bundle_dir, fashion_pixels, png  # noqa: F401

N_IMAGES = 30
TRUNCATED = "broken-truncated"
NOT_AN_IMAGE = "broken-text"
GHOST = "ghost-no-file"
UNKNOWN = "img-0003"  # has a label the model does not know


@dataclass
class JobFiles:
    root: Path  # everything lives under here (the file root of confined tests)
    images: Path  # <ImageID>.png, two broken ones, a .txt and a sub-folder
    labels: Path  # ImageID,Source,LabelName,Confidence
    given: dict[str, list[dict]]  # ImageID -> labels as POST /clean takes them (confidence > 0)
    data: dict[str, bytes]  # ImageID -> the image file's bytes

    @property
    def good(self) -> list[str]:
        """The images that should come out cleaned, sorted."""
        return sorted(set(self.data) - {TRUNCATED, NOT_AN_IMAGE, UNKNOWN})


def write_job_files(root: Path, n: int = N_IMAGES, seed: int = 0) -> JobFiles:
    rng = np.random.default_rng(seed)
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    data = {f"img-{i:04d}": png(p) for i, p in enumerate(fashion_pixels(n))}
    good_png = data["img-0000"]
    data[TRUNCATED] = good_png[: len(good_png) // 2]
    data[NOT_AN_IMAGE] = b"this is not an image\n"
    for image, content in data.items():
        (images / f"{image}.png").write_bytes(content)
    (images / "notes.txt").write_text("not an image file, ignored\n")
    (images / "nested" / "img-9999.png").write_bytes(good_png)  # nested: not part of the job
    rows: list[tuple[str, str, str, str]] = []
    given: dict[str, list[dict]] = {}
    for image in sorted(data):
        picks = rng.choice(len(CLASSES), size=int(rng.integers(0, 4)), replace=False)
        labels = []
        for k in sorted(picks.tolist()):
            confidence = float(rng.choice([1.0, round(float(rng.uniform(0.05, 1)), 3), 0.0]))
            rows.append((image, "machine", CLASSES[k][0], repr(confidence)))
            if confidence > 0:
                labels.append({"label": CLASSES[k][0], "confidence": confidence})
        given[image] = labels
    rows.append((UNKNOWN, "machine", "/fm/unknown", "0.9"))
    rows.append((GHOST, "machine", CLASSES[0][0], "0.8"))
    rng.shuffle(rows)  # the job must not depend on the CSV's order
    labels_csv = root / "labels.csv"
    with labels_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ImageID", "Source", "LabelName", "Confidence"])
        writer.writerows(rows)
    return JobFiles(root, images, labels_csv, given, data)


@pytest.fixture
def job_files(tmp_path: Path) -> JobFiles:
    return write_job_files(tmp_path / "data")


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path) -> Bundle:  # noqa: F811 - the imported fixture
    return load_bundle(bundle_dir)


@pytest.fixture(scope="session")
def onnx(bundle: Bundle) -> OnnxModel:
    return OnnxModel(bundle, device="cpu")


def clean_rows(bundle: Bundle, onnx: OnnxModel, data: bytes, labels: list[dict], **kw) -> list:
    """What the /clean path gives for one image: (LabelName, confidence, verdict, issue,
    cleaned) rows."""
    (result,) = clean_images_sync(bundle, [data], [labels], predict=onnx.run, **kw)
    return [(v.id, v.confidence, v.verdict, v.issue, v.cleaned) for v in result.labels]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def rows_by_image(rows: list[list[str]]) -> dict[str, list[tuple[str, float, str, float]]]:
    """cleaned.csv rows (after the header) grouped by image, in file order:
    (LabelName, confidence, verdict, issue score, cleaned)."""
    out: dict[str, list[tuple[str, float, str, float, float]]] = {}
    for image, source, label, confidence, verdict, issue, cleaned, _reason in rows:
        assert source == "labelclean"
        row = (label, float(confidence), verdict, float(issue), float(cleaned))
        out.setdefault(image, []).append(row)
    return out


def assert_same_as_clean(got: list[tuple], want: list[tuple]) -> None:
    """Same labels, verdicts and order; scores equal up to batch-size float noise."""
    assert [(g[0], g[2]) for g in got] == [(w[0], w[2]) for w in want]
    for column in (1, 3, 4):  # confidence, issue score, cleaned score
        assert [g[column] for g in got] == pytest.approx([w[column] for w in want], abs=2e-6)


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its URL (dummy credentials set, no
    AWS_ENDPOINT_URL: the code under test is given the endpoint)."""
    with moto_s3(endpoint_env=False) as server:
        yield server.url


def upload(url: str, bucket: str, files: JobFiles, prefix: str = "images") -> None:
    """The job files into a new bucket: images under ``prefix``/, labels.csv at the top."""
    import boto3

    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket=bucket)
    for path in sorted(files.images.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(files.images).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    client.put_object(Bucket=bucket, Key="labels.csv", Body=files.labels.read_bytes())


def check_results(files: JobFiles, out: Path, bundle, onnx, summary: dict, **kw) -> None:  # noqa: F811
    """cleaned.csv per image == the /clean path; errors.csv lists the rest; summary counts."""
    cleaned = read_csv(out / "cleaned.csv")
    assert cleaned[0] == [
        "ImageID", "Source", "LabelName", "Confidence", "Verdict", "IssueScore", "Cleaned",
        "Reason",
    ]  # fmt: skip
    got = rows_by_image(cleaned[1:])
    for image in files.good:
        want = clean_rows(bundle, onnx, files.data[image], files.given[image], **kw)
        assert_same_as_clean(got.get(image, []), want)
    assert set(got) <= set(files.good)
    assert list(got) == sorted(got)  # chunk order = ImageID order
    errors = read_csv(out / "errors.csv")
    assert errors[0] == ["ImageID", "Reason"]
    reasons = dict(errors[1:])
    assert len(reasons) == len(errors) - 1  # each image listed once
    assert set(reasons) == {TRUNCATED, NOT_AN_IMAGE, UNKNOWN, GHOST}
    assert reasons[TRUNCATED].startswith("corrupt_image")
    assert reasons[NOT_AN_IMAGE].startswith("unsupported_image")
    assert "unknown LabelName" in reasons[UNKNOWN] and "/fm/unknown" not in reasons[UNKNOWN]
    assert reasons[GHOST].startswith("no image file under")
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["cleaned"] == len(files.good) and summary["failed"] == 4
    assert summary["images"] == summary["cleaned"] + summary["failed"]
    rows = cleaned[1:]
    for verdict in ("kept", "removed", "added"):
        assert summary["labels"][verdict] == sum(r[4] == verdict for r in rows)
        for label, counts in summary["classes"].items():
            assert counts[verdict] == sum(r[4] == verdict and r[2] == label for r in rows)
    given = sum(len(files.given[i]) for i in files.good)
    assert summary["labels"]["input"] == given
    assert summary["labels"]["kept"] + summary["labels"]["removed"] == given
    for counts in summary["classes"].values():
        if counts["input"]:
            assert counts["removed_share"] == round(counts["removed"] / counts["input"], 6)
