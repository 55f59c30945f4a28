"""Fixtures for the bulk-job tests: real ``redis-server`` processes on free loopback ports, moto's
S3 server, a bucket of real Fashion-MNIST PNGs with an Open Images style labels CSV, a real
``labelclean serve`` and ``labelclean worker`` subprocesses.

Each Redis is a ``RedisServer`` that a test may stop (SIGKILL) and start again on the same port
and folder; ``redis`` flushes the shared one before each test.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.s3_server import S3, moto_s3
from tests.service import conftest as service
from tests.service.conftest import (
    API_KEY,
    CLASSES,
    Server,
    fashion_pixels,
    free_port,
    png,
    start_server,
    stop_server,
)

bundle_dir = service.bundle_dir  # the tiny exported bundle, a session fixture

BUCKET = "jobs"
N_IMAGES = 200
CORRUPT = ["corrupt-0", "corrupt-1"]  # image files that are not images
MISSING = "no-such-image"  # labels CSV rows without an image file
THRESHOLDS = {"/fm/bag": 0.3}
SLOW_WORKER = Path(__file__).with_name("slow_worker.py")


@dataclass
class RedisServer:
    """A ``redis-server`` on 127.0.0.1:``port`` keeping its files in ``folder``."""

    port: int
    folder: Path
    appendonly: bool
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        appendonly = "yes" if self.appendonly else "no"
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", appendonly, "--dir", str(self.folder)]  # fmt: skip
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log()}") from None
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not up after 20 s: {self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write (the append-only file has what it has)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def client(self) -> redis.Redis:
        """A client that fails at once when Redis is down (no retries)."""
        return redis.Redis(
            port=self.port, decode_responses=True, socket_timeout=10, retry=Retry(NoBackoff(), 0)
        )

    def log(self) -> str:
        return (self.folder / "redis.log").read_text(errors="replace")[-2000:]


@pytest.fixture(scope="session")
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def make(*, appendonly: bool = False) -> RedisServer:
        server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"), appendonly)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def redis_main(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """The Redis the test server uses: no persistence."""
    return redis_factory()


@pytest.fixture
def redis_db(redis_main: RedisServer) -> redis.Redis:
    """The shared Redis, running and empty."""
    if redis_main.process is None or redis_main.process.poll() is not None:
        redis_main.start()
    client = redis_main.client()
    client.flushall()
    return client


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """moto's S3 server on a free loopback port; its credentials and endpoint set for this
    process too."""
    with moto_s3() as server:
        yield server


@dataclass
class Dataset:
    images: dict[str, bytes]  # ImageID -> PNG, the real images
    labels: dict[str, list[tuple[str, float]]]  # ImageID -> [(label, confidence > 0)]
    labels_csv: bytes


def make_dataset(n: int, seed: int = 0) -> Dataset:
    """``n`` real Fashion-MNIST PNGs with 0-3 noisy labels each (some rows with confidence 0,
    which means absent), plus rows for an image that has no file."""
    rng = np.random.default_rng(seed)
    ids = [f"img{i:04d}" for i in range(n)]
    images = {i: png(p) for i, p in zip(ids, fashion_pixels(n), strict=True)}
    labels: dict[str, list[tuple[str, float]]] = {}
    rows = []
    for image in [*ids, *CORRUPT, MISSING]:
        picked = rng.choice(len(CLASSES), size=int(rng.integers(0, 4)), replace=False)
        given = []
        for k in picked:
            confidence = float(rng.choice([0.0, 0.55, 0.7, 0.9, 1.0]))
            rows.append((image, "machine", CLASSES[k][0], confidence))
            if confidence > 0:
                given.append((CLASSES[k][0], confidence))
        labels[image] = given
    rows.append((MISSING, "machine", CLASSES[0][0], 1.0))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["ImageID", "Source", "LabelName", "Confidence"])
    writer.writerows(rows)
    return Dataset(images, labels, text.getvalue().encode())


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    return make_dataset(N_IMAGES)


@pytest.fixture(scope="session")
def reference(bundle_dir: Path, dataset: Dataset) -> dict[str, list[tuple]]:
    """ImageID -> [(label, confidence, verdict, issue score, cleaned score)] from model.cleaning
    in this process (the bundle's thresholds), for the images that have rows."""
    from labelclean.model.bundle import load_bundle
    from labelclean.model.cleaning import clean_images_sync
    from labelclean.model.runtime import OnnxModel

    bundle = load_bundle(bundle_dir)
    model = OnnxModel(bundle, device="cpu", threads=1)
    ids = sorted(dataset.images)
    labels = [[{"label": k, "confidence": v} for k, v in dataset.labels[i]] for i in ids]
    results = clean_images_sync(
        bundle, [dataset.images[i] for i in ids], labels, predict=model.run
    )  # fmt: skip
    return {
        image: [(v.id, v.confidence, v.verdict, v.issue, v.cleaned) for v in result.labels]
        for image, result in zip(ids, results, strict=True)
        if result.labels
    }


@pytest.fixture(scope="session")
def bucket(s3: S3, dataset: Dataset) -> str:
    """s3://jobs/ with images/<ImageID>.png (real and two corrupt) and labels.csv."""
    client = s3.client
    client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    for image, data in dataset.images.items():
        client.put_object(Bucket=BUCKET, Key=f"images/{image}.png", Body=data)  # type: ignore[attr-defined]
    for image in CORRUPT:
        client.put_object(Bucket=BUCKET, Key=f"images/{image}.png", Body=b"not a png")  # type: ignore[attr-defined]
    client.put_object(Bucket=BUCKET, Key="labels.csv", Body=dataset.labels_csv)  # type: ignore[attr-defined]
    return f"s3://{BUCKET}"


@pytest.fixture(scope="session")
def file_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder file:// job URIs may use (LABELCLEAN_FILE_ROOTS, the file:// part of
    LABELCLEAN_STORAGE_ROOTS under its older name)."""
    return tmp_path_factory.mktemp("file-root")


S3_ROOTS = "s3://jobs/,s3://bounds/,s3://confined/in/"
"""The s3:// roots of the test servers and workers (LABELCLEAN_STORAGE_ROOTS): two buckets
whole, and one key prefix of a third."""


JOB_SETTINGS = {
    "LABELCLEAN_JOB_CHUNK_SIZE": "25",
    "LABELCLEAN_JOB_CLAIM_IDLE_S": "1",
    "LABELCLEAN_JOB_MAX_TRIES": "3",
    "LABELCLEAN_WORKER_BATCH_SIZE": "8",
    "LABELCLEAN_DEVICE": "cpu",
    "LABELCLEAN_INFERENCE_THREADS": "1",
    "LABELCLEAN_DECODE_THREADS": "2",
}


def job_env(redis_url: str, s3: S3, file_root: Path, **extra: str) -> dict[str, str]:
    """The environment of a server or worker: settings from LABELCLEAN_* only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    env.update(s3.env)
    env.update(JOB_SETTINGS)
    env.update({
        "LABELCLEAN_REDIS_URL": redis_url,
        "LABELCLEAN_S3_ENDPOINT_URL": s3.url,
        "LABELCLEAN_FILE_ROOTS": str(file_root),
        "LABELCLEAN_STORAGE_ROOTS": S3_ROOTS,
    })  # fmt: skip
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, redis_main: RedisServer, s3: S3,
    file_root: Path,
) -> Iterator[Server]:  # fmt: skip
    """``labelclean serve`` with API keys, jobs on ``redis_main``, S3 on moto."""
    env = job_env(
        redis_main.url, s3, file_root, LABELCLEAN_API_KEYS=API_KEY, LABELCLEAN_MAX_IMAGES="16",
        LABELCLEAN_MAX_BATCH_SIZE="16",
    )  # fmt: skip
    log = tmp_path_factory.mktemp("server") / "server.log"
    found = start_server(bundle_dir, log, env)
    yield found
    stop_server(found)


