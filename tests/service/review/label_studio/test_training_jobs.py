"""Label Studio's "Start Training" queues a retraining job (LABELCLEAN_TRAINING_DATA set), and
`labelclean train-worker` runs it: the webhook's reviews join V, training continues from the
model in service, the job records the new bundle, which the service then reloads. One job at a
time; a failure says why; a worker killed mid-training loses nothing, one stopped by SIGTERM
gives its job back. Real redis-server, real uvicorn, real `labelclean train` (tiny)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from labelclean.model.bundle import load_bundle
from labelclean.service.review.label_studio.reviews import Review, ReviewStore

from labelclean.cli import main
from labelclean.settings import Settings
from labelclean.storage import Storage

from ....conftest import FAST_TRAIN
from ...conftest import API_KEY, Server, server_factory  # noqa: F401 - fixtures
from ...http.test_reload import point
from ...jobs.conftest import RedisServer, redis_factory, redis_main  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def deployed(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on the tiny data: its bundle is the model in service."""
    run = tmp_path_factory.mktemp("deployed") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *FAST_TRAIN]) == 0
    return run / "bundle"


def ids(csv_path: Path) -> set[str]:
    return {line.split(",", 1)[0] for line in csv_path.read_text().splitlines()[1:]}


def write_reviews(store: Path, data: Path, bundle: Path, n: int) -> list[str]:
    """Reviews of ``n`` T images in the webhook's store, as the webhook keeps them."""
    classes = load_bundle(bundle).classes
    in_t = sorted(ids(data / "train-annotations-machine-imagelabels.csv")
                  - ids(data / "train-annotations-human-imagelabels.csv"))[:n]  # fmt: skip
    reviews = ReviewStore(Storage.local(), f"file://{store}/", classes)
    for task, image in enumerate(in_t, 1):
        labels = {k: int(k == task % len(classes)) for k in range(len(classes))}
        reviews.save(Review(7, task, 100 + task, "2026-12-06T00:00:00Z", image, labels))
    return in_t


