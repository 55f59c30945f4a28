"""Files of a bulk job: reading the labels CSV, where each file lives, CSV rows as bytes.

    {output}/cleaned.csv, errors.csv, summary.json      the results
    {output}/_work/plan.json, plan-errors.csv            the plan (plan.json is written last)
    {output}/_work/chunks/000000.jsonl                   one line per image: id, uri, labels
    {output}/_work/parts/000000.csv, .errors.csv, .summary.json   a chunk's results (summary last)

Torch-free.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ...model.labels import InputError
from ...storage import Storage, StorageError

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


def listed(image: str, name: str, uri: str) -> tuple[str, str, str]:
    """(ImageID, file name, URI) of a listed image file; a name that is not UTF-8 (a local file
    name's undecodable bytes, as Python lists them) is shown with \\x escapes and gets no URI:
    the plan refuses that image with a line of errors.csv instead of failing the job."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return _escaped(image), _escaped(name), ""
    return image, name, uri


def _escaped(text: str) -> str:
    """Listed text with undecodable bytes (surrogate escapes) shown as ``\\xNN``."""
    return text.encode(errors="surrogateescape").decode(errors="backslashreplace")


@dataclass(frozen=True)
class LabelRow:
    line: int
    image_id: str
    label: str
    confidence: float | None  # None: ``problem`` says why the row cannot be used
    problem: str | None = None


Entry = tuple[int, str, float, None] | tuple[int, str, None, str]
"""A row of the labels CSV, as the plan keeps it: (line, LabelName, Confidence, None), or
(line, LabelName, None, problem) for a row that cannot be used."""


def read_label_rows(storage: Storage, uri: str, *, limit: int | None = None) -> Iterator[LabelRow]:
    """Stream the rows of an ``ImageID,Source,LabelName,Confidence`` CSV (``limit``: at most so
    many). A missing file or a bad header raises InputError(field="labels"); a bad row comes back
    with its ``problem`` (naming the line) so the caller can decide. Messages name the URI as
    given, the line and the kind of problem, never what the file holds: a caller may name a
    file that is not theirs, or not a CSV."""
    with _label_csv(storage, uri) as (reader, width, at):
        line = reader.line_num
        try:
            for count, row in enumerate(reader):
                line = reader.line_num
                if limit is not None and count >= limit:
                    return
                if row:  # a blank line is skipped
                    yield LabelRow(*_parse(line, row, width, at))
        except csv.Error as exc:  # at the record after the last good one (it may span lines)
            raise _malformed(uri, line + 1) from exc


def label_groups(storage: Storage, uri: str) -> Iterator[tuple[str, int, list[Entry]]]:
    """The labels CSV's rows as the plan reads them, consecutive rows of one ImageID together:
    ``(ImageID, first line, [entry, ...])`` (an image whose rows are not consecutive comes in
    several groups). A row with no ImageID the job can trust is a group of its own under ``""``.
    Errors as ``read_label_rows``. One loop, the plan's hottest: ten million images are some
    sixty million rows."""
    group: str | None = None
    first = 0
    entries: list[Entry] = []
    known: dict[str, float] = {}  # short Confidence texts seen, and their values (in [0, 1])
    names: dict[str, str] = {}  # LabelNames seen: one string each (less memory, cheaper spills)
    with _label_csv(storage, uri) as (reader, width, (i, j, k)):
        line = reader.line_num
        try:
            for row in reader:
                line = reader.line_num
                if len(row) == width:
                    image, label, text = row[i].strip(), row[j].strip(), row[k]
                    label = names.get(label) or _remember(names, label)
                    confidence = known.get(text)
                    if confidence is None:
                        confidence = _confidence(text)
                        if confidence is not None and len(known) < KNOWN and len(text) < 32:
                            known[text] = confidence
                    if image and label and confidence is not None:
                        if image != group:
                            if entries:
                                yield group, first, entries  # type: ignore[misc]
                            group, first, entries = image, line, []
                        entries.append((line, label, confidence, None))
                        continue
                elif not row:
                    continue  # a blank line
                _, image, label, _, problem = _parse(line, row, width, (i, j, k))
                if image != group or not image:
                    if entries:
                        yield group, first, entries  # type: ignore[misc]
                    group, first, entries = image, line, []
                entries.append((line, label, None, problem))  # type: ignore[arg-type]
        except csv.Error as exc:  # at the record after the last good one (it may span lines)
            raise _malformed(uri, line + 1) from exc
    if entries:
        yield group, first, entries  # type: ignore[misc]


def _remember(names: dict[str, str], label: str) -> str:
    if len(names) < KNOWN and len(label) < 256:
        names[label] = label
    return label


@contextlib.contextmanager
def _label_csv(storage: Storage, uri: str) -> Iterator[tuple[Any, int, tuple[int, int, int]]]:
    """The CSV reader past a checked header, its width and where ImageID, LabelName and
    Confidence are; what goes wrong while it is read becomes InputError(field="labels")."""
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
            i, j, k = (header.index(c) for c in LABEL_COLUMNS)
            yield reader, len(header), (i, j, k)
    except StorageError as exc:  # names the URI as given and the kind
        raise InputError(str(exc), field="labels") from exc
    except UnicodeDecodeError as exc:  # decoded ahead of the rows: no line to name
        raise InputError(f"{uri}: not UTF-8 text", field="labels") from exc
    except csv.Error as exc:  # in the header (the rows' own: _malformed, by their readers)
        raise _malformed(uri, 1) from exc


def _malformed(uri: str, line: int) -> InputError:
    """A NUL byte, a field over csv's size limit, a stray quote: at the record from ``line``."""
    return InputError(f"{uri}: line {line}: malformed CSV", field="labels")


def _parse(
    line: int, row: list[str], width: int, at: tuple[int, int, int]
) -> tuple[int, str, str, float | None, str | None]:
    """One row: (line, ImageID, LabelName, Confidence, None), or with Confidence None and its
    problem by kind. A row of the wrong width has no ImageID the job could trust (its first
    field may be anything): it comes back with an empty one."""
    if len(row) != width:
        return line, "", "", None, _at(line, f"{len(row)} fields, expected {width}")
    image, label, value = (row[i].strip() for i in at)
    if not image or not label:
        return line, image, label, None, _at(line, "empty ImageID or LabelName")
    confidence = _confidence(value)
    if confidence is None:
        return line, image, label, None, _at(line, NOT_A_CONFIDENCE)
    return line, image, label, confidence, None


def _confidence(text: str) -> float | None:
    """A Confidence's value, or None when it is not a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None  # NaN fails too


NOT_A_CONFIDENCE = "Confidence is not a number in [0, 1]"
KNOWN = 100_000  # Confidence texts remembered while reading (most CSVs use a few thousand)


def _at(line: int, problem: str) -> str:
    """A row's problem by kind, naming its line: never the row's values."""
    return f"labels CSV line {line}: {problem}"


def csv_bytes(rows: Iterable[Iterable[object]], header: Iterable[str] | None = None) -> bytes:
    """Rows as UTF-8 CSV, one ``\\n``-ended line each. A field holding a carriage return is
    quoted, as one holding a newline is (csv quotes only the line terminator's characters), so
    that it reads back as one field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    rows = list(rows)
    writer.writerows(rows)
    text = buffer.getvalue()
    if "\r" in text:  # rare: write again, quoting every field of the rows that hold one
        buffer = io.StringIO()
        plain = csv.writer(buffer, lineterminator="\n")
        quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
        if header is not None:
            plain.writerow(header)
        for row in rows:
            fields = list(row)
            (quoted if any("\r" in str(f) for f in fields) else plain).writerow(fields)
        text = buffer.getvalue()
    return text.encode()


def read_csv_rows(storage: Storage, uri: str) -> list[list[str]]:
    """A small CSV written by the job itself (errors of a chunk or of the plan)."""
    text = storage.read_bytes(uri).decode()
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]


def read_manifest(storage: Storage, uri: str) -> list[dict]:
    """A chunk manifest: one ``{"id", "uri", "labels"}`` per image."""
    return [json.loads(line) for line in storage.read_bytes(uri).decode().splitlines() if line]
