"""The end of a bulk job: every stored chunk joined into {output}/cleaned.csv, errors.csv and
summary.json, and the cleaned CSV streamed back. Torch-free.

cleaned.csv and errors.csv are copied part by part (never held in memory) and appear whole or
not at all; summary.json is written last. Finalizing twice writes the same files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from io import TextIOWrapper
from typing import TYPE_CHECKING, Any

from ...storage import Storage, StorageError
from . import files as io

if TYPE_CHECKING:
    from .spec import JobSpec

VERDICTS = ("kept", "removed", "added")
RESULTS_BLOCK = 1 << 20


def _share(removed: int, given: int) -> float | None:
    return round(removed / given, 6) if given else None


def _class_summary(counts: Mapping[str, Any]) -> dict[str, Any]:
    given = counts["kept"] + counts["removed"]
    return {
        "name": counts.get("name", ""),
        "input": given,
        **{v: counts[v] for v in VERDICTS},
        "removed_share": _share(counts["removed"], given),
    }


def finalize(
    spec: JobSpec, storage: Storage, chunks: int, *, dead: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """Write cleaned.csv (header + every stored chunk's rows, in chunk order), errors.csv
    (``ImageID,Reason``: planning errors, each chunk's failed images, and every image of a
    dead-lettered chunk with its error) and summary.json; return the summary.

    Per class: ``input`` labels given, ``kept``, ``removed``, ``added`` and ``removed_share`` (of
    the input labels). A chunk neither stored nor in ``dead`` raises RuntimeError."""
    out = spec.output
    dead = dict(dead or {})
    classes: dict[str, dict[str, Any]] = {}
    done = failed = 0
    dead_chunks = []
    cleaned_uri, errors_uri = storage.join(out, "cleaned.csv"), storage.join(out, "errors.csv")
    with storage.open(cleaned_uri, "wb") as cleaned, storage.open(errors_uri, "wb") as errors:
        cleaned.write(io.csv_bytes([], io.RESULT_HEADER))
        errors.write(io.csv_bytes([], io.ERROR_HEADER))
        plan_errors = io.plan_errors_uri(out, storage)
        if storage.exists(plan_errors):
            failed += _count_rows(storage, plan_errors)
            storage.copy_to(plan_errors, errors)
        for n in range(chunks):
            summary_uri = io.part_uri(out, storage, n, ".summary.json")
            if storage.exists(summary_uri):
                part = json.loads(storage.read_bytes(summary_uri))
                done += part["done"]
                failed += part["failed"]
                for label, counts in part["classes"].items():
                    total = classes.setdefault(label, {"name": counts.get("name", "")} | {
                        v: 0 for v in VERDICTS})  # fmt: skip
                    for v in VERDICTS:
                        total[v] += counts[v]
                storage.copy_to(io.part_uri(out, storage, n, ".csv"), cleaned)
                storage.copy_to(io.part_uri(out, storage, n, ".errors.csv"), errors)
            elif n in dead:
                dead_chunks.append(n)
                items = io.read_manifest(storage, io.manifest_uri(out, storage, n))
                reason = f"chunk {n} failed and was given up: {dead[n]}"
                errors.write(io.csv_bytes((item["id"], reason) for item in items))
                failed += len(items)
            else:
                raise RuntimeError(
                    f"{out}: chunk {n} has no stored results and is not dead-lettered: "
                    "finalize once every chunk is stored or given up"
                )
    given = {v: sum(c[v] for c in classes.values()) for v in VERDICTS}
    summary = {
        "images": done + failed,
        "cleaned": done,
        "failed": failed,
        "chunks": chunks,
        "dead_chunks": dead_chunks,
        "labels": {
            "input": given["kept"] + given["removed"],
            **given,
            "removed_share": _share(given["removed"], given["kept"] + given["removed"]),
        },
        "classes": {label: _class_summary(classes[label]) for label in sorted(classes)},
        "files": {"cleaned": cleaned_uri, "errors": errors_uri},
    }
    data = json.dumps(summary, indent=2).encode() + b"\n"
    storage.write_bytes(storage.join(out, "summary.json"), data)
    return summary


def _count_rows(storage: Storage, uri: str) -> int:
    """The rows of a CSV the job wrote (records, not lines: a quoted field may hold a newline),
    read a block at a time."""
    with storage.open(uri, "rb") as raw:
        text = TextIOWrapper(raw, encoding="utf-8", newline="")
        try:
            return sum(1 for row in csv.reader(text) if row)
        finally:
            text.detach()


def open_results(spec: JobSpec, storage: Storage) -> Iterator[bytes]:
    """cleaned.csv as blocks of bytes (``GET /jobs/{id}/results``). Raises StorageError at once
    (``missing=True``) when the job has not been finalized."""
    uri = storage.join(spec.output, "cleaned.csv")
    if not storage.exists(uri):
        raise StorageError(f"{uri}: no results yet", uri=uri, missing=True)

    def blocks() -> Iterator[bytes]:
        with storage.open(uri, "rb") as fh:
            while block := fh.read(RESULTS_BLOCK):
                yield block

    return blocks()
