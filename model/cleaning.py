"""Cleaning images' labels: the one code path behind POST /clean, the bulk worker and the CLI.

    results = await clean_images(bundle, [png_bytes], ['["/m/01g317"]'], predict=model.run)
    results = clean_images_sync(bundle, [png_bytes], [["/m/01g317"]], predict=model.run)
    results[0].labels   # [LabelVerdict(id, name, noisy, cleaned, threshold, verdict, issue), ...]
    results[0].issue    # (d,) every class's issue score, for ranking (labelclean review)
    results[0].suspected_missing  # labels neither given nor added, issue score >= 0.5

Steps: parse every image's labels (unknown ids fail the whole request before any decoding),
decode and normalise each image (``offload`` runs that elsewhere, e.g. a thread pool), predict
one (N, C, H, W) batch through ``predict`` (noisy labels encoded as the bundle's model config
says: confidences, or 1 for every listed label) (``OnnxModel.run`` or the service's dynamic batcher,
sync or async), then give each label a verdict by the bundle's decision rule (model.decision;
by default on the issue score, the model's ``issue`` output: the probability that a listed label
is wrong, or that an unlisted one is missing):

    label listed,     issue <  remove threshold  -> kept
    label listed,     issue >= remove threshold  -> removed
    label not listed, issue >= add threshold     -> added

then, when the bundle carries a class hierarchy, make them consistent with it (see ``verdicts``).
The paper's cleaned score c stays in every result (``cleaned``); a bundle whose rule is
``cleaned`` decides on it instead, as the paper does.

Torch-free.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
from PIL import Image

from .bundle import Bundle
from .classes import LabelClass
from .config import InputSpec
from .decision import Decision
from .labels import InputError, parse_labels, unknown_labels_error
from .preprocess import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_PIXELS,
    ImageError,
    decode_pixels,
    encode_noisy,
    normalize,
    open_image,
)

T = TypeVar("T")
Arrays = tuple[np.ndarray, ...]
Predict = Callable[[np.ndarray, np.ndarray], Arrays | Awaitable[Arrays]]
"""(N, C, H, W) float32 images, (N, d) float32 noisy labels -> the model's outputs, each (N, d):
scores, cleaned, issue (model.bundle.OUTPUTS)."""
Offload = Callable[..., Awaitable[Any]]
"""``offload(fn, *args)`` runs ``fn(*args)`` somewhere and awaits it (e.g. a thread pool)."""
Verdict = Literal["kept", "removed", "added"]
ISSUE_THRESHOLD = 0.5
"""An issue score at or above this says its label is more likely wrong (listed) or missing (not
listed) than not: ``suspected_missing`` lists the unlisted labels at or above it that the rule
did not add (their add threshold is higher, e.g. for a minimum precision)."""


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be: at most ``max_pixels`` pixels, one of ``formats`` (Pillow names)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = DEFAULT_FORMATS


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class LabelVerdict:
    id: str
    name: str
    noisy: float  # the request's value: its confidence, 1 for a bare id, 0 when absent
    cleaned: float  # the paper's c: sigmoid(logit(y) + g(y, f)), or clip(y + g(y, f), 0, 1)
    threshold: float  # the cut the verdict compared against (model.decision): remove or add
    verdict: Verdict
    issue: float  # P(wrong) for a listed label, P(missing) for one that is not
    reason: str | None = None  # why, when the hierarchy (not the threshold) decided the verdict
    confidence: float = 0.0  # P(on the image): 1 - issue listed, issue unlisted (rule cleaned: c)


@dataclass
class CleanResult:
    """One image: its labels that were given or added, likeliest first, and every
    class's issue score (``issue``, (d,), in the bundle's class order; ``noisy`` (d,) is the
    labels given, as parsed: their confidence, 0 when absent)."""

    labels: list[LabelVerdict] = field(default_factory=list)
    issue: np.ndarray | None = None
    noisy: np.ndarray | None = None
    suspected_missing: list[SuspectedLabel] = field(default_factory=list)

    @property
    def cleaned_labels(self) -> list[str]:
        """The ids of the image's labels after cleaning (kept and added)."""
        return [v.id for v in self.labels if v.verdict != "removed"]


@dataclass(frozen=True)
class SuspectedLabel:
    """A label neither given nor added whose issue score says it is probably missing."""

    id: str
    name: str
    issue: float


INLINE_PIXELS = 64 * 64
INLINE_BYTES = 64 * 1024
"""Images of at most INLINE_BYTES bytes and INLINE_PIXELS pixels are decoded where they arrive:
a 28x28 PNG decodes in about 0.15 ms, less than handing it to a thread and back costs the event
loop (measured in benchmarks/RESULTS.md). Everything else goes to ``offload``, header and all
(a PNG may carry megabytes of chunks before its pixels), so it never holds up the server."""


