"""A bulk job as the API shows it (``Job``, its ``JobState``) and how one is read back from its
Redis hash and error sample (``job_from_hash``). Torch-free."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from .keys import ERROR_SAMPLE
from .steps import JobOptions


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = frozenset({JobState.completed, JobState.failed, JobState.cancelled})


class JobError(BaseModel):
    image: str = Field(description="ImageID")
    reason: str


class Job(BaseModel):
    """A job as GET /jobs/{id} shows it."""

    id: str
    state: JobState
    images: str = Field(description="the URI prefix of the images")
    labels: str = Field(description="the URI of the noisy labels CSV")
    output: str = Field(description="the URI prefix written: cleaned.csv, errors.csv, summary.json")
    options: JobOptions = Field(default_factory=JobOptions)
    created_at: datetime
    started_at: datetime | None = Field(None, description="when a worker began planning it")
    finished_at: datetime | None = None
    total: int | None = Field(None, description="images in the job; null until planned")
    done: int = Field(0, description="images cleaned")
    failed: int = Field(0, description="images that could not be cleaned (errors.csv)")
    chunks: int | None = Field(None, description="chunks in the job; null until planned")
    chunks_done: int = 0
    images_per_s: float | None = Field(None, description="(done + failed) / running time")
    errors: list[JobError] = Field(
        default_factory=list, description=f"a sample of per-image errors (the first {ERROR_SAMPLE})"
    )
    error: str | None = Field(None, description="why the job failed")
    summary: dict[str, Any] | None = Field(None, description="totals of summary.json, when done")


def _time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None else None


def job_from_hash(fields: dict[str, str], errors: list[str], now: float | None = None) -> Job:
    """A job hash (and its error sample) -> Job."""
    spec = json.loads(fields["spec"])
    done, failed = int(fields.get("done", 0)), int(fields.get("failed", 0))
    rate = None
    if fields.get("started_at"):
        end = float(fields.get("finished_at") or (now or time.time()))
        elapsed = end - float(fields["started_at"])
        rate = round((done + failed) / elapsed, 3) if elapsed > 0 else None
    return Job(
        id=fields["id"],
        state=JobState(fields["state"]),
        images=spec["images"],
        labels=spec["labels"],
        output=spec["output"],
        options=spec.get("options") or {},
        created_at=_time(fields["created_at"]),
        started_at=_time(fields.get("started_at")),
        finished_at=_time(fields.get("finished_at")),
        total=_int(fields.get("total")),
        done=done,
        failed=failed,
        chunks=_int(fields.get("chunks")),
        chunks_done=int(fields.get("chunks_done", 0)),
        images_per_s=rate,
        errors=[JobError(**json.loads(e)) for e in errors],
        error=fields.get("error"),
        summary=json.loads(fields["summary"]) if fields.get("summary") else None,
    )
