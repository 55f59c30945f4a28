"""Files of a bulk job: reading the labels CSV, where each file lives, CSV rows as bytes.

    {output}/cleaned.csv, errors.csv, summary.json      the results
    {output}/_work/plan.json, plan-errors.csv            the plan (plan.json is written last)
    {output}/_work/chunks/000000.jsonl                   one line per image: id, uri, labels
    {output}/_work/parts/000000.csv, .errors.csv, .summary.json   a chunk's results (summary last)

Torch-free.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..model.labels import InputError
from ..storage import Storage, StorageError

LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")  # Source is read but not needed
# Confidence: the probability that the label is on the image, which the verdict follows (1 -
# IssueScore for a given label, IssueScore for an added one; the cleaned score for a bundle of the
# paper's rule); Verdict: kept, removed or added (model.decision); IssueScore: P(wrong) for a given
# label, P(missing) for an added one; Cleaned: the paper's cleaned score c; Reason: why the class
# hierarchy (not the threshold) decided the verdict, if it did.
RESULT_HEADER = (
    "ImageID", "Source", "LabelName", "Confidence", "Verdict", "IssueScore", "Cleaned", "Reason",
)  # fmt: skip
ERROR_HEADER = ("ImageID", "Reason")
SOURCE = "labelclean"
IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm"}
)


def work(output: str, storage: Storage, *names: str) -> str:
    return storage.join(output, "_work", *names)


def plan_uri(output: str, storage: Storage) -> str:
    return work(output, storage, "plan.json")


def plan_errors_uri(output: str, storage: Storage) -> str:
    return work(output, storage, "plan-errors.csv")


def manifest_uri(output: str, storage: Storage, n: int) -> str:
    return work(output, storage, "chunks", f"{n:06d}.jsonl")


def part_uri(output: str, storage: Storage, n: int, suffix: str) -> str:
    """``suffix``: ``.csv`` (rows), ``.errors.csv`` or ``.summary.json``."""
    return work(output, storage, "parts", f"{n:06d}{suffix}")


def image_id(name: str) -> str | None:
    """``<ImageID>.<image extension>`` -> ImageID; None for other files."""
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and ext.lower() in IMAGE_EXTENSIONS else None


@dataclass(frozen=True)
class LabelRow:
    line: int
    image_id: str
    label: str
    confidence: float | None  # None: ``problem`` says why the row cannot be used
    problem: str | None = None


def read_label_rows(storage: Storage, uri: str, *, limit: int | None = None) -> Iterator[LabelRow]:
    """Stream the rows of an ``ImageID,Source,LabelName,Confidence`` CSV (``limit``: at most so
    many). A missing file or a bad header raises InputError(field="labels"); a bad row comes back
    with its ``problem`` (naming the line) so the caller can decide. Messages name the URI as
    given, the line and the kind of problem, never what the file holds: a caller may name a
    file that is not theirs, or not a CSV."""
    line = 0
    try:
        with storage.open_text(uri) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{uri}: empty file (expected a header row)", field="labels")
            header = [h.strip() for h in header]
            missing = [c for c in LABEL_COLUMNS if c not in header]
            if missing:
                raise InputError(
                    f"{uri}: line 1: expected the header ImageID,Source,LabelName,Confidence "
                    f"(lacks {', '.join(missing)})",
                    field="labels",
                )
            at = [header.index(c) for c in LABEL_COLUMNS]
            line = reader.line_num
            for count, row in enumerate(reader):
                line = reader.line_num
                if limit is not None and count >= limit:
                    return
                if not row:
                    continue
                yield _label_row(line, row, len(header), at)
    except StorageError as exc:  # names the URI as given and the kind
        raise InputError(str(exc), field="labels") from exc
    except UnicodeDecodeError as exc:  # decoded ahead of the rows: no line to name
        raise InputError(f"{uri}: not UTF-8 text", field="labels") from exc
    except csv.Error as exc:  # a NUL byte, a field over csv's size limit, a stray quote
        raise InputError(f"{uri}: line {line + 1}: malformed CSV", field="labels") from exc


def _label_row(line: int, row: list[str], width: int, at: list[int]) -> LabelRow:
    """One row, or its problem by kind. A row of the wrong width has no ImageID the job could
    trust (its first field may be anything): it comes back with an empty one."""
    where = f"labels CSV line {line}"
    if len(row) != width:
        return LabelRow(line, "", "", None, f"{where}: {len(row)} fields, expected {width}")
    image, label, value = (row[i].strip() for i in at)
    if not image or not label:
        return LabelRow(line, image, label, None, f"{where}: empty ImageID or LabelName")
    try:
        confidence = float(value)
    except ValueError:
        confidence = math.nan
    if not 0.0 <= confidence <= 1.0:  # NaN fails too
        return LabelRow(line, image, label, None, f"{where}: Confidence is not a number in [0, 1]")
    return LabelRow(line, image, label, confidence)


def csv_bytes(rows: Iterable[Iterable[object]], header: Iterable[str] | None = None) -> bytes:
    """Rows as UTF-8 CSV, one ``\\n``-ended line each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def read_csv_rows(storage: Storage, uri: str) -> list[list[str]]:
    """A small CSV written by the job itself (errors of a chunk or of the plan)."""
    text = storage.read_bytes(uri).decode()
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]


def read_manifest(storage: Storage, uri: str) -> list[dict]:
    """A chunk manifest: one ``{"id", "uri", "labels"}`` per image."""
    return [json.loads(line) for line in storage.read_bytes(uri).decode().splitlines() if line]
