"""moto's S3 server on a free loopback port, for the fixtures that need a real S3 endpoint.

    with moto_s3() as s3:                        # S3(url, client, env); AWS_* set meanwhile
        s3.client.create_bucket(Bucket="b")

Dummy credentials are set in this process while it runs (and listed in ``env`` for
subprocesses); with ``endpoint_env`` so is AWS_ENDPOINT_URL, without it AWS_ENDPOINT_URL is
unset, so that only an explicit endpoint reaches the server.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from .conftest import free_port


@dataclass
class S3:
    url: str
    client: object  # boto3's S3 client for ``url``
    env: dict[str, str] = field(default_factory=dict)  # AWS_* for subprocesses


@contextlib.contextmanager
def moto_s3(*, endpoint_env: bool = True, start_s: float = 30) -> Iterator[S3]:
    import boto3

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    if endpoint_env:
        env["AWS_ENDPOINT_URL"] = url
    mp = pytest.MonkeyPatch()
    try:
        for key, value in env.items():
            mp.setenv(key, value)
        if not endpoint_env:
            mp.delenv("AWS_ENDPOINT_URL", raising=False)
        client = boto3.client("s3", endpoint_url=url)
        deadline = time.monotonic() + start_s
        while True:
            try:
                client.list_buckets()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.05)
        yield S3(url, client, env)
    finally:
        mp.undo()
        process.terminate()
        process.wait(10)
