"""Label Studio's "Start Training" (the webhook's START_TRAINING) and the state of what it began.

With LABELCLEAN_TRAINING_DATA set (the deployment runs `labelclean train-worker`), it queues a
retraining job in Redis (service.review.retraining): the reviews joined to V, continued from the
model in service. One at a time: asking again while one is queued or running answers that one.

    {"status": "queued", "job": "<id>", "new": true, "state": "queued", "workers": 1, ...}
    GET /label-studio/training/<id>   -> the job: state, run, bundle, report, error, note
    GET /label-studio/training        -> {"jobs": [the newest 20, newest first]}

Unset, it starts nothing (the service does not train) and answers the commands that retrain
(``status: not_started``, ``steps``), as the log says.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from ...settings import Settings
from ..errors import JobNotFound
from ..review.retraining import TrainingQueue

log = logging.getLogger("labelclean.service")
LISTED = 20  # jobs GET /label-studio/training lists


def training_steps(settings: Settings) -> list[str]:
    """The commands that retrain from the reviews and serve the result, with what the service
    knows filled in (the reviews' store, the deployed run's checkpoint when it lies beside the
    bundle) and placeholders for the rest."""
    reviews = settings.label_studio_reviews or "REVIEWS (set LABELCLEAN_LABEL_STUDIO_REVIEWS)"
    checkpoint = "RUN/checkpoint.pt"
    if settings.model is not None:
        beside = settings.model.resolve().parent / "checkpoint.pt"
        checkpoint = str(beside) if beside.is_file() else checkpoint
    return [
        f"labelclean import-reviews --reviews {reviews} --out reviews.csv",
        f"labelclean train --data DATA --human-extra reviews.csv --init {checkpoint} --out NEW_RUN",
        "point LABELCLEAN_MODEL at NEW_RUN/bundle, then POST /model/reload (or SIGHUP to "
        "`labelclean serve`)",
    ]


def _queue(request: Request) -> TrainingQueue:
    jobs = request.app.state.jobs
    return TrainingQueue(jobs.redis, max_tries=jobs.settings.job_max_tries)


async def start_training(request: Request, project: dict[str, Any]) -> dict[str, Any]:
    """Queue a retraining where the deployment allows it; else say which commands retrain."""
    settings: Settings = request.app.state.settings
    if settings.training_data is None:
        steps = training_steps(settings)
        log.warning("Label Studio asked to start training: the service does not train "
                    "(LABELCLEAN_TRAINING_DATA is not set). Retrain with: %s",
                    "; ".join(steps))  # fmt: skip
        return {
            "status": "not_started",
            "result": "training is not started by the service: retrain with `labelclean "
            "train --human-extra ... --init ...` on a machine with the training data (steps), "
            "or set LABELCLEAN_TRAINING_DATA and run `labelclean train-worker`",
            "steps": steps,
        }
    if settings.label_studio_reviews is None:
        return {
            "status": "not_started",
            "result": "LABELCLEAN_LABEL_STUDIO_REVIEWS is not set: no reviews to train on",
        }
    queue = _queue(request)
    async with request.app.state.jobs.reachable():
        job, new = await queue.submit(project=str(project.get("id", "")))
        workers = await queue.workers()
    log.info("Label Studio asked to start training: job %s %s (%d training worker(s) alive)",
             job.id, "queued" if new else "already " + job.state, workers)  # fmt: skip
    answer = {"status": "queued", "job": job.id, "new": new, "state": job.state,
              "workers": workers, "result": f"retraining job {job.id} is {job.state}; "
              f"GET /label-studio/training/{job.id} says how it goes"}  # fmt: skip
    if not workers:
        answer["result"] += (
            "; no training worker is running: start `labelclean train-worker` where the "
            "training data is")  # fmt: skip
    return answer


async def training_job(request: Request, job_id: str) -> dict[str, Any]:
    async with request.app.state.jobs.reachable():
        job = await _queue(request).get(job_id)
    if job is None:
        raise JobNotFound(f"no retraining job {job_id[:40]!r}", field="job_id")
    return job.public()


async def training_jobs(request: Request) -> dict[str, Any]:
    async with request.app.state.jobs.reachable():
        jobs = await _queue(request).latest(LISTED)
    return {"jobs": [job.public() for job in jobs]}
