"""``labelclean train-worker [--burst]``: runs the retraining jobs Label Studio's "Start Training"
queues (service.review.retraining), one at a time, on a machine with PyTorch and the training data.

    asyncio.run(TrainingWorker(settings, burst=True).run())

Each job, in LABELCLEAN_TRAINING_RUNS/<job id>/:
1. ``reviews.csv``: the webhook's store of reviews (LABELCLEAN_LABEL_STUDIO_REVIEWS), as
   ``labelclean import-reviews --reviews`` writes it;
2. ``labelclean train --data LABELCLEAN_TRAINING_DATA --human-extra reviews.csv --init MODEL
   --out run`` (+ LABELCLEAN_TRAINING_ARGS), MODEL the bundle at LABELCLEAN_MODEL now (a run's
   bundle stands for its checkpoint), its output in ``train.log``;
3. the job records the new bundle (``run/bundle``) and the run's sizes and validation figures.
The worker does not deploy it: point LABELCLEAN_MODEL at the bundle and POST /model/reload (or
SIGHUP `labelclean serve`); Label Studio then sees a new model_version.

Training runs in a child process (its own memory; a crash fails the job, not the worker; on
Linux it dies with the worker). The worker beats every few seconds, the job's preparation
included; if it dies, another worker puts its job back at the head of the queue (up to
LABELCLEAN_JOB_MAX_TRIES tries) and it starts again from the beginning; if it missed its beats
and another worker took its job back, it stops its training and records nothing. SIGTERM (or
Ctrl-C, which may reach the child first) stops the training in hand and gives its job back;
``--burst`` exits once the queue is empty and no worker holds a job. Torch-free itself: only
the child imports PyTorch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from redis.exceptions import RedisError

from ...settings import Settings, worker_heartbeat_s
from ..inference.client import backoff
from ..jobs.keys import UNREACHABLE, redis_client, safe_url
from ..jobs.worker import RECONNECT_DELAYS, SHUTDOWN_S, worker_name
from .label_studio import imports
from .retraining import TrainingQueue, heartbeat_key

log = logging.getLogger("labelclean.train-worker")
LOG_TAIL = 5  # lines of train.log a failed job's error quotes
PR_SET_PDEATHSIG = 1  # prctl(2)


class TrainingWorker:
    def __init__(self, settings: Settings, *, burst: bool = False) -> None:
        for name, value in (("training_data", settings.training_data),
                            ("training_runs", settings.training_runs),
                            ("label_studio_reviews", settings.label_studio_reviews),
                            ("model", settings.model)):  # fmt: skip
            if value is None:
                raise ValueError(f"LABELCLEAN_{name.upper()} is not set: the training worker "
                                 "needs it")  # fmt: skip
        assert settings.training_data and settings.training_runs and settings.model
        if not settings.training_data.is_dir():
            raise ValueError(f"LABELCLEAN_TRAINING_DATA: {settings.training_data}: no such folder")
        self.settings = settings
        self.data, self.runs, self.model = (
            settings.training_data, settings.training_runs, settings.model,
        )  # fmt: skip
        self.burst = burst
        self.name = worker_name()
        self.redis = redis_client(settings.redis_url, timeout_s=5.0, retries=2)
        self.queue = TrainingQueue(self.redis, max_tries=settings.job_max_tries)
        self.heartbeat_s = worker_heartbeat_s(settings.job_claim_idle_s)
        self.stopping = asyncio.Event()
        self.done = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        log.info("training worker %s: data %s, runs %s, redis %s", self.name, self.data,
                 self.runs, safe_url(self.settings.redis_url))  # fmt: skip
        outage = 0
        try:
            while not self.stopping.is_set():
                try:
                    await self.queue.beat(self.name, self.heartbeat_s * 3)
                    for job_id in await self.queue.recover():
                        log.warning("training job %s: its worker stopped; queued again", job_id)
                    job_id = await self.queue.take(self.name, min(1.0, self.heartbeat_s))
                    outage = 0
                    if job_id is None:
                        if self.burst and await self.queue.drained():
                            break
                        continue
                    await self._run_job(job_id)
                except UNREACHABLE as exc:
                    delay = backoff(RECONNECT_DELAYS, outage)
                    outage += 1
                    log.warning("training worker %s: redis unreachable (%s); retrying in %.2g s",
                                self.name, exc, delay)  # fmt: skip
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), delay)
        finally:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self.redis.delete(heartbeat_key(self.name)), SHUTDOWN_S)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self.redis.aclose(), SHUTDOWN_S)
        log.info("training worker %s: stopped after %d job(s)", self.name, self.done)
        return 0

    async def _run_job(self, job_id: str) -> None:
        """The job, beating all along (its preparation too); ``lost`` set when another worker
        took it back (this one missed its beats)."""
        lost = asyncio.Event()
        beating = asyncio.create_task(self._beat(job_id, lost))
        try:
            await self._attempt(job_id, lost)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    async def _beat(self, job_id: str, lost: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(RedisError):
                if not await self.queue.beat(self.name, self.heartbeat_s * 3, job_id):
                    lost.set()
                    return
            await asyncio.sleep(self.heartbeat_s)

    async def _attempt(self, job_id: str, lost: asyncio.Event) -> None:
        folder = self.runs / job_id
        log.info("training job %s: begun in %s", job_id, folder)
        try:  # in a thread: it reads every review, and the heartbeat goes on
            command = await asyncio.to_thread(self._prepare, job_id, folder)
        except (ValueError, OSError) as exc:
            await self._record(job_id, "failed", error=str(exc))
            return
        code = None if lost.is_set() else await self._train(command, folder / "train.log", lost)
        if lost.is_set():
            log.error("training job %s: another worker took it back (this one missed its "
                      "heartbeats): its training here stopped, nothing recorded",
                      job_id)  # fmt: skip
            return
        if code is None:  # stopped: the job goes back, to begin again elsewhere
            await self._record(job_id, "queued", note=f"worker {self.name} stopped; queued again")
            return
        run, tail = folder / "run", await asyncio.to_thread(log_tail, folder / "train.log")
        if code != 0:
            error = f"`labelclean train` exited with status {code}: {tail}"
            await self._record(job_id, "failed", error=error, run=str(run))
            return
        try:
            report = summary(json.loads((run / "report.json").read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:  # e.g. `--help` in LABELCLEAN_TRAINING_ARGS
            error = f"`labelclean train` exited with status 0 but left no report ({exc}): {tail}"
            await self._record(job_id, "failed", error=error, run=str(run))
            return
        await self._record(
            job_id, "succeeded", run=str(run), bundle=str(run / "bundle"),
            report=json.dumps(report),
            note=f"to serve it: point LABELCLEAN_MODEL at {run / 'bundle'}, then POST "
            "/model/reload (or SIGHUP `labelclean serve`)",
        )  # fmt: skip

    async def _record(self, job_id: str, state: str, **fields: str) -> None:
        """The outcome (``queued``: given back) written, waiting out a Redis outage: a training
        done is not begun again for want of Redis. A worker stopped meanwhile gives up: the job
        is taken back once its heartbeat expires."""
        outage = 0
        while True:
            try:
                if state == "queued":
                    held = await self.queue.release(job_id, self.name, fields["note"])
                else:
                    held = await self.queue.finish(job_id, self.name, state, **fields)
                break
            except UNREACHABLE as exc:
                if self.stopping.is_set():
                    raise
                delay = backoff(RECONNECT_DELAYS, outage)
                outage += 1
                log.warning("training job %s: redis unreachable (%s); recording it %s again "
                            "in %.2g s", job_id, exc, state, delay)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
        if not held:
            log.error("training job %s: not recorded %s: this worker no longer holds it (taken "
                      "back by another after missed heartbeats)", job_id, state)  # fmt: skip
            return
        self.done += state != "queued"
        said = fields.get("error") or fields.get("bundle") or fields.get("note", "")
        level = logging.ERROR if state == "failed" else logging.INFO
        log.log(level, "training job %s %s: %s", job_id, state, said)

    def _prepare(self, job_id: str, folder: Path) -> list[str]:
        """The job's folder with reviews.csv (an earlier try's run removed), and the command."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / "run", ignore_errors=True)  # a try stopped midway: begin again
        reviews = self.settings.label_studio_reviews
        assert reviews is not None
        try:
            text, count = imports.from_store(reviews)
        except ValueError:  # no folder yet: the webhook has kept nothing
            text, count = "", 0
        if count == 0:
            raise ValueError(f"no reviews in {reviews} yet: nothing to retrain with")
        (folder / "reviews.csv").write_text(text, encoding="utf-8")
        init = self.model.resolve()  # the bundle in service now (LABELCLEAN_MODEL a symlink)
        return [
            sys.executable, "-m", "labelclean", "train", "--data", str(self.data),
            "--human-extra", str(folder / "reviews.csv"), "--init", str(init),
            "--out", str(folder / "run"), *shlex.split(self.settings.training_args),
        ]  # fmt: skip

    async def _train(self, command: list[str], log_path: Path, lost: asyncio.Event) -> int | None:
        """The child's exit status; None when the worker was stopped (or lost the job) first:
        the child ended. A stop that reached the child too (Ctrl-C, or SIGTERM to the whole
        group, as systemd sends it) may end it first: its failure then is the stop's too."""
        with log_path.open("ab") as out:
            out.write(f"$ {shlex.join(command)}\n".encode())
            out.flush()
            child = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                preexec_fn=die_with_parent(),
            )  # fmt: skip
            waited = asyncio.ensure_future(child.wait())
            ended = [asyncio.ensure_future(e.wait()) for e in (self.stopping, lost)]
            try:
                await asyncio.wait({waited, *ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in ended:
                    future.cancel()
                if not waited.done():  # stopped, the job lost, or cancelled: the child too
                    await end_child(child, waited)
            code = waited.result()
        return None if code != 0 and (self.stopping.is_set() or lost.is_set()) else code


async def end_child(child: asyncio.subprocess.Process, waited: asyncio.Future[int]) -> None:
    """SIGTERM, then SIGKILL after 30 s; a child that has just ended is not signalled (asyncio
    raises ProcessLookupError then)."""
    if child.returncode is None:
        child.terminate()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waited), 30)
    if child.returncode is None:
        child.kill()
    await waited


