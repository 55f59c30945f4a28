"""Training images read from an S3 bucket prefix, against a real S3 endpoint (moto's server)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from labelclean.cli import main

from .conftest import FAST_TRAIN, free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(key, value)
    client = boto3.client("s3")
    for _ in range(100):
        try:
            client.list_buckets()
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    yield client
    mp.undo()
    proc.terminate()
    proc.wait(10)


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