@dataclass
class Workers:
    """Starts ``labelclean worker`` subprocesses; stops the ones still running at the end."""

    bundle: Path
    folder: Path
    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *, burst: bool = True, redis_url: str | None = None,
              delay_s: float | None = None, **extra: str) -> subprocess.Popen[bytes]:  # fmt: skip
        """A worker; with ``delay_s``, one that waits so long between cleaning each chunk and
        storing it (tests/service/jobs/slow_worker.py: injected here, not read by production
        code)."""
        env = dict(self.env, **extra)
        if redis_url:
            env["LABELCLEAN_REDIS_URL"] = redis_url
        log = (self.folder / f"worker-{len(self.started)}.log").open("wb")
        program = ["-m", "labelclean.cli"] if delay_s is None else [str(SLOW_WORKER), str(delay_s)]
        args = [sys.executable, *program, "worker", "--model", str(self.bundle)]
        process = subprocess.Popen(
            [*args, *(["--burst"] if burst else [])], env=env, stdout=log, stderr=subprocess.STDOUT
        )  # fmt: skip
        process.log = Path(log.name)  # type: ignore[attr-defined]
        self.started.append(process)
        return process

    def run(self, timeout: float = 90, **kwargs: str) -> None:
        """One burst worker, to the end of the queue."""
        process = self.start(**kwargs)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"worker still running: {output(process)}") from None
        assert code == 0, output(process)


def output(process: subprocess.Popen[bytes]) -> str:
    return Path(process.log).read_text(errors="replace")[-4000:]  # type: ignore[attr-defined]


@pytest.fixture
def workers(
    tmp_path: Path, bundle_dir: Path, redis_main: RedisServer, s3: S3, file_root: Path
) -> Iterator[Workers]:
    found = Workers(bundle_dir, tmp_path, job_env(redis_main.url, s3, file_root))
    yield found
    for process in found.started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def wait_for(check: Callable[[], object], what: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def s3_bytes(s3: S3, key: str) -> bytes:
    return s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # type: ignore[attr-defined]
