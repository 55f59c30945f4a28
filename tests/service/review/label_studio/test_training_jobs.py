"""Label Studio's "Start Training" queues a retraining job (LABELCLEAN_TRAINING_DATA set), and
`labelclean train-worker` runs it: the webhook's reviews join V, training continues from the
model in service, the job records the new bundle, which the service then reloads. One job at a
time; a failure says why; a worker killed mid-training loses nothing, one stopped by SIGTERM
gives its job back. Real redis-server, real uvicorn, real `labelclean train` (tiny)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from labelclean.model.bundle import load_bundle
from labelclean.service.review import retraining as rt
from labelclean.service.review.label_studio import imports
from labelclean.service.review.label_studio.reviews import Review, ReviewStore
from labelclean.service.review.retrain_worker import TrainingWorker
from redis.exceptions import ConnectionError as RedisDown

from labelclean.cli import main
from labelclean.settings import Settings
from labelclean.storage import Storage

from ....conftest import FAST_TRAIN
from ...conftest import API_KEY, Server, server_factory  # noqa: F401 - fixtures
from ...http.test_reload import point
from ...jobs.conftest import RedisServer, redis_db, redis_factory, redis_main  # noqa: F401

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


# Without training: the queue's steps, and a worker whose `labelclean train` is a stand-in.


@pytest.fixture
def url(redis_main: RedisServer, redis_db: redis.Redis) -> str:  # noqa: F811
    return redis_main.url  # the shared Redis, empty


def queue_at(url: str) -> rt.TrainingQueue:
    return rt.TrainingQueue(aioredis.Redis.from_url(url, decode_responses=True), max_tries=3)


def test_a_take_cut_short_a_worker_that_lost_its_job_and_the_jobs_kept(url: str) -> None:
    async def steps(queue: rt.TrainingQueue) -> None:
        job, _ = await queue.submit(project="7")
        pipeline, queue.redis.pipeline = queue.redis.pipeline, Mock(side_effect=RedisDown)
        with pytest.raises(RedisDown):  # moved to w1's list, not marked running
            await queue.take("w1", 0.1)
        queue.redis.pipeline = pipeline
        assert await queue.take("w1", 0.1) == job.id  # not held by a live worker forever
        assert await queue.recover() == [job.id]  # w1 never beat: taken back
        assert await queue.take("w2", 0.1) == job.id
        assert not await queue.finish(job.id, "w1", "succeeded", bundle="w1's")
        assert not await queue.release(job.id, "w1", "w1 stopped")
        found = await queue.get(job.id)
        assert found and (found.state, found.fields["worker"], found.fields["tries"]) == (
            "running", "w2", "2") and "bundle" not in found.fields  # fmt: skip
        assert await queue.redis.llen(rt.QUEUE) == 0  # not queued twice
        assert (await queue.submit(project="7"))[1] is False  # the slot still held
        assert await queue.finish(job.id, "w2", "succeeded", bundle="w2's")
        for _ in range(rt.KEEP + 1):  # only the newest jobs stay in Redis
            newest = (await queue.submit(project="7"))[0].id
            await queue.take("w", 0.1)
            assert await queue.finish(newest, "w", "failed", error="no reviews")
        assert await queue.redis.zcard(rt.JOBS) == rt.KEEP
        assert not await queue.redis.exists(rt.job_key(job.id))
        assert await queue.redis.exists(rt.job_key(newest))

    asyncio.run(steps(queue_at(url)))


def stand_in(tmp_path: Path, url: str, script: str) -> TrainingWorker:
    """A burst worker whose `labelclean train` is ``python -c script RUN JOB_FOLDER``."""
    worker = TrainingWorker(Settings(
        redis_url=url, training_data=tmp_path, training_runs=tmp_path / "runs", model=tmp_path,
        label_studio_reviews=str(tmp_path / "reviews"), job_claim_idle_s=1.5,
    ), burst=True)  # fmt: skip
    worker._prepare = lambda job_id, folder: (  # type: ignore[method-assign]
        folder.mkdir(parents=True, exist_ok=True),
        [sys.executable, "-c", script, str(folder / "run"), str(folder)])[1]  # fmt: skip
    return worker


def run_worker(worker: TrainingWorker, url: str) -> dict:  # the job queued, run: the job after
    job_id = asyncio.run(queue_at(url).submit(project="7"))[0].id
    assert asyncio.run(asyncio.wait_for(worker.run(), 60)) == 0
    return asyncio.run(queue_at(url).get(job_id)).public()  # type: ignore[union-attr]


REPORT = "import os, sys; os.makedirs(sys.argv[1]); open(sys.argv[1] + '/report.json', 'w')" \
    ".write('{}'); open(sys.argv[2] + '/tries', 'a').write('1')"  # fmt: skip
PID = "import os, sys, time; open(sys.argv[2] + '/pid', 'w').write(str(os.getpid())); " \
    "time.sleep(60)"  # fmt: skip


def test_outcomes_wait_out_redis_and_say_why(tmp_path: Path, url: str, monkeypatch) -> None:
    worker = stand_in(tmp_path, url, REPORT)
    finish, down = worker.queue.finish, [RedisDown("gone")]

    async def flaky(*args: Any, **fields: str) -> bool:  # Redis away when the training ends
        if down:
            raise down.pop()
        return await finish(*args, **fields)

    worker.queue.finish = flaky  # type: ignore[method-assign]
    job = run_worker(worker, url)
    assert (job["state"], job["tries"]) == ("succeeded", 1), job
    assert Path(job["run"], "..", "tries").read_text() == "1"  # trained once
    job = run_worker(stand_in(tmp_path, url, "pass"), url)  # e.g. `--help` in TRAINING_ARGS
    assert job["state"] == "failed" and "status 0 but left no report" in job["error"], job

    worker = stand_in(tmp_path, url, "import sys; sys.exit(1)")
    wait = asyncio.subprocess.Process.wait

    async def signalled_too(child: asyncio.subprocess.Process) -> int:
        code = await wait(child)  # SIGTERM to the group (systemd) or Ctrl-C: the child ended
        worker.stopping.set()  # and the worker's own handler ran
        await asyncio.sleep(0.2)
        return code

    monkeypatch.setattr(asyncio.subprocess.Process, "wait", signalled_too)
    job = run_worker(worker, url)  # given back, not failed (nor the worker crashed)
    assert (job["state"], job["tries"]) == ("queued", 0) and "stopped; queued" in job["note"]


def test_heartbeats_go_on_while_reviews_are_read(tmp_path: Path, url: str, monkeypatch) -> None:
    worker = stand_in(tmp_path, url, "pass")
    del worker._prepare  # the real one, reading a slow store
    beats, db = [], redis.Redis.from_url(url)

    def slow_store(uri: str) -> tuple[str, int]:
        for _ in range(40):  # 4 s, the heartbeat's expiry 1.5 s
            beats.append(db.exists(rt.heartbeat_key(worker.name)))
            time.sleep(0.1)
        return "", 0

    monkeypatch.setattr(imports, "from_store", slow_store)
    job = run_worker(worker, url)
    assert (job["state"], job["tries"]) == ("failed", 1) and "no reviews in" in job["error"]
    assert all(beats), beats  # no other worker would have taken the job back


def child_pid(pid_file: Path) -> int:
    for _ in range(300):
        if pid_file.is_file() and pid_file.read_text():
            return int(pid_file.read_text())
        time.sleep(0.1)
    raise AssertionError(f"no training child wrote {pid_file}")


def ended(pid: int) -> bool:  # gone (or a zombie) within 10 s
    for _ in range(100):
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z":
                time.sleep(0.1)
                continue
        return True
    return False


def test_no_training_runs_on_once_its_worker_lost_the_job_or_died(tmp_path: Path, url: str) -> None:
    worker = stand_in(tmp_path, url, PID)

    async def lost(queue: rt.TrainingQueue) -> tuple[bool, dict]:
        job_id = (await queue.submit(project="7"))[0].id
        running = asyncio.create_task(worker.run())
        pid = await asyncio.to_thread(child_pid, tmp_path / "runs" / job_id / "pid")
        await queue.beat("other", 60)  # another worker took it back (this one's beats missed)
        await queue.redis.lrem(rt.taken_key(worker.name), 0, job_id)
        await queue.redis.lpush(rt.taken_key("other"), job_id)
        await queue.redis.hset(rt.job_key(job_id), "worker", "other")
        gone = await asyncio.to_thread(ended, pid)
        worker.stopping.set()
        await asyncio.wait_for(running, 60)
        return gone, (await queue.get(job_id)).public()  # type: ignore[union-attr]

    gone, job = asyncio.run(lost(queue_at(url)))
    assert gone and (job["state"], job["worker"], job["tries"]) == ("running", "other", 1), job
    if not sys.platform.startswith("linux"):  # PR_SET_PDEATHSIG
        return
    redis.Redis.from_url(url).flushall()
    job_id = asyncio.run(queue_at(url).submit(project="7"))[0].id
    code = (
        "import asyncio, sys, pathlib, tests.service.review.label_studio.test_training_jobs "
        "as t; asyncio.run(t.stand_in(pathlib.Path(sys.argv[1]), sys.argv[2], t.PID).run())"
    )
    killed = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), url])
    pid = child_pid(tmp_path / "runs" / job_id / "pid")
    killed.kill()  # the worker alone, as the OOM killer would
    killed.wait()
    try:
        assert ended(pid)  # not training on beside the worker that begins the job again
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
