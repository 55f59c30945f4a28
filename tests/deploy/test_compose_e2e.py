"""What docker/docker-compose.yml starts, started without docker, then a bucket job end to end.

The processes are the compose file's own: ``redis-server`` with the redis service's command,
``labelclean serve`` (the api service) and two ``labelclean worker`` (the worker service, as
``--scale worker=2``), each with its image's ENTRYPOINT (docker/Dockerfile) and the service's
command and environment read from the file and interpolated as compose does, with the variables
an operator would put in docker/.env: the demo bundle and a bucket folder (BUNDLE_DIR,
BUCKETS_DIR), an API key, and the s3 profile's MinIO as README "Docker compose" says
(LABELCLEAN_S3_ENDPOINT_URL=http://minio:9000 and MinIO's credentials).

What a container has that a local process has not is translated, and nothing else:

- container paths -> the host folders mounted there by the service's volumes (/model ->
  BUNDLE_DIR, /buckets -> BUCKETS_DIR; a named volume, redis' /data, -> a fresh folder), in
  environment values, in redis' ``--dir`` and in the job's file:// URIs;
- service host names -> 127.0.0.1 and the local port of what plays that service
  (redis:6379 -> redis-server on a free port, minio:9000 -> moto's S3 server on a free port);
- the API listens on 127.0.0.1 on a free port (in its container: 0.0.0.0:8000, published on
  127.0.0.1:8000); redis-server gets ``--port``/``--bind 127.0.0.1`` (in its container: 6379 on
  the compose network);
- the health checks (the services' ``healthcheck.test``) run here with that environment,
  ``python`` being this interpreter and ``redis-cli`` pointed at the local port.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from labelclean.service.jobs.store import PREFIX

from tests.s3_server import moto_s3
from tests.service.conftest import CLASSES, fashion_pixels, free_port, png

from .compose import (
    DOCKERFILES,
    environment,
    interpolate,
    load_compose,
    mounts,
    parse_dockerfile,
    read_env_file,
)
from .test_docker_static import image_argv

API_KEY = "compose-test-key-0123456789abcdef"
N_IMAGES = 40
CHUNK_SIZE = 7  # 6 chunks: both workers get some (a job option, as a user would send it)
COMPOSE = load_compose()
SERVICES = COMPOSE["services"]
DOCKERFILE = parse_dockerfile(DOCKERFILES["cpu"])


@dataclass
class Local:
    """The translation from the containers' names to this machine (module docstring)."""

    paths: dict[str, Path] = field(default_factory=dict)  # container path -> local folder
    hosts: dict[str, str] = field(default_factory=dict)  # "redis:6379" -> "127.0.0.1:PORT"

    def path(self, value: str) -> str:
        for inside, outside in self.paths.items():
            if value == inside or value.startswith(inside + "/"):
                return str(outside) + value[len(inside) :]
        return value

    def value(self, value: str) -> str:
        """An environment value: comma-separated paths and file:// URIs (LABELCLEAN_STORAGE_ROOTS),
        or URLs naming a service."""
        value = ",".join(self.uri(v) if v.startswith("file://") else self.path(v)
                         for v in value.split(","))  # fmt: skip
        for inside, outside in self.hosts.items():  # scheme://host or scheme://user:pass@host
            value = value.replace(f"//{inside}", f"//{outside}").replace(
                f"@{inside}", f"@{outside}"
            )
        return value

    def uri(self, uri: str) -> str:
        """A job URI as a user of the containers writes it (file:///buckets/...)."""
        if uri.startswith("file://"):
            return "file://" + self.path(uri.removeprefix("file://"))
        return uri


