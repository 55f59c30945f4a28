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
        description="the paper's cleaned score c = sigmoid(logit(y) + g(y, f)) (bce cleaner), "
        "or clip(y + g(y, f), 0, 1) (l1, the paper's); the verdict follows it only for a model "
        "whose decision rule is cleaned (GET /model decision.rule)"
    )
    confidence: float = Field(
        ge=0,
        le=1,
        description="the probability that the label is on the image, which the verdict "
        "follows: 1 - issue_score for a given label, issue_score for an added one (decision "
        "rule cleaned: the cleaned score)",
    )
    threshold: float = Field(
        description="the cut the verdict compared against: a given label is removed when "
        "issue_score >= threshold, an unlisted one added when issue_score >= threshold "
        "(decision rule cleaned: kept or added when cleaned >= threshold)"
    )
    verdict: Literal["kept", "removed", "added"]
    issue_score: float = Field(
        ge=0,
        le=1,
        description="label-issue score: for a given label the probability that it is wrong, "
        "for an added one that it was missing; fitted on human-verified images the model did "
        "not train on, so it ranks labels for review (highest first) without ties",
    )
    reason: str | None = Field(
        None,
        description="null when the label's own score decided the verdict; otherwise why, "
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
        "likely on the image than not, but under the add threshold, e.g. for a min_precision), "
        "most likely first: candidates for review, not part of cleaned_labels"
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
    thresholds: dict[str, list[float]] = Field(
        description="per class: cleaned (the paper's rule on c) and scores (/classify)"
    )
    decision: dict[str, Any] = Field(
        description="how /clean decides: rule (issue, or cleaned: the paper's), objective (f1, "
        "or min_precision=P), per class the remove and add thresholds on the issue score and "
        "whether the class has its own (per_class), and min_precision_levels: the minimum "
        "precisions a request may ask for"
    )
    metrics: dict[str, Any] = Field(description="training metrics recorded in the bundle")
    batching: dict[str, float]
    limits: dict[str, Any]


class ReloadResponse(BaseModel):
    path: str = Field(description="where the bundle in service was read: LABELCLEAN_MODEL")
    sha256: str = Field(description="its model.onnx's sha256")
    previous_sha256: str | None = Field(description="the one before (null if none had loaded)")
    changed: bool = Field(description="false when the bundle there was the one in service")
    model_version: str = Field(description="what Label Studio sees: labelclean-<sha256[:12]>")
