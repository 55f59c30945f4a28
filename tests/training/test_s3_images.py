"""Training images read from an S3 bucket prefix, against a real S3 endpoint (moto's server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelclean.cli import main

from ..conftest import FAST_TRAIN
from ..s3_server import moto_s3


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server, set as AWS_ENDPOINT_URL; yields a boto3 client for it."""
    with moto_s3() as server:
        yield server.client


def test_training_reads_images_from_a_bucket(s3_endpoint, tiny_data: Path, tmp_path: Path):
    s3_endpoint.create_bucket(Bucket="imgs")
    for path in (tiny_data / "images").iterdir():
        s3_endpoint.put_object(
            Bucket="imgs", Key=f"open-images/{path.name}", Body=path.read_bytes()
        )
    s3_endpoint.put_object(Bucket="imgs", Key="open-images/nested/ignored.png", Body=b"x")
    args = ["train", "--data", str(tiny_data), "--mode", "noisy", "--no-export", *FAST_TRAIN]
    assert main([*args, "--out", str(tmp_path / "s3"), "--images", "s3://imgs/open-images"]) == 0
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    s3, local = (json.loads((tmp_path / r / "report.json").read_text()) for r in ("s3", "local"))
    assert s3["skipped_images"] == [] and s3["sizes"] == local["sizes"]
    assert s3["metrics"]["AP_all"] == pytest.approx(local["metrics"]["AP_all"], abs=1e-6)


def test_missing_bucket_is_a_clear_error(s3_endpoint, tiny_data: Path, tmp_path: Path, capsys):
    code = main(
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "r"),
            "--mode",
            "noisy",
            "--images",
            "s3://no-such-bucket/x",
            *FAST_TRAIN,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "s3://no-such-bucket/x/: cannot list images" in err
