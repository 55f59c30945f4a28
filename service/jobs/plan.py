"""A bulk job's plan, in flat memory: ten million images plan in the memory of a hundred thousand.
Torch-free.

    p = plan(spec, storage, chunk_size=1000, label_index=bundle.index, model=bundle.sha256)
    read_plan(spec, storage)   # the stored plan of this job, None, or InputError(field="output")

The listing of ``images`` and the rows of the ``labels`` CSV are each sorted by ImageID on the
way in (service.jobs.sorted_runs: sorted runs of at most ``run_items`` records spilled to a
temporary folder, merged on the way out; input already in ImageID order, as Open Images' CSVs and S3
listings are, is read back run after run without a merge), then walked together: one image at a
time, with its files and its rows. An image with exactly one file and only usable rows goes to the
current chunk manifest (``{output}/_work/chunks/NNNNNN.jsonl``, images in ImageID order, so the
same inputs always give the same chunks); any other is a line of ``plan-errors.csv``, written to
the temporary folder as it goes and stored once the manifests are. At most ``IN_FLIGHT``
manifests wait to be written at once; plan.json comes last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote  # type: ignore[attr-defined]
from typing import IO, TYPE_CHECKING, Any

from ...model.labels import InputError
from ...storage import Storage
from . import files as io
from .sorted_runs import SortedRuns

if TYPE_CHECKING:
    from .spec import JobSpec

PLAN_VERSION = 2  # 2: the decision's options (thresholds, min_precision) key the plan
RUN_ITEMS = 50_000  # listing entries, or groups of CSV rows, held before a run is spilled
IN_FLIGHT = 8  # chunk manifests being written at once (remote stores: a request each)
ERRORS_BLOCK = 1000  # plan-errors.csv rows written at a time
COPY_BLOCK = 1 << 20
MAX_REASONS = 20  # problems named in an image's line of plan-errors.csv (then "and N more")
MAX_REASON_CHARS = 8192
REMEMBERED = 100_000  # label ids and Confidences kept as JSON text (most CSVs use few)


@dataclass(frozen=True)
class Plan:
    chunks: int
    total: int  # images in the chunks
    errors: int = 0  # ImageIDs refused while planning (listed in errors.csv)
    chunk_size: int = 0


def plan(
    spec: JobSpec,
    storage: Storage,
    *,
    chunk_size: int,
    label_index: Mapping[str, int] | None = None,
    model: str | None = None,
    run_items: int = RUN_ITEMS,
    scratch: str | None = None,
) -> Plan:
    """List the images, group the labels CSV by image, write the chunk manifests, the planning
    errors and (last) plan.json. ``spec.options.chunk_size`` wins over ``chunk_size``. With
    ``label_index``, images with unknown label ids are refused here (else when cleaned).
    ``model`` (the bundle's sha256) is recorded, so that resuming with another model is refused.
    Idempotent: a plan already stored for this spec is returned as it is (so the chunks stored
    under it stay valid); planning the same inputs again writes the same files. Memory holds at
    most ``run_items`` listing entries and CSV row groups (plus a block of each spilled run);
    the runs go to a temporary folder under ``scratch`` (default: the system's), removed after."""
    stored = read_plan(spec, storage, model=model)
    if stored is not None:
        return stored
    size = spec.options.chunk_size or chunk_size
    with tempfile.TemporaryDirectory(prefix="labelclean-plan-", dir=scratch) as folder:
        files = SortedRuns(folder, "images", limit=run_items)
        for name, uri in storage.list(spec.images):
            image = io.image_id(name)
            if image is not None:
                files.add(io.listed(image, name, uri))
        rows = SortedRuns(folder, "labels", limit=run_items)
        rows.extend(io.label_groups(storage, spec.labels))
        writer = _Writer(spec, storage, size)
        errors_path = os.path.join(folder, "plan-errors.csv")
        try:
            with open(errors_path, "wb") as errors_file:
                errors = _Errors(errors_file)
                for image, names, entries in _by_image(files.sorted(), rows.sorted()):
                    why = _problems(image, names, entries, label_index, spec.images)
                    if why:
                        errors.add(image, why)
                    elif names:
                        writer.add(image, names[0][2], entries)
                errors.close()
            writer.close()
        finally:
            writer.pool.shutdown(wait=True, cancel_futures=True)
        with (
            open(errors_path, "rb") as fh,
            storage.open(io.plan_errors_uri(spec.output, storage), "wb") as out,
        ):
            shutil.copyfileobj(fh, out, COPY_BLOCK)
    result = Plan(chunks=writer.chunks, total=writer.total, errors=errors.count, chunk_size=size)
    meta = {**_plan_key(spec), "model": model, **vars(result)}
    storage.write_bytes(io.plan_uri(spec.output, storage), json.dumps(meta, indent=1).encode())
    return result


Named = tuple[str, str, str]  # (ImageID, file name, URI)
Group = tuple[str, int, list[io.Entry]]  # (ImageID, first line, rows)


def _by_image(
    files: Iterator[Named], groups: Iterator[Group]
) -> Iterator[tuple[str, list[Named], list[io.Entry]]]:
    """Both streams (sorted by ImageID) walked together: each ImageID with its files and rows
    (in line order). Rows without an ImageID (``""``) come first, one at a time."""
    named, group = next(files, None), next(groups, None)
    while named is not None or group is not None:
        if group is not None and (named is None or group[0] <= named[0]):
            image, entries = group[0], group[2]
            group = next(groups, None)
            if image == "":  # a row with no ImageID to file it under: an error of its own
                yield image, [], entries
                continue
            if group is not None and group[0] == image:  # rows further down the CSV
                entries = list(entries)
                while group is not None and group[0] == image:
                    entries.extend(group[2])
                    group = next(groups, None)
        else:
            image, entries = named[0], []  # type: ignore[index]
        names = []
        while named is not None and named[0] == image:
            names.append(named)
            named = next(files, None)
        yield image, names, entries


def _problems(
    image: str, names: list[Named], entries: list[io.Entry],
    label_index: Mapping[str, int] | None, images: str,
) -> str:  # fmt: skip
    """Why the image cannot be cleaned ("; "-joined), or "" when it can."""
    if len(names) == 1 and names[0][2]:  # the usual image: one file, rows usable, labels once
        seen = {entry[1] for entry in entries}
        if (
            len(seen) == len(entries)
            and (label_index is None or label_index.keys() >= seen)
            and None not in [entry[2] for entry in entries]
        ):
            return ""
    why: list[str] = []
    seen = set()
    for line, label, _, problem in entries:
        if problem:
            why.append(problem)
        elif label in seen:
            why.append(f"labels CSV line {line}: its LabelName is listed twice for this image")
        elif label_index is not None and label not in label_index:
            why.append(f"labels CSV line {line}: unknown LabelName (not a label id of the model)")
        else:
            seen.add(label)
    if image != "":
        if not names:
            why.insert(0, f"no image file under {images}")
        elif not all(n[2] for n in names):  # io.listed: a file name that is not UTF-8
            shown = ", ".join(sorted(n[1] for n in names))
            why.insert(0, f"file name is not UTF-8 text (shown with \\x escapes): {shown}")
        elif len(names) > 1:
            why.append(f"several image files: {', '.join(sorted(n[1] for n in names))}")
    if len(why) > MAX_REASONS:  # a reason is one CSV field: csv reads at most 128 KiB of one
        why[MAX_REASONS:] = [f"and {len(why) - MAX_REASONS} more problems"]
    return "; ".join(why)[:MAX_REASON_CHARS]


class _Errors:
    """plan-errors.csv (``ImageID,Reason``), written a block at a time."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.rows: list[tuple[str, str]] = []
        self.count = 0

    def add(self, image: str, why: str) -> None:
        self.rows.append((image, why))
        self.count += 1
        if len(self.rows) >= ERRORS_BLOCK:
            self.close()

    def close(self) -> None:
        self.fh.write(io.csv_bytes(self.rows))
        self.rows = []


class _Json(dict[Any, str]):
    """Values as JSON text, each encoded once (the first ``REMEMBERED`` short ones)."""

    def __init__(self, encode: Callable[[Any], str]) -> None:
        super().__init__()
        self.encode = encode

    def __missing__(self, value: Any) -> str:
        text = self.encode(value)
        if len(self) < REMEMBERED and len(text) < 256:
            self[value] = text
        return text


class _Writer:
    """The chunk manifests: one JSON line per image (``{"id", "labels", "uri"}``, keys sorted,
    labels sorted by id, Confidence 0 left out), ``size`` images a manifest, at most
    ``IN_FLIGHT`` being written at once."""

    def __init__(self, spec: JobSpec, storage: Storage, size: int) -> None:
        self.spec = spec
        self.storage = storage
        self.size = size
        self.lines: list[str] = []
        self.chunks = 0
        self.total = 0
        self.pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="plan-write")
        self.pending: deque[Future[None]] = deque()
        self.quoted = _Json(_quote)  # label id -> as JSON
        self.numbers = _Json(repr)  # Confidence -> as JSON (json.dumps writes a float's repr)

    def add(self, image: str, uri: str, entries: list[io.Entry]) -> None:
        given = sorted([(label, value) for _, label, value, _ in entries if value])
        numbers, quoted = self.numbers, self.quoted
        labels = ", ".join(
            [f'{{"confidence": {numbers[v]}, "label": {quoted[k]}}}' for k, v in given]
        )
        line = f'{{"id": {_quote(image)}, "labels": [{labels}], "uri": {_quote(uri)}}}\n'
        self.lines.append(line)
        self.total += 1
        if len(self.lines) >= self.size:
            self._flush()

    def _flush(self) -> None:
        if not self.lines:
            return
        while len(self.pending) >= IN_FLIGHT:
            self.pending.popleft().result()  # a failed write raises here
        uri = io.manifest_uri(self.spec.output, self.storage, self.chunks)
        data = "".join(self.lines).encode()
        self.pending.append(self.pool.submit(self.storage.write_bytes, uri, data))
        self.lines = []
        self.chunks += 1

    def close(self) -> None:
        """Write the last manifest and wait for every write (a failed one raises here)."""
        self._flush()
        while self.pending:
            self.pending.popleft().result()


def _plan_key(spec: JobSpec) -> dict[str, Any]:
    thresholds = json.dumps(spec.options.thresholds, sort_keys=True)
    return {"version": PLAN_VERSION, "images": spec.images, "labels": spec.labels,
            "thresholds": thresholds, "min_precision": spec.options.min_precision}  # fmt: skip


def read_plan(spec: JobSpec, storage: Storage, *, model: str | None = None) -> Plan | None:
    """The plan stored under ``spec.output``, or None when there is none. A plan of another job
    there (other images, labels, thresholds, chunk size or, when both are known, ``model``)
    raises InputError(field="output"): its stored chunks must not be mixed into this job's."""
    uri = io.plan_uri(spec.output, storage)
    if not storage.exists(uri):
        return None
    try:
        meta = json.loads(storage.read_bytes(uri))
    except ValueError:
        meta = None
    size = spec.options.chunk_size
    stored_model = meta.get("model") if isinstance(meta, dict) else None
    if (
        not isinstance(meta, dict)
        or {k: meta.get(k) for k in _plan_key(spec)} != _plan_key(spec)
        or (size and size != meta.get("chunk_size"))
        or (model and stored_model and model != stored_model)
    ):
        raise InputError(
            f"{spec.output} already holds another job's work (its _work/plan.json is not this "
            "job's plan: other images, labels, thresholds, chunk size or model): use another "
            "output, or remove it",
            field="output",
        )
    return Plan(meta["chunks"], meta["total"], meta["errors"], meta["chunk_size"])