class Setup:
    """The service (keys on, training on), its Redis, and how to start training workers."""

    def __init__(self, server: Server, redis: RedisServer, env: dict[str, str], root: Path):
        self.server, self.redis, self.env, self.root = server, redis, env, root

    def start_training(self) -> dict:
        answer = self.server.client().post("/label-studio/webhook", json={
            "action": "START_TRAINING", "project": {"id": 7, "title": "p"}})  # fmt: skip
        assert answer.status_code == 200, answer.text
        return answer.json()

    def job(self, job_id: str) -> dict:
        answer = self.server.client().get(f"/label-studio/training/{job_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"worker-{time.monotonic_ns()}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "labelclean", "train-worker", *args],
            env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: killed with its training child
        )  # fmt: skip

    def run_burst(self, **env: str) -> None:
        worker = self.worker("--burst", **env)
        assert worker.wait(timeout=300) == 0, self.logs()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def wait_state(self, job_id: str, state: str, timeout_s: float = 60, *,
                   note: str = "") -> dict:  # fmt: skip
        """The job once in ``state`` with ``note`` in its note."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] == state and note in job.get("note", ""):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not {state} after {timeout_s} s: {job}\n{self.logs()}")


@pytest.fixture(scope="module")
def setup(
    tiny_data: Path, deployed: Path, server_factory: Callable[..., Server],  # noqa: F811
    redis_factory: Callable[..., RedisServer], tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
) -> Setup:  # fmt: skip
    root = tmp_path_factory.mktemp("training")
    current = root / "current"  # LABELCLEAN_MODEL: switched to a retrained bundle
    current.symlink_to(deployed)
    redis = redis_factory()
    env = {
        "LABELCLEAN_API_KEYS": API_KEY, "LABELCLEAN_DEVICE": "cpu",
        "LABELCLEAN_REDIS_URL": redis.url, "LABELCLEAN_MODEL": str(current),
        "LABELCLEAN_TRAINING_DATA": str(tiny_data),
        "LABELCLEAN_TRAINING_RUNS": str(root / "runs"),
        "LABELCLEAN_TRAINING_ARGS": shlex.join(FAST_TRAIN),
        "LABELCLEAN_LABEL_STUDIO_REVIEWS": str(root / "reviews"),
        "LABELCLEAN_JOB_CLAIM_IDLE_S": "1.5",  # a dead worker's heartbeat is gone in 1.5 s
    }  # fmt: skip
    server = server_factory(current, env)
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    return Setup(server, redis, {**worker_env, **env}, root)


@pytest.fixture
def fresh(setup: Setup) -> Setup:
    """No job in Redis and no reviews yet."""
    setup.redis.client().flushall()
    for path in sorted((setup.root / "reviews").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    return setup


def test_start_training_queues_one_job_and_the_worker_retrains_from_the_model_in_service(
    fresh: Setup, tiny_data: Path, deployed: Path,
) -> None:  # fmt: skip
    reviewed = write_reviews(fresh.root / "reviews", tiny_data, deployed, 2)
    first = fresh.start_training()
    assert (first["status"], first["new"], first["state"], first["workers"]) == (
        "queued", True, "queued", 0)  # fmt: skip
    assert "no training worker is running" in first["result"]
    again = fresh.start_training()  # one at a time: the same job
    assert (again["job"], again["new"]) == (first["job"], False)
    assert fresh.job(first["job"])["state"] == "queued"
    listed = fresh.server.client().get("/label-studio/training").json()["jobs"]
    assert [(j["id"], j["state"]) for j in listed] == [(first["job"], "queued")]

    fresh.run_burst()
    job = fresh.job(first["job"])
    assert job["state"] == "succeeded", job
    assert (job["tries"], job["project"]) == (1, "7")
    folder = fresh.root / "runs" / first["job"]
    assert job["bundle"] == str(folder / "run" / "bundle")
    assert ids(folder / "reviews.csv") == set(reviewed)
    before = json.loads((deployed.parent / "report.json").read_text())["sizes"]
    sizes = job["report"]["sizes"]
    assert (sizes["T"], sizes["V"]) == (before["T"] - 2, before["V"] + 2)
    assert job["report"]["start"]["init"] == str((deployed.parent / "checkpoint.pt").resolve())
    assert 0 <= job["report"]["AP_all"] <= 100
    assert "POST /model/reload" in job["note"]
    assert "labelclean train" in (folder / "train.log").read_text()

    # Served: the symlink switched to the new bundle and reloaded, a new model_version.
    with fresh.server.client() as c:
        point(fresh.root / "current", Path(job["bundle"]))
        try:
            reloaded = c.post("/model/reload").json()
            assert reloaded["changed"] and reloaded["sha256"] == load_bundle(job["bundle"]).sha256
            assert reloaded["sha256"] != reloaded["previous_sha256"]
            # The next retraining continues from the retrained model: a new job.
            nxt = fresh.start_training()
            assert nxt["new"] and nxt["job"] != first["job"]
        finally:
            point(fresh.root / "current", deployed)
            c.post("/model/reload")


def test_a_failed_retraining_says_why_and_frees_the_slot(fresh: Setup, tiny_data: Path,
                                                         deployed: Path) -> None:  # fmt: skip
    empty = fresh.start_training()["job"]
    fresh.run_burst()
    job = fresh.job(empty)
    assert job["state"] == "failed" and "no reviews in" in job["error"], job

    write_reviews(fresh.root / "reviews", tiny_data, deployed, 1)
    bad = fresh.start_training()
    assert bad["new"] and bad["job"] != empty  # the failed job no longer holds the slot
    fresh.run_burst(LABELCLEAN_TRAINING_ARGS="--device tpu")
    job = fresh.job(bad["job"])
    assert job["state"] == "failed", job
    assert "`labelclean train` exited with status 2" in job["error"]
    assert "argument --device: invalid choice: 'tpu'" in job["error"], job
    assert "train.log" in job["error"]


def test_a_worker_killed_mid_training_loses_nothing_and_sigterm_gives_the_job_back(
    fresh: Setup, tiny_data: Path, deployed: Path,
) -> None:  # fmt: skip
    write_reviews(fresh.root / "reviews", tiny_data, deployed, 1)
    job_id = fresh.start_training()["job"]
    killed = fresh.worker()
    first = fresh.wait_state(job_id, "running")
    os.killpg(killed.pid, signal.SIGKILL)  # the worker and its training child
    killed.wait()

    stopped = fresh.worker()  # takes the job once the dead worker's heartbeat expires
    job = fresh.wait_state(job_id, "running", timeout_s=30,
                           note="stopped mid-training (try 1); queued again")  # fmt: skip
    assert job["worker"] != first["worker"] and first["worker"] in job["note"]
    time.sleep(1)  # well inside the training
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=60) == 0, fresh.logs()
    job = fresh.job(job_id)
    assert job["state"] == "queued" and "stopped; queued again" in job["note"], job

    fresh.run_burst()
    job = fresh.job(job_id)
    assert job["state"] == "succeeded" and job["tries"] == 2, job
    assert Path(job["bundle"], "bundle.json").is_file()


def test_unknown_jobs_and_bad_settings_are_clear_errors(
    setup: Setup, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for job_id in ("0" * 32, "not-an-id"):
        answer = setup.server.client().get(f"/label-studio/training/{job_id}")
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "job_not_found"
    anonymous = httpx.get(f"{setup.server.url}/label-studio/training/{'0' * 32}")
    assert anonymous.status_code == 401

    with pytest.raises(ValueError, match="--out: set by the training worker"):
        Settings(training_args="--epochs 2 --out elsewhere")
    monkeypatch.setenv("LABELCLEAN_LABEL_STUDIO_REVIEWS", str(tmp_path / "reviews"))
    code = main(["train-worker", "--data", str(tmp_path / "missing"), "--runs", str(tmp_path),
                 "--model", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"LABELCLEAN_TRAINING_DATA: {tmp_path / 'missing'}: no such folder" in err
    assert "Traceback" not in err
