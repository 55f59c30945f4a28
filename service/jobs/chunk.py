"""Cleaning one chunk of a bulk job: its images read, decoded and cleaned batch by batch with
``model.cleaning.clean_images`` (the function behind POST /clean), failures listed per image.

    result = await process_chunk(chunk, bundle=bundle, predict=predict, storage=storage,
                                 offload=offload, batch_size=32)
    result.rows     # (ImageID, "labelclean", LabelName, cleaned, verdict, issue, reason), in order
    result.errors   # (ImageID, reason) of images that could not be cleaned: kinds, no data

Torch-free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ...model.bundle import Bundle
from ...model.cleaning import (
    DEFAULT_LIMITS,
    ImageLimits,
    Offload,
    Predict,
    call_predict,
    clean_decodable,
)
from ...model.labels import InputError, parse_labels, unknown_labels_error
from ...storage import Storage, TooLarge
from ..failures import describe, image_problem
from . import files as io


@dataclass(frozen=True)
class ChunkItem:
    id: str
    uri: str
    labels: list[dict[str, Any]]  # [{"label": id, "confidence": x}], as POST /clean takes them


@dataclass(frozen=True)
class Chunk:
    index: int
    items: list[ChunkItem]


@dataclass
class ChunkResult:
    rows: list[tuple[str, str, str, float, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (ImageID, reason)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> name, verdicts
    done: int = 0  # images cleaned

    @property
    def failed(self) -> int:
        return len(self.errors)


async def process_chunk(
    chunk: Chunk,
    *,
    bundle: Bundle,
    predict: Predict,
    storage: Storage,
    limits: ImageLimits = DEFAULT_LIMITS,
    thresholds: float | dict[str, float] | str | None = None,
    min_precision: float | None = None,
    offload: Offload | None = None,
    batch_size: int = 32,
    in_flight: int = 3,
    on_batch: Callable[[int], None] | None = None,
    max_image_bytes: int | None = None,
) -> ChunkResult:
    """Clean a chunk's images in batches of ``batch_size`` with ``clean_images``. Up to
    ``in_flight`` batches are under way at once, so reading (through ``offload``, a thread
    pool) and decoding of the next batches overlap the current batch's inference; ``predict``
    runs one batch at a time. Unreadable or undecodable images, images over
    ``max_image_bytes`` (refused before they are read) and bad labels are listed in ``errors``
    and the rest of their batch is cleaned. ``on_batch(images)`` after each batch."""
    run = offload or (lambda fn, *args: asyncio.to_thread(fn, *args))
    lock = asyncio.Lock()

    async def one_at_a_time(images: Any, noisy: Any) -> Any:
        async with lock:
            return await call_predict(predict, images, noisy)

    gate = asyncio.Semaphore(max(1, in_flight))

    async def batch(items: list[ChunkItem]) -> tuple[dict[str, Any], dict[str, str]]:
        async with gate:
            out = await _clean_batch(items, bundle, one_at_a_time, storage, run, limits,
                                     thresholds, min_precision, offload,
                                     max_image_bytes)  # fmt: skip
        if on_batch is not None:
            on_batch(len(items))
        return out

    items = chunk.items
    size = max(1, batch_size)
    tasks = [asyncio.ensure_future(batch(items[i : i + size])) for i in range(0, len(items), size)]
    try:
        outcomes = await asyncio.gather(*tasks)
    except BaseException:  # one batch failed (or we were cancelled): stop the others too
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    cleaned: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for done, errors in outcomes:
        cleaned.update(done)
        failed.update(errors)
    result = ChunkResult()
    for item in items:
        if item.id in failed:
            result.errors.append((item.id, failed[item.id]))
            continue
        result.done += 1
        for v in cleaned[item.id].labels:
            row = (
                item.id, io.SOURCE, v.id, v.confidence, v.verdict, v.issue, v.cleaned,
                v.reason or "",
            )  # fmt: skip
            result.rows.append(row)
            counts = result.counts.setdefault(
                v.id, {"name": v.name, "kept": 0, "removed": 0, "added": 0}
            )
            counts[v.verdict] += 1
    return result


async def _clean_batch(
    items: list[ChunkItem], bundle: Bundle, predict: Predict, storage: Storage, run: Offload,
    limits: ImageLimits, thresholds: Any, min_precision: float | None, offload: Offload | None,
    max_image_bytes: int | None,
) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    errors: dict[str, str] = {}
    read_one = storage.read_bytes
    if max_image_bytes is not None:
        read_one = partial(storage.read_bytes, max_bytes=max_image_bytes)
    read = await asyncio.gather(*(run(read_one, i.uri) for i in items), return_exceptions=True)
    good: list[tuple[ChunkItem, bytes]] = []
    for item, data in zip(items, read, strict=True):
        if isinstance(data, BaseException):
            if not isinstance(data, Exception):
                raise data
            if isinstance(data, TooLarge):
                errors[item.id] = f"image_too_large: over {max_image_bytes} bytes (not read)"
            else:
                errors[item.id] = f"unreadable: {describe(data)}"
            continue
        try:
            _, unknown = parse_labels(item.labels, bundle.index)
            if unknown:
                raise unknown_labels_error(unknown)
        except InputError as exc:  # its message quotes the labels: the code says the kind
            errors[item.id] = f"labels: {exc.code}"
            continue
        good.append((item, data))
    results, bad = await clean_decodable(
        bundle, [d for _, d in good], [i.labels for i, _ in good], predict=predict,
        thresholds=thresholds, min_precision=min_precision, limits=limits, offload=offload,
    )  # fmt: skip
    errors.update({good[k][0].id: image_problem(reason) for k, reason in bad.items()})
    return {good[k][0].id: r for k, r in results.items()}, errors