def die_with_parent() -> Callable[[], None] | None:
    """What the training child runs before its program on Linux: the kernel kills it when the
    worker dies (PR_SET_PDEATHSIG), so a worker killed outright (SIGKILL, the OOM killer) leaves
    no training running on beside the one that begins the job again. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def arm() -> None:  # in the child, between fork and exec: nothing that takes a lock
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the worker died before that
            os._exit(1)

    return arm


def log_tail(path: Path) -> str:
    """The last lines of a training log that say something (progress bars left out)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no train.log)"
    said = [line.strip() for line in lines if line.strip() and "\r" not in line]
    return " | ".join(said[-LOG_TAIL:]) + f" (all of it in {path})"


def summary(report: dict) -> dict:
    """What a finished job keeps of the run's report.json: its sizes, where it started, the
    test split's AP_all and MAP, and the final label sets' figures on V's validation part."""
    metrics = report.get("metrics") or {}
    return {
        "sizes": report.get("sizes"), "start": report.get("start"),
        "AP_all": metrics.get("AP_all"), "MAP": metrics.get("MAP"),
        "validation_final": (report.get("validation") or {}).get("final"),
    }  # fmt: skip


def run_training_worker(settings: Settings, *, burst: bool = False) -> int:
    """What ``labelclean train-worker`` calls."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(TrainingWorker(settings, burst=burst).run())
