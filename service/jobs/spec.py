"""A bulk job's spec: where its images and labels are, where its results go, and its options
(the body of POST /jobs, stored with the job). Checked against the storage before a job is
accepted: service.jobs.steps.validate_spec. Torch-free."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_URI_BYTES = 2048


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: float | dict[str, float] | None = Field(
        None,
        description="the decision's threshold for every class, or {label id: threshold}: the "
        "cut on the issue score for removing and adding (decision rule issue), or on the "
        "cleaned score (rule cleaned)",
    )
    min_precision: float | None = Field(
        None,
        gt=0,
        le=1,
        description="use the model's thresholds for at least this precision of the final "
        "label sets (GET /model decision.min_precision_levels)",
    )
    chunk_size: int | None = Field(None, ge=1, le=100_000, description="images per chunk")
    keep_work: bool = Field(
        False,
        description="keep the output's _work/ (the plan, chunk manifests and chunk results) "
        "after the job completes; by default it is removed then (a failed job keeps it, so "
        "that submitting the same job again resumes)",
    )


def _short(uri: str) -> str:
    if len(uri.encode()) > MAX_URI_BYTES:
        raise ValueError(f"at most {MAX_URI_BYTES} bytes (UTF-8)")
    return uri


Uri = Annotated[str, Field(min_length=1, max_length=MAX_URI_BYTES), AfterValidator(_short)]
"""A job's URI: 1 character to 2 KiB (a longer one is refused, naming the field)."""


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: Uri = Field(..., description="URI prefix holding <ImageID>.<ext>")
    labels: Uri = Field(..., description="URI of ImageID,Source,LabelName,Confidence")
    output: Uri = Field(..., description="URI prefix the results are written to")
    options: JobOptions = Field(default_factory=JobOptions)