def base_env() -> dict[str, str]:
    """This machine's environment without settings or S3 credentials of its own: the
    containers get theirs from the compose file only."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("LABELCLEAN_", "AWS_", "PROMETHEUS_"))}  # fmt: skip


def service_env(name: str, variables: dict[str, str], local: Local) -> dict[str, str]:
    env = interpolate(environment(SERVICES[name]), variables)
    return {k: local.value(v) for k, v in env.items()}


def service_argv(name: str) -> list[str]:
    """What the service's container runs: the ENTRYPOINT of its build target (docker/Dockerfile),
    then its command."""
    target = SERVICES[name]["build"].get("target")
    stage = DOCKERFILE.stage(target) if target else DOCKERFILE.default
    return image_argv(DOCKERFILE, stage, SERVICES[name]["command"])


def executable(argv: list[str]) -> list[str]:
    """The image's programs, from this environment: labelclean's entry point, this python."""
    program = {"labelclean": str(Path(sys.executable).with_name("labelclean")),
               "python": sys.executable}.get(argv[0], argv[0])  # fmt: skip
    return [program, *argv[1:]]


@dataclass
class Stack:
    local: Local
    variables: dict[str, str]
    folder: Path
    api_url: str = ""
    redis_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    listen: dict[str, str] = field(default_factory=dict)  # the API's address here

    def env(self, service: str) -> dict[str, str]:
        """The service's environment from the compose file, translated."""
        env = service_env(service, self.variables, self.local)
        return {**env, **self.listen} if service == "api" else env

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv, env={**base_env(), **env}, stdout=log, stderr=subprocess.STDOUT
        )  # fmt: skip
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def healthcheck(self, service: str) -> subprocess.CompletedProcess[str]:
        """The service's compose health check, run here."""
        test = SERVICES[service]["healthcheck"]["test"]
        assert test[0] == "CMD"
        argv = executable(test[1:])
        if argv[0] == "redis-cli":
            argv[1:1] = ["-p", str(self.redis_port)]
        env = {**base_env(), **self.env(service)}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)

    def wait_healthy(self, service: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            result = self.healthcheck(service)
            if result.returncode == 0:
                return result.stdout
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited: {self.log(name)}"
            assert time.monotonic() < deadline, f"{service} not healthy: {result.stderr}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path
) -> Iterator[Stack]:  # fmt: skip
    folder = tmp_path_factory.mktemp("compose")
    buckets = folder / "buckets"
    buckets.mkdir()
    example = read_env_file()
    # docker/.env as an operator writes it (README, "Docker compose"): the bundle, the buckets,
    # an API key, and the s3 profile's MinIO for s3:// buckets, its bucket allowed.
    variables = {
        "BUNDLE_DIR": str(bundle_dir),
        "BUCKETS_DIR": str(buckets),
        "LABELCLEAN_API_KEYS": API_KEY,
        "LABELCLEAN_S3_ENDPOINT_URL": "http://minio:9000",
        "LABELCLEAN_STORAGE_ROOTS": "file:///buckets/,s3://labelclean/",
        "AWS_ACCESS_KEY_ID": example["MINIO_ROOT_USER"],
        "AWS_SECRET_ACCESS_KEY": example["MINIO_ROOT_PASSWORD"],
    }
    local = Local()
    stack = Stack(local, variables, folder)
    resources = contextlib.ExitStack()
    try:
        # redis: its command, its named volume at --dir -> a folder here, a free loopback port.
        redis = SERVICES["redis"]
        for target, (source, _) in mounts(redis, variables).items():
            assert source in COMPOSE["volumes"]
            local.paths[target] = folder / f"volume-{source}"
            local.paths[target].mkdir()
        stack.redis_port = free_port()
        local.hosts["redis:6379"] = f"127.0.0.1:{stack.redis_port}"
        argv = [local.path(a) for a in interpolate(redis["command"], variables)]
        stack.start("redis", [*argv, "--port", str(stack.redis_port), "--bind", "127.0.0.1"], {})
        stack.wait_healthy("redis", timeout=30)

        s3 = resources.enter_context(moto_s3(endpoint_env=False))  # the s3 profile's MinIO
        local.hosts["minio:9000"] = s3.url.removeprefix("http://")

        # api and worker: the volumes of the services, then their commands and environment.
        for name in ("api", "worker"):
            for target, (source, _) in mounts(SERVICES[name], variables).items():
                local.paths[target] = Path(source)
        api_port = free_port()
        stack.listen = {"LABELCLEAN_HOST": "127.0.0.1", "LABELCLEAN_PORT": str(api_port)}
        stack.api_url = f"http://127.0.0.1:{api_port}"
        api_argv = executable(service_argv("api"))
        stack.start("api", api_argv, stack.env("api"))
        worker_argv = executable(service_argv("worker"))
        assert stack.healthcheck("worker").returncode == 1  # no worker yet
        for n in (1, 2):  # --scale worker=2
            stack.start(f"worker-{n}", worker_argv, stack.env("worker"))
        stack.wait_healthy("api")
        stack.wait_healthy("worker")
        yield stack
    finally:
        for process in reversed(stack.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        resources.close()


def dataset(n: int) -> tuple[dict[str, bytes], bytes, dict[str, list[dict[str, Any]]]]:
    """``n`` real Fashion-MNIST PNGs, an Open Images style labels CSV for them (and a row for
    an image that has no file), and each image's labels as /clean takes them."""
    images = {f"img{i:03d}": png(p) for i, p in enumerate(fashion_pixels(n))}
    labels: dict[str, list[dict[str, Any]]] = {}
    rows = [["ImageID", "Source", "LabelName", "Confidence"]]
    for i, image in enumerate(images):
        picked = [CLASSES[(i * 3 + k) % len(CLASSES)][0] for k in range(i % 3)]
        given = [{"label": label, "confidence": 0.6 + 0.1 * k} for k, label in enumerate(picked)]
        labels[image] = given
        rows += [[image, "machine", g["label"], f"{g['confidence']:.1f}"] for g in given]
    rows.append(["no-such-image", "machine", CLASSES[0][0], "1"])
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return images, text.getvalue().encode(), labels


def run_job(client: httpx.Client, spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    r = client.post("/jobs", json=spec, headers={"Idempotency-Key": spec["output"]})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while (job := client.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["state"] == "completed", job
    results = client.get(f"/jobs/{job_id}/results")
    assert results.status_code == 200, results.text
    return job, results.content


def assert_results_equal_clean(
    client: httpx.Client, results: bytes, images: dict[str, bytes], labels: dict[str, list]
) -> None:  # fmt: skip
    """Every image's rows in the job's results are what POST /clean answers for it."""
    header, *rows = list(csv.reader(io.StringIO(results.decode())))
    assert header == [
        "ImageID", "Source", "LabelName", "Confidence", "Verdict", "IssueScore", "Cleaned",
        "Reason",
    ]  # fmt: skip
    found: dict[str, list[tuple[str, float, str]]] = {}
    for image, source, label, confidence, verdict, _issue, _cleaned, _reason in rows:
        assert source == "labelclean"
        found.setdefault(image, []).append((label, float(confidence), verdict))
    ids = sorted(images)
    expected: dict[str, list[tuple[str, float, str]]] = {}
    for start in range(0, len(ids), 16):
        batch = ids[start : start + 16]
        answer = client.post(
            "/clean", files=[("image", (f"{i}.png", images[i])) for i in batch],
            data={"labels": [json.dumps(labels[i]) for i in batch]},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        for image, result in zip(batch, answer.json()["results"], strict=True):
            if result["labels"]:
                expected[image] = [
                    (v["id"], v["confidence"], v["verdict"]) for v in result["labels"]
                ]
    assert sorted(found) == sorted(expected)
    for image, rows_expected in expected.items():
        got = found[image]
        assert [(a, c) for a, _, c in got] == [(a, c) for a, _, c in rows_expected], image
        assert [b for _, b, _ in got] == pytest.approx([b for _, b, _ in rows_expected], abs=1e-5)


def check_job(job: dict[str, Any], n: int) -> None:
    assert (job["total"], job["done"], job["failed"]) == (n + 1, n, 1)  # + the row without a file
    assert job["chunks"] == job["chunks_done"] == -(-n // CHUNK_SIZE)
    assert [e["image"] for e in job["errors"]] == ["no-such-image"]


def client(stack: Stack) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    )  # fmt: skip


def test_a_local_bucket_job_through_the_compose_services(stack: Stack) -> None:
    """file:///buckets/... as a user of the containers writes it; the workers write the
    results into the mounted bucket folder."""
    images, labels_csv, labels = dataset(N_IMAGES)
    bucket = stack.local.paths["/buckets"] / "demo"
    (bucket / "images").mkdir(parents=True)
    for image, data in images.items():
        (bucket / "images" / f"{image}.png").write_bytes(data)
    (bucket / "labels.csv").write_bytes(labels_csv)
    spec = {
        "images": "file:///buckets/demo/images/",
        "labels": "file:///buckets/demo/labels.csv",
        "output": "file:///buckets/demo/out/",
        "options": {"chunk_size": CHUNK_SIZE},
    }
    with client(stack) as c:
        job, results = run_job(c, {k: stack.local.uri(v) if isinstance(v, str) else v
                                   for k, v in spec.items()})  # fmt: skip
        assert_results_equal_clean(c, results, images, labels)
    check_job(job, N_IMAGES)
    out = bucket / "out"
    assert (out / "cleaned.csv").read_bytes() == results
    assert (out / "errors.csv").read_text().splitlines()[1].startswith("no-such-image,")
    assert json.loads((out / "summary.json").read_text())["cleaned"] == N_IMAGES


def test_an_s3_bucket_job_through_the_compose_services(stack: Stack) -> None:
    """s3:// on the s3 profile's MinIO (moto's S3 server here), credentials from docker/.env."""
    images, labels_csv, labels = dataset(N_IMAGES)
    bucket = interpolate(SERVICES["minio-init"]["environment"]["S3_BUCKET"], stack.variables)
    s3 = boto3.client(
        "s3", endpoint_url=stack.local.value("http://minio:9000"), region_name="us-east-1",
        aws_access_key_id=stack.variables["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.variables["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    s3.create_bucket(Bucket=bucket)  # what minio-init does
    for image, data in images.items():
        s3.put_object(Bucket=bucket, Key=f"in/images/{image}.png", Body=data)
    s3.put_object(Bucket=bucket, Key="in/labels.csv", Body=labels_csv)
    spec = {
        "images": f"s3://{bucket}/in/images/",
        "labels": f"s3://{bucket}/in/labels.csv",
        "output": f"s3://{bucket}/out/",
        "options": {"chunk_size": CHUNK_SIZE},
    }
    with client(stack) as c:
        job, results = run_job(c, spec)
        assert_results_equal_clean(c, results, images, labels)
    check_job(job, N_IMAGES)
    assert s3.get_object(Bucket=bucket, Key="out/cleaned.csv")["Body"].read() == results


def test_both_workers_beat_and_stop_cleanly(stack: Stack) -> None:
    """The worker health check reads the heartbeats; SIGTERM stops a worker, which leaves."""
    import redis

    db = redis.Redis(port=stack.redis_port, decode_responses=True)
    beats = [json.loads(v) for v in db.mget(db.keys(f"{PREFIX}worker:*"))]
    pids = {stack.processes[f"worker-{n}"].pid for n in (1, 2)}
    assert {b["pid"] for b in beats} == pids
    assert "healthy" in stack.healthcheck("worker").stdout
    assert stack.healthcheck("api").returncode == 0
    for n in (1, 2):
        process = stack.processes[f"worker-{n}"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, stack.log(f"worker-{n}")
    assert db.keys(f"{PREFIX}worker:*") == []
    result = stack.healthcheck("worker")
    assert result.returncode == 1 and "no live worker" in result.stderr


def test_redis_keeps_an_append_only_file_in_its_volume(stack: Stack) -> None:
    volume = stack.local.paths["/data"]  # redis-data, as the compose file mounts it
    assert any(p.name.startswith("appendonly") for p in volume.iterdir())


def test_published_redis_asks_every_client_for_the_password(tmp_path: Path) -> None:
    """Redis as docker/redis-published.yml runs it (its command, the volume a folder here, a free
    loopback port): the services' URL with the password is served, one without it or with
    another is refused, and the health check's redis-cli authenticates from its environment."""
    import redis
    from redis.exceptions import AuthenticationError, ResponseError

    from .test_docker_static import PASSWORD, published

    services = published({"REDIS_PASSWORD": PASSWORD})
    port = free_port()
    local = Local(paths={"/data": tmp_path}, hosts={"redis:6379": f"127.0.0.1:{port}"})
    argv = [local.path(a) for a in services["redis"]["command"]]
    log = (tmp_path / "redis.log").open("wb")
    server = subprocess.Popen([*argv, "--port", str(port), "--bind", "127.0.0.1"],
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        url = local.value(services["worker"]["environment"]["LABELCLEAN_REDIS_URL"])
        deadline = time.monotonic() + 20
        while True:
            try:
                assert redis.Redis.from_url(url).ping() is True  # the workers' URL
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, (tmp_path / "redis.log").read_text()
                time.sleep(0.1)
        for refused in (
            f"redis://127.0.0.1:{port}/0",
            f"redis://:wrong-{PASSWORD}@127.0.0.1:{port}/0",
        ):
            with pytest.raises((AuthenticationError, ResponseError), match="(?i)auth|password"):
                redis.Redis.from_url(refused).set("labelclean:probe", "1")
        program, *args = services["redis"]["healthcheck"]["test"][1:]  # after "CMD"
        check = [program, "-p", str(port), *args]
        env = {k: v for k, v in base_env().items() if k != "REDISCLI_AUTH"}
        with_auth = {**env, **services["redis"]["environment"]}
        out = subprocess.run(check, env=with_auth, capture_output=True, text=True, timeout=10)
        assert out.stdout.strip() == "PONG", out
        out = subprocess.run(check, env=env, capture_output=True, text=True, timeout=10)
        assert "NOAUTH" in out.stdout + out.stderr  # without it: refused
    finally:
        server.terminate()
        server.wait(10)
