"""Response bodies of the service (their JSON Schema is part of openapi.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["alive"]


class Ready(BaseModel):
    status: Literal["ready"]
    provider: str = Field(description="ONNX Runtime execution provider running the model")
    redis: Literal["ok", "unreachable"] = Field(
        description="the Redis of bulk jobs; /classify and /clean work without it, POST /jobs not"
    )
    redis_error: str | None = Field(None, description="why Redis is unreachable")


class ScoredLabel(BaseModel):
    id: str = Field(description="label id, e.g. /m/01g317")
    name: str = Field(description="display name")
    score: float = Field(description="classifier probability, sigmoid(h(f(I)))")
    threshold: float = Field(description="the threshold it passed")


class ClassifiedImage(BaseModel):
    index: int = Field(description="position of the image among the request's image parts")
    filename: str | None
    labels: list[ScoredLabel] = Field(description="labels passing their threshold, best first")


class ClassifyResponse(BaseModel):
    results: list[ClassifiedImage]


class LabelVerdict(BaseModel):
    id: str
    name: str
    noisy: float = Field(description="the request's value: confidence (1 for a bare id), or 0")
    cleaned: float = Field(
        description="cleaned score c = clip(y + g(y, f), 0, 1), or sigmoid(logit(y) + g(y, f)) "
        "for a model trained with the bce cleaner loss"
    )
    threshold: float
    verdict: Literal["kept", "removed", "added"]
    issue_score: float = Field(
        ge=0,
        le=1,
        description="label-issue score: for a given label the probability that it is wrong, "
        "for an added one that it was missing; calibrated on held-out human labels, so it "
        "ranks labels for review (highest first) without ties",
    )
    reason: str | None = Field(
        None,
        description="null when the label's own threshold decided the verdict; otherwise why, "
        'e.g. "ancestor of /lc/shirt": the class hierarchy keeps or adds every ancestor of a '
        "kept or added label",
    )


class SuspectedLabel(BaseModel):
    id: str
    name: str
    issue_score: float = Field(ge=0.5, le=1, description="probability that it is missing")


class CleanedImage(BaseModel):
    index: int
    filename: str | None
    labels: list[LabelVerdict] = Field(
        description="every given label (kept or removed) and every added one, best first"
    )
    cleaned_labels: list[str] = Field(description="ids of the labels after cleaning")
    suspected_missing: list[SuspectedLabel] = Field(
        description="labels neither given nor added whose issue score is at least 0.5 (more "
        "likely on the image than not; the cleaned score stayed under its threshold), most "
        "likely first: candidates for review, not part of cleaned_labels"
    )


class CleanResponse(BaseModel):
    results: list[CleanedImage]


class InputSpecInfo(BaseModel):
    height: int
    width: int
    channels: int
    color_mode: str
    mean: list[float]
    std: list[float]


class ModelInfo(BaseModel):
    ready: bool
    reason: str | None = Field(None, description="why the model is not ready")
    device: Literal["auto", "cpu", "cuda"] = Field(description="the device asked for")
    provider: str | None = Field(description="execution provider in use (null while loading)")
    providers: list[str]
    path: str
    format: int
    mode: str
    sha256: str
    input: InputSpecInfo
    classes: list[dict[str, str]] = Field(description='[{"id": ..., "name": ...}] in model order')
    thresholds: dict[str, list[float]] = Field(description="per class: cleaned and scores")
    metrics: dict[str, Any] = Field(description="training metrics recorded in the bundle")
    batching: dict[str, float]
    limits: dict[str, Any]
