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

Training runs in a child process (its own memory; a crash fails the job, not the worker). The
worker beats every few seconds; if it dies, another worker puts its job back at the head of the
queue (up to LABELCLEAN_JOB_MAX_TRIES tries) and it starts again from the beginning. SIGTERM
(or Ctrl-C) stops the training in hand and gives its job back; ``--burst`` exits once the queue
is empty and no worker holds a job. Torch-free itself: only the child imports PyTorch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import shutil
import signal
import sys
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
        folder = self.runs / job_id
        log.info("training job %s: begun in %s", job_id, folder)
        try:
            command = self._prepare(job_id, folder)
        except (ValueError, OSError) as exc:
            await self.queue.finish(job_id, self.name, "failed", error=str(exc))
            log.error("training job %s failed: %s", job_id, exc)
            self.done += 1
            return
        code = await self._train(command, folder / "train.log")
        if code is None:  # stopped: the job goes back, to begin again elsewhere
            await self.queue.release(job_id, self.name, f"worker {self.name} stopped; queued again")
            log.warning("training job %s: stopped with the worker; queued again", job_id)
            return
        self.done += 1
        run = folder / "run"
        if code != 0:
            tail = log_tail(folder / "train.log")
            error = f"`labelclean train` exited with status {code}: {tail}"
            await self.queue.finish(job_id, self.name, "failed", error=error, run=str(run))
            log.error("training job %s failed: %s", job_id, error)
            return
        report = summary(json.loads((run / "report.json").read_text(encoding="utf-8")))
        await self.queue.finish(
            job_id, self.name, "succeeded", run=str(run), bundle=str(run / "bundle"),
            report=json.dumps(report),
            note=f"to serve it: point LABELCLEAN_MODEL at {run / 'bundle'}, then POST "
            "/model/reload (or SIGHUP `labelclean serve`)",
        )  # fmt: skip
        log.info("training job %s succeeded: %s", job_id, run / "bundle")

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

    async def _train(self, command: list[str], log_path: Path) -> int | None:
        """The child's exit status; None when the worker was stopped first (child ended)."""
        with log_path.open("ab") as out:
            out.write(f"$ {shlex.join(command)}\n".encode())
            out.flush()
            child = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )
            waited = asyncio.ensure_future(child.wait())
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                while not waited.done():
                    await asyncio.wait({waited, stop}, timeout=self.heartbeat_s,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                    if stop.done() and not waited.done():
                        child.terminate()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(waited), 30)
                        if not waited.done():
                            child.kill()
                            await waited
                        return None
                    with contextlib.suppress(RedisError, *UNREACHABLE):
                        await self.queue.beat(self.name, self.heartbeat_s * 3)
            finally:
                stop.cancel()
            return waited.result()


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