def prepare_image(data: bytes, spec: InputSpec, limits: ImageLimits) -> np.ndarray:
    """Encoded image bytes -> (C, H, W) float32 network input. Raises ImageError."""
    return _to_input(_open(data, limits), spec)


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    return open_image(data, max_pixels=limits.max_pixels, formats=limits.formats)


def _to_input(image: Image.Image, spec: InputSpec) -> np.ndarray:
    return normalize(decode_pixels(image, spec)[None], spec)[0]


async def _prepare(
    data: bytes, spec: InputSpec, limits: ImageLimits, offload: Offload | None
) -> np.ndarray:
    if offload is not None and len(data) > INLINE_BYTES:
        return await offload(prepare_image, data, spec, limits)
    image = _open(data, limits)  # the header only
    if offload is None or image.width * image.height <= INLINE_PIXELS:
        return _to_input(image, spec)
    return await offload(_to_input, image, spec)


async def prepare_images(
    images: Sequence[bytes], spec: InputSpec, limits: ImageLimits, offload: Offload | None = None
) -> np.ndarray:
    """Decode all images (concurrently through ``offload``, but for tiny ones) -> (N, C, H, W).

    An ImageError names the first bad image: its ``index`` attribute and message say which.
    """
    if len(images) == 1:  # the common case, without gather's task per image
        try:
            outcomes: list[Any] = [await _prepare(images[0], spec, limits, offload)]
        except ImageError as exc:
            outcomes = [exc]
    else:
        outcomes = await asyncio.gather(
            *(_prepare(data, spec, limits, offload) for data in images), return_exceptions=True
        )
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, ImageError):
            error = type(outcome)(f"image {i}: {outcome}")
            error.index = i  # type: ignore[attr-defined]
            raise error from outcome
        if isinstance(outcome, BaseException):
            raise outcome
    return np.stack(outcomes)


async def call_predict(predict: Predict, images: np.ndarray, noisy: np.ndarray) -> Arrays:
    """Run ``predict``, awaiting it when it is asynchronous."""
    result = predict(images, noisy)
    if inspect.isawaitable(result):
        result = await result
    return result


def round_scores(values: np.ndarray) -> list[float]:
    """float32s -> floats that print as they were meant (0.4, not 0.4000000059604645): six
    decimals, one numpy call per image rather than ``round`` per value (the same results on
    2 million random float32s)."""
    return np.round(values.astype(np.float64), 6).tolist()


def verdicts(
    classes: Sequence[LabelClass],
    noisy: np.ndarray,
    cleaned: np.ndarray,
    issue: np.ndarray,
    decision: Decision,
    remove: np.ndarray,
    add: np.ndarray,
    ancestors: Sequence[np.ndarray] | None = None,
) -> CleanResult:
    """(d,) noisy labels, cleaned scores and issue scores of one image -> its given and added
    labels, by ``decision``'s rule at the thresholds ``remove`` and ``add`` (model.decision).

    A label *passes* when the rule keeps it (listed) or adds it (unlisted): rule ``issue``:
    a listed label while issue < remove, an unlisted one once issue >= add; rule ``cleaned``:
    cleaned >= its threshold (``remove``, equal to ``add`` then). Without a hierarchy
    (``ancestors`` None) the image's labels after cleaning are those that pass. With one
    (``ancestors[i]``: the columns of every class above class i, ``Bundle.ancestor_columns``)
    two rules hold, in this order:

    1. a removed parent removes its listed children unless they pass on their own;
    2. a kept or added child keeps (when listed) or adds (when not) every ancestor.

    The labels after cleaning are therefore those that pass plus every ancestor of one that
    passes: rule 1 never removes a label that passes, rule 2 only adds ancestors of labels
    kept either way, and a listed parent that ends up removed has no descendant that passes,
    so each of its listed descendants fails on its own and is removed too. Applying either rule
    again changes nothing (a fixed point). A label kept or added only by rule 2 says why in
    ``reason``: ``"ancestor of /lc/shirt"`` (the labels that pass below it, likeliest first).
    Labels are listed likeliest first: by P(present) (1 - issue listed, issue unlisted) under
    rule ``issue``, by the cleaned score under rule ``cleaned``.
    """
    present = noisy > 0
    passes = decision.passes(noisy, cleaned, issue, remove, add)
    likely = cleaned if decision.rule == "cleaned" else np.where(present, 1.0 - issue, issue)
    cut = np.where(present, remove, add)
    because: dict[int, list[str]] = {}
    if ancestors is not None:
        below = np.flatnonzero(passes)
        for i in below[np.argsort(-likely[below], kind="stable")].tolist():
            for a in ancestors[i].tolist():
                if not passes[a]:
                    because.setdefault(a, []).append(classes[i].id)
        if because:
            passes = passes.copy()
            passes[list(because)] = True
    shown = np.flatnonzero(present | passes)
    shown = shown[np.argsort(-likely[shown], kind="stable")]
    out = []
    for i, y, c, t, p, q in zip(
        shown.tolist(), round_scores(noisy[shown]), round_scores(cleaned[shown]),
        round_scores(cut[shown]), issue_scores(issue[shown]), issue_scores(likely[shown]),
        strict=True,
    ):  # fmt: skip
        verdict: Verdict = ("kept" if passes[i] else "removed") if present[i] else "added"
        reason = f"ancestor of {', '.join(because[i])}" if i in because else None
        out.append(LabelVerdict(classes[i].id, classes[i].name, y, c, t, verdict, p, reason, q))
    return CleanResult(out, issue, noisy, suspected(classes, issue, present | passes))


