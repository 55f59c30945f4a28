"""The core of a bulk cleaning job, shared by the Redis workers and the offline `labelclean clean`.

    validate_spec(spec, storage, bundle.index)           # before accepting: InputError(field=...)
    p = plan(spec, storage, chunk_size=1000)             # chunk manifests under {output}/_work/
    for n in range(p.chunks):
        if not chunk_stored(spec, storage, n):
            result = await process_chunk(load_chunk(spec, storage, n), bundle=bundle,
                                         predict=predict, storage=storage, offload=offload)
            store_chunk(spec, storage, n, result)
    summary = finalize(spec, storage, p.chunks, dead={})

A job cleans every image ``<ImageID>.<ext>`` directly under ``images`` with its rows of the
``labels`` CSV (``ImageID,Source,LabelName,Confidence``; an image without rows is cleaned with no
given labels, so only added labels come back; Confidence 0 means "absent" and adds nothing),
through ``model.cleaning.clean_images``: the function behind POST /clean. Nothing is dropped
silently: rows for images without a file, unknown label ids, unreadable or undecodable images
each become a line of ``errors.csv``. Results are keyed by chunk, so storing a chunk twice is
harmless and a rerun skips what is stored. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ...model.decision import Decision
from ...model.labels import InputError, parse_thresholds
from ...storage import Storage, StorageError
from . import files as io
from .chunk import Chunk, ChunkItem, ChunkResult, process_chunk
from .plan import Plan, plan, read_plan
from .results import finalize, open_results
from .spec import JobOptions, JobSpec

__all__ = [
    "Chunk", "ChunkItem", "ChunkResult", "JobOptions", "JobSpec", "Plan", "chunk_stored",
    "finalize", "load_chunk", "open_results", "plan", "process_chunk", "read_plan",
    "store_chunk", "validate_spec",
]  # fmt: skip

VALIDATE_ROWS = 100


def _field_error(exc: Exception, field: str, prefix: str = "") -> InputError:
    """``exc`` as the InputError of ``field``; a refused URI keeps its code (outside the allowed
    roots, protocol not allowed)."""
    if isinstance(exc, InputError):
        return exc
    code = getattr(exc, "code", None) or "invalid_input"
    return InputError(prefix + str(exc), field=field, code=code)


def validate_spec(
    spec: JobSpec,
    storage: Storage,
    bundle_index: Mapping[str, int] | None,
    decision: Decision | None = None,
    *,
    max_chunk_size: int | None = None,
) -> None:
    """Refuse a job whose inputs are missing or malformed, naming the field: options.chunk_size
    (at most ``max_chunk_size``), images (allowed, lists, holds images), labels (exists, header,
    first rows parse), output (allowed, writable), options.thresholds (against
    ``bundle_index`` when given) and options.min_precision (against ``decision`` when given)."""
    size = spec.options.chunk_size
    if max_chunk_size is not None and size is not None and size > max_chunk_size:
        raise InputError(
            f"options.chunk_size: at most {max_chunk_size} images a chunk here "
            "(LABELCLEAN_JOB_MAX_CHUNK_SIZE)",
            field="options.chunk_size",
        )
    for name in ("images", "labels", "output"):
        try:
            storage.check(getattr(spec, name))
        except StorageError as exc:
            raise _field_error(exc, name) from exc
    try:
        found = next((n for n, _ in storage.list(spec.images) if io.image_id(n)), None)
    except StorageError as exc:
        raise _field_error(exc, "images") from exc
    if found is None:
        extensions = ", ".join(sorted(io.IMAGE_EXTENSIONS))
        raise InputError(
            f"{spec.images}: no images (<ImageID>.<ext>, ext one of {extensions})", field="images"
        )
    for row in io.read_label_rows(storage, spec.labels, limit=VALIDATE_ROWS):
        if row.problem:
            raise InputError(f"{spec.labels}: {row.problem}", field="labels")
    probe = io.work(spec.output, storage, ".probe")
    try:
        storage.write_bytes(probe, b"")
        storage.delete(probe)
    except StorageError as exc:  # e.g. a symlink out where the job writes its own files
        raise _field_error(exc, "output", "output not writable: ") from exc
    read_plan(spec, storage)  # another job's work under the same output: refused
    thresholds = spec.options.thresholds
    if bundle_index is not None:
        parse_thresholds(thresholds, dict(bundle_index), [0.5] * len(bundle_index),
                         field="options.thresholds")  # fmt: skip
    if decision is not None and spec.options.min_precision is not None:
        try:
            decision.level(spec.options.min_precision)
        except InputError as exc:
            raise InputError(str(exc), field="options.min_precision") from None


def load_chunk(spec: JobSpec, storage: Storage, n: int) -> Chunk:
    items = io.read_manifest(storage, io.manifest_uri(spec.output, storage, n))
    return Chunk(n, [ChunkItem(**item) for item in items])


def _summary_uri(spec: JobSpec, storage: Storage, n: int) -> str:
    return io.part_uri(spec.output, storage, n, ".summary.json")


def store_chunk(spec: JobSpec, storage: Storage, n: int, result: ChunkResult) -> None:
    """Write the chunk's rows, errors and (last, the mark of a stored chunk) its summary.
    Each file is written whole, so storing the same chunk again is harmless."""
    out = spec.output
    storage.write_bytes(io.part_uri(out, storage, n, ".csv"), io.csv_bytes(result.rows))
    storage.write_bytes(io.part_uri(out, storage, n, ".errors.csv"), io.csv_bytes(result.errors))
    summary = {"chunk": n, "done": result.done, "failed": result.failed, "classes": result.counts}
    storage.write_bytes(
        _summary_uri(spec, storage, n), json.dumps(summary, sort_keys=True).encode()
    )


def chunk_stored(spec: JobSpec, storage: Storage, n: int) -> bool:
    return storage.exists(_summary_uri(spec, storage, n))
