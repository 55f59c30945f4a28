"""The bulk job API: POST /jobs, GET /jobs, GET /jobs/{id}, GET /jobs/{id}/results,
DELETE /jobs/{id}. Jobs live in Redis (service.jobs.store); workers do them (service.jobs.worker).

    POST /jobs {"images": "s3://b/imgs/", "labels": "s3://b/labels.csv", "output": "s3://b/out/"}
    -> 202 {"id": "...", "state": "queued", ...}     Location: /jobs/{id}

The inputs are checked before a job is accepted (service.jobs.steps.validate_spec: they exist, the
first rows of the labels CSV parse, the output is writable; 422 naming the field, with the code
``uri_unusable`` when an allowed URI names something unusable, see ``_unusable``). An
``Idempotency-Key`` header makes a retried POST answer with the job the first one created (422
when the key comes with another request). When Redis cannot be reached these routes answer 503
(``jobs_unavailable``); /classify and /clean do not need it.

With API keys, a job belongs to the key that created it (service.jobs.owners): each key lists,
reads, cancels and replays (Idempotency-Key) only its own jobs, and another key's job answers
exactly as an absent one (404). No answer names another key's job, not even the one holding an
output (409).

The app sweeps the jobs in the background (service.jobs.upkeep): stale jobs fail, finished jobs
leave the indexes after their retention. A POST whose output is held checks the holder first:
a stale holder fails and the output is free. A cancel removes the leftovers of killed writers
under the job's output (service.jobs.leftovers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from redis.exceptions import RedisError

from ...model.labels import InputError
from ...settings import Settings
from ...storage import Storage, StorageError
from ..errors import (
    InvalidInput,
    JobConflict,
    JobNotFound,
    JobsUnavailable,
    error_responses,
)  # fmt: skip
from ..jobs import steps
from ..jobs.owners import Owners
from ..jobs.store import FINISHED, UNREACHABLE, Job, JobState, JobStore, redis_client, safe_url
from ..jobs.upkeep import JobUpkeep
from .auth import CallerDep, require_api_key

log = logging.getLogger("labelclean.service")
router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)])
READY_TIMEOUT_S = 0.5
READY_CACHE_S = 1.0


class JobList(BaseModel):
    jobs: list[Job]


class Jobs:
    """What the app holds for jobs: a Redis client, the job store, the storage layer and the
    upkeep (``start`` it in the app's lifespan; ``close`` stops it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis_client(settings.redis_url, timeout_s=1.0, retries=1)
        self.store = JobStore(self.redis, retention_s=settings.job_retention_s)
        self.owners = Owners(self.redis)
        self.storage = Storage.from_settings(settings)
        self.upkeep = JobUpkeep(self.store, stale_s=settings.job_stale_s, storage=self.storage)
        self._checked: tuple[float, str | None] = (-READY_CACHE_S, None)

    def start(self) -> None:
        self.upkeep.start()

    def unavailable(self, exc: BaseException) -> JobsUnavailable:
        what = "cannot reach" if isinstance(exc, UNREACHABLE) else "an error from"
        return JobsUnavailable(
            f"bulk jobs are unavailable: {what} Redis at {safe_url(self.settings.redis_url)} "
            f"({exc}); /classify and /clean still work"
        )

    @contextlib.asynccontextmanager
    async def reachable(self) -> AsyncIterator[JobStore]:
        """The store; Redis unreachable (or refusing, e.g. out of memory) inside the block
        becomes a 503."""
        try:
            yield self.store
        except RedisError as exc:
            raise self.unavailable(exc) from exc

    async def redis_error(self) -> str | None:
        """None when Redis answers a PING, else why not (for /readyz: answered within
        READY_TIMEOUT_S and remembered for READY_CACHE_S, so probes stay fast when Redis is not)."""
        now = time.monotonic()
        if now - self._checked[0] < READY_CACHE_S:
            return self._checked[1]
        try:
            await asyncio.wait_for(self.redis.ping(), READY_TIMEOUT_S)
            error = None
        except (RedisError, TimeoutError, OSError) as exc:
            reason = str(exc) or f"no answer within {READY_TIMEOUT_S} s"
            error = f"cannot reach Redis at {safe_url(self.settings.redis_url)}: {reason}"
        self._checked = (time.monotonic(), error)
        return error

    async def close(self) -> None:
        await self.upkeep.stop()
        await self.redis.aclose()


def get_jobs(request: Request) -> Jobs:
    return request.app.state.jobs


JobsDep = Annotated[Jobs, Depends(get_jobs)]


def _same_request(job: Job, spec: dict[str, Any]) -> bool:
    given = {"images": job.images, "labels": job.labels, "output": job.output,
             "options": job.options.model_dump(mode="json")}  # fmt: skip
    return json.dumps(given, sort_keys=True) == json.dumps(spec, sort_keys=True)


def _replay(job: Job, spec: dict[str, Any], response: Response) -> Job:
    if not _same_request(job, spec):
        raise InvalidInput(
            f"this Idempotency-Key was used for another request (job {job.id}): send a new key "
            "for a new job",
            field="Idempotency-Key", code="idempotency_key_reused",
        )  # fmt: skip
    response.headers["Location"] = f"/jobs/{job.id}"
    response.headers["Idempotent-Replayed"] = "true"
    return job


URI_FIELDS = ("images", "labels", "output")
UNUSABLE = "uri_unusable"


def _unusable(exc: InputError) -> InputError:
    """A job URI that passed the confinement but names something unusable now (no such folder,
    no images in it, a labels file that is missing or not a CSV, an output that cannot be
    written) is a 422 with the code ``uri_unusable``: the request is well formed (the served
    /openapi.json describes exactly the URIs the confinement lets through) but the storage is
    not as it says. Refused URIs keep their codes (``uri_outside_roots``, ...), and so does
    anything else."""
    if exc.field in URI_FIELDS and exc.code == "invalid_input":
        return InputError(str(exc), field=exc.field, code=UNUSABLE)
    return exc


def _output_in_use(output: str, holder: Job | None) -> JobConflict:
    """409 for an output another active job writes to; that job is named only to its owner."""
    if holder is None:  # another caller's: say that the output is busy, not whose job it is
        what = "another job is writing there; wait for it to finish"
    else:
        what = (
            f"job {holder.id} ({holder.state}) is writing there; wait for it to finish or cancel "
            f"it (DELETE /jobs/{holder.id})"
        )
    return JobConflict(f"{output}: {what}", field="output", code="output_in_use")


@router.post(
    "/jobs",
    summary="Start a bulk cleaning job over every image under a URI prefix",
    status_code=202,
    response_model=Job,
    responses=error_responses(400, 401, 409, 422, 503),
)
async def create_job(
    spec: steps.JobSpec,
    request: Request,
    response: Response,
    jobs: JobsDep,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="a retried POST with the same key (from the same API key) answers with "
            "the same job",
        ),
    ] = None,  # fmt: skip
) -> Job:
    wanted = spec.model_dump(mode="json")
    async with jobs.reachable() as store:
        await store.redis.ping()  # fail fast with 503, before reading the inputs
        owner = await jobs.owners.of(caller)
        if idempotency_key:
            existing = await store.find_idempotent(idempotency_key, owner=owner)
            if existing is not None:
                return _replay(existing, wanted, response)
    bundle = request.app.state.service.bundle
    try:
        await asyncio.to_thread(  # a refused URI: 422 naming the field and the kind
            steps.validate_spec,
            spec,
            jobs.storage,
            bundle.index if bundle else None,
            bundle.decision if bundle else None,
            max_chunk_size=jobs.settings.job_max_chunk_size,
        )
    except InputError as exc:
        raise _unusable(exc) from exc
    lock = jobs.storage.location(spec.output)  # one lock for every spelling of the output
    async with jobs.reachable() as store:
        job_id, outcome = await store.create(
            wanted, idempotency=idempotency_key, owner=owner, output_lock=lock
        )  # fmt: skip
        if outcome == "busy" and await jobs.upkeep.fail_if_stale(job_id):  # the output is free
            job_id, outcome = await store.create(
                wanted, idempotency=idempotency_key, owner=owner, output_lock=lock
            )  # fmt: skip
        job = await store.get(job_id, owner=owner)
    if outcome == "busy":
        raise _output_in_use(spec.output, job)
    if job is None:  # expired between the two calls: only with absurd retention
        raise JobNotFound(f"job {job_id} vanished")
    if outcome == "replayed":  # a concurrent POST with the same key won
        return _replay(job, wanted, response)
    log.info("job %s created by %s", job.id, caller.name)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.get(
    "/jobs", summary="Recent jobs, newest first", responses=error_responses(401, 503)
)  # fmt: skip
async def list_jobs(
    jobs: JobsDep, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> JobList:
    async with jobs.reachable() as store:
        return JobList(jobs=await store.list(limit, owner=await jobs.owners.of(caller)))


async def _job(store: JobStore, job_id: str, owner: str | None) -> Job:
    """The job, or 404 when it is unknown, expired or another caller's (the same answer)."""
    job = await store.get(job_id, owner=owner)
    if job is None:
        raise JobNotFound(f"no job {job_id!r} (unknown, or expired after its retention time)")
    return job


@router.get(
    "/jobs/{job_id}",
    summary="A job's state, counts, times, images/s and a sample of errors",
    responses=error_responses(401, 404, 503),
)
async def get_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> Job:
    async with jobs.reachable() as store:
        return await _job(store, job_id, await jobs.owners.of(caller))


@router.get(
    "/jobs/{job_id}/results",
    summary="The cleaned labels of a completed job, as CSV",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "ImageID,Source,LabelName,Confidence,Verdict,IssueScore,Cleaned,"
            "Reason (Source labelclean, Confidence the probability that the label is on the "
            "image, which the verdict follows, IssueScore the probability that a given label "
            "is wrong or an added one missing, Cleaned the paper's cleaned score, Reason set "
            "when the class hierarchy decided the verdict; every given label and every added "
            "one)",
        },
        **error_responses(401, 404, 409, 503),
    },
)
async def job_results(job_id: str, jobs: JobsDep, caller: CallerDep) -> StreamingResponse:
    async with jobs.reachable() as store:
        job = await _job(store, job_id, await jobs.owners.of(caller))
    if job.state != JobState.completed:
        raise JobConflict(
            f"job {job_id} is {job.state}: results come when it has completed",
            code="job_not_completed",
        )  # fmt: skip
    spec = steps.JobSpec(images=job.images, labels=job.labels, output=job.output,
                        options=job.options)  # fmt: skip
    try:
        blocks: Iterator[bytes] = await asyncio.to_thread(steps.open_results, spec, jobs.storage)
    except StorageError as exc:
        raise JobNotFound(f"job {job_id}'s results are gone: {exc}", code="results_gone") from exc
    return StreamingResponse(
        blocks,  # read in a thread pool, a block at a time
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-cleaned.csv"'},
    )


@router.delete(
    "/jobs/{job_id}",
    summary="Cancel a queued or running job (workers drop its remaining chunks)",
    responses=error_responses(401, 404, 409, 503),
)
async def cancel_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> Job:
    async with jobs.reachable() as store:
        owner = await jobs.owners.of(caller)
        await _job(store, job_id, owner)  # another caller's job: 404 before anything changes
        outcome = await store.cancel(job_id)
        job = await _job(store, job_id, owner)
    if outcome == "ok":
        log.info("job %s cancelled by %s", job_id, caller.name)
        jobs.upkeep.clean_after(job.output, time.time())
    elif job.state in FINISHED and job.state != JobState.cancelled:
        raise JobConflict(f"job {job_id} has {job.state}: nothing to cancel", code="job_finished")
    return job