def suspected(
    classes: Sequence[LabelClass], issue: np.ndarray, shown: np.ndarray
) -> list[SuspectedLabel]:
    """The labels not ``shown`` (neither given nor added) whose issue score reaches
    ISSUE_THRESHOLD, most likely missing first: the cleaner's threshold kept them out, the
    calibrated issue score says they are more likely on the image than not."""
    rows = np.flatnonzero(~shown & (issue >= ISSUE_THRESHOLD))
    rows = rows[np.argsort(-issue[rows], kind="stable")]
    return [
        SuspectedLabel(classes[i].id, classes[i].name, p)
        for i, p in zip(rows.tolist(), issue_scores(issue[rows]), strict=True)
    ]


def issue_scores(values: np.ndarray) -> list[float]:
    """float32 issue scores -> floats with nine significant digits: enough to keep the order of
    float32 values (six decimals, as ``round_scores`` gives, would tie the many small ones)."""
    return [float(f"{v:.9g}") for v in values.astype(np.float64).tolist()]


async def clean_images(
    bundle: Bundle,
    images: Sequence[bytes],
    labels: Sequence[str | list[Any]],
    *,
    predict: Predict,
    thresholds: str | float | dict[str, Any] | None = None,
    min_precision: float | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
    offload: Offload | None = None,
) -> list[CleanResult]:
    """Clean the noisy ``labels`` of each of ``images`` (same order, one entry per image).

    Each labels entry is a JSON array (string or decoded) of ids or of {"label", "confidence"};
    ``min_precision`` picks the bundle's thresholds for that minimum precision and
    ``thresholds`` overrides them (``Decision.cuts``). Raises InputError (labels, thresholds,
    min_precision) before decoding, then ImageError.
    """
    if len(labels) != len(images):
        raise InputError(
            f"{len(images)} image(s) but {len(labels)} labels field(s): send one labels field "
            "per image, in the same order",
            field="labels",
        )
    index = bundle.index
    noisy = np.zeros((len(images), bundle.num_classes), dtype=np.float32)
    unknown: list[str] = []
    for i, value in enumerate(labels):
        noisy[i], missing = parse_labels(value, index, field=f"labels[{i}]")
        unknown += missing
    if unknown:
        raise unknown_labels_error(unknown)
    decision = bundle.require_decision()
    remove, add = decision.cuts(min_precision=min_precision, override=thresholds, index=index)
    batch = await prepare_images(images, bundle.input, limits, offload)
    encoding = str(bundle.model_config.get("noisy_labels", "confidence"))
    _, cleaned, issue = await call_predict(predict, batch, encode_noisy(noisy, encoding))
    ancestors = bundle.ancestor_columns
    return [
        verdicts(bundle.classes, noisy[i], cleaned[i], issue[i], decision, remove, add, ancestors)
        for i in range(len(images))
    ]


async def clean_decodable(
    bundle: Bundle,
    images: Sequence[bytes],
    labels: Sequence[str | list[Any]],
    **options: Any,
) -> tuple[dict[int, CleanResult], dict[int, str]]:
    """``clean_images`` (same ``options``) for many images where a bad one must not stop the
    rest: an image that fails to decode is left out and the others are cleaned again.

    Returns (index -> result, index -> "kind: message"), indices into ``images``; an InputError
    (labels, thresholds) still fails the whole call."""
    keep = list(range(len(images)))
    errors: dict[int, str] = {}
    while keep:
        try:
            results = await clean_images(
                bundle, [images[i] for i in keep], [labels[i] for i in keep], **options
            )
        except ImageError as exc:
            bad = getattr(exc, "index", None)
            if bad is None:
                raise
            cause = exc.__cause__ if isinstance(exc.__cause__, ImageError) else exc
            errors[keep.pop(bad)] = f"{cause.kind}: {cause}"
            continue
        return dict(zip(keep, results, strict=True)), errors
    return {}, errors


def clean_images_sync(
    bundle: Bundle,
    images: Sequence[bytes],
    labels: Sequence[str | list[Any]],
    *,
    predict: Callable[[np.ndarray, np.ndarray], Arrays],
    thresholds: str | float | dict[str, Any] | None = None,
    min_precision: float | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> list[CleanResult]:
    """``clean_images`` for code without an event loop (offline CLI, worker): same path."""
    return asyncio.run(
        clean_images(
            bundle,
            images,
            labels,
            predict=predict,
            thresholds=thresholds,
            min_precision=min_precision,
            limits=limits,
        )  # fmt: skip
    )
