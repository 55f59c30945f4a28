"""The ranked review queue: every (image, label) pair of a data split's machine-labelled images,
most likely wrong or missing first, with the decision POST /clean makes for it. What
``labelclean review`` runs.

    inputs = read_inputs(bundle, Path("DATA"), split="train")
    queue = clean_split(bundle, inputs, predict=OnnxModel(bundle).run, read=storage.read_bytes)
    rows, cols = rank_pairs(queue, min_issue=0.01)     # the queue's order
    write_review_csv(queue, rows, cols, OUT / "review.csv")

Each image is cleaned with ``model.cleaning.clean_decodable`` (``clean_images``, the code
behind POST /clean), batch by batch; an image that cannot be read or decoded is listed in
errors.csv, never fatal. The queue holds one answer per pair, the decision /clean returns:
``kept`` / ``removed`` for a listed label, ``added`` / ``none`` for an unlisted one (the bundle's
rule and thresholds, then the class hierarchy). A pair's issue score is the model's probability
that a listed label is wrong or that an unlisted one is missing: it ranks the pairs, highest
first, equal scores by ImageID, then label id, so the order is deterministic. ``review --order
suggest`` regroups them image by image in the order ``suggest-verify`` chooses images to verify
(``verify_rank``, ``group_by_image``).

Torch-free.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...model.bundle import Bundle, LabelClass
from ...model.cleaning import Arrays, clean_decodable, issue_scores, round_scores
from ...model.openimages import DataError, read_annotations, read_classes  # torch-free
from ...model.review_score import p_right
from ...storage import Storage, StorageError
from ..jobs.files import ERROR_HEADER, image_id
from .suggest import order_all  # torch-free

Split = Literal["train", "test"]
READ_THREADS = 16  # image reads wait on storage (S3 round trips), not on the CPU
VERDICTS = ("none", "kept", "removed", "added")
"""The decision codes in Queue.verdicts: /clean's verdicts, and ``none`` (0) for an unlisted label
that was not added (which /clean does not show)."""
KEPT, REMOVED, ADDED = (VERDICTS.index(v) for v in ("kept", "removed", "added"))
NO_CHANGE = "no change"  # Queue.change_text of an image whose labels the decision keeps as they are
REVIEW_HEADER = (
    "Rank", "ImageID", "LabelName", "DisplayName", "Listed", "Confidence", "IssueScore",
    "Verdict", "Reason",
)  # fmt: skip
"""Listed: yes when the machine listed the label (Confidence > 0); Confidence: the machine's;
IssueScore: P(wrong) for a listed label, P(missing) for an unlisted one; Verdict: the decision,
as /clean returns it (kept or removed when listed, added when not; none for an unlisted label
that was not added); Reason: /clean's, why the class hierarchy, not the threshold, decided it."""


class ReviewError(ValueError):
    """An input the user can fix; the message starts with the flag that names it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


@dataclass
class ReviewInput:
    """A split's machine-labelled images, read from a data folder in Open Images layout."""

    image_ids: list[str]  # every ImageID of the machine labels CSV, sorted
    noisy: np.ndarray  # (N, d) float32 machine confidences in the bundle's class order
    images: dict[str, str]  # ImageID -> URI of its image file (only those found)
    images_uri: str  # the image folder or prefix


def read_inputs(
    bundle: Bundle,
    data: Path,
    *,
    split: Split = "train",
    classes_file: str = "class-descriptions.csv",
    machine_file: str | None = None,
    images: str = "images",
    ignore_unknown: bool = False,
    storage: Storage | None = None,
) -> ReviewInput:
    """Read ``data``'s machine labels of ``split`` (``machine_file``, by default
    ``{split}-annotations-machine-imagelabels.csv``) and list its image folder (``images``: a
    folder under ``data`` or a URI such as ``s3://bucket/prefix``). The class file, when
    present, must hold the bundle's classes (in any order). Raises ReviewError naming the flag:
    ``--data`` for the folder's own files, ``--machine``, ``--classes-file``, ``--images``."""
    storage = storage or Storage.local()
    if not data.is_dir():
        raise ReviewError("--data", f"{data}: folder not found")
    classes_path = data / classes_file
    if classes_path.exists():
        try:
            _same_classes(read_classes(classes_path), bundle.classes, classes_path)
        except DataError as exc:
            flag = "--data" if classes_file == "class-descriptions.csv" else "--classes-file"
            raise ReviewError(flag, str(exc)) from None
    name = machine_file or f"{split}-annotations-machine-imagelabels.csv"
    try:
        machine = read_annotations(data / name, bundle.index, ignore_unknown=ignore_unknown)
    except DataError as exc:
        raise ReviewError("--machine" if machine_file else "--data", str(exc)) from None
    order = np.argsort(np.asarray(machine.image_ids, dtype=object), kind="stable")
    image_ids = [machine.image_ids[i] for i in order]
    images_uri = images if "://" in images else str(data / images)
    found: dict[str, str] = {}
    try:
        for file_name, uri in storage.list(images_uri):
            key = image_id(file_name)
            if key is not None:
                found.setdefault(key, uri)
    except StorageError as exc:
        reason = "folder not found" if exc.missing else str(exc)
        raise ReviewError("--images", f"{images_uri}: {reason}") from None
    wanted = set(image_ids)
    return ReviewInput(
        image_ids, machine.values[order], {k: v for k, v in found.items() if k in wanted},
        images_uri,
    )  # fmt: skip


def _same_classes(data: list[LabelClass], model: list[LabelClass], path: Path) -> None:
    ours, theirs = {c.id for c in data}, {c.id for c in model}
    if ours == theirs:
        return
    extra, missing = sorted(ours - theirs), sorted(theirs - ours)
    parts = [f"{len(extra)} not in the bundle ({', '.join(extra[:5])})"] if extra else []
    if missing:
        parts.append(f"{len(missing)} of the bundle's missing ({', '.join(missing[:5])})")
    raise DataError(f"{path}: classes differ from the bundle's classes.csv: {'; '.join(parts)}")


@dataclass
class Queue:
    """Every cleaned image's pairs: dense (N, d) arrays in ``image_ids`` x ``classes`` order."""

    classes: list[LabelClass]
    image_ids: list[str]  # sorted; rows of the arrays
    done: np.ndarray  # (N,) bool: cleaned (the others are in ``errors``)
    noisy: np.ndarray  # (N, d) float32: the machine's confidence, 0 = not listed
    issue: np.ndarray  # (N, d) float32: the issue score of every pair
    verdicts: np.ndarray  # (N, d) int8: index into VERDICTS, the decision
    reasons: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, col) -> reason
    errors: list[tuple[str, str]] = field(default_factory=list)  # (ImageID, reason)

    def listed(self, row: int) -> list[int]:
        """The columns of the labels the machine listed for image ``row``."""
        return np.flatnonzero(self.noisy[row] > 0).tolist()

    def cleaned_labels(self, row: int) -> list[int]:
        """Image ``row``'s final label set, /clean's ``cleaned_labels``: the columns whose
        verdict is kept or added, in class order (consistent with the class hierarchy)."""
        return np.flatnonzero(np.isin(self.verdicts[row], (KEPT, ADDED))).tolist()

    def changes(self, row: int) -> tuple[list[int], list[int]]:
        """The decision's change to image ``row``'s labels: (removed columns, added columns),
        each in class order."""
        codes = self.verdicts[row]
        return np.flatnonzero(codes == REMOVED).tolist(), np.flatnonzero(codes == ADDED).tolist()

    def change_text(self, row: int, names: Sequence[str]) -> str:
        """Image ``row``'s change as a reviewer reads it, "remove X; add Y" (``names``: a name
        per class column), or NO_CHANGE."""
        removed, added = self.changes(row)
        steps = [f"remove {names[k]}" for k in removed] + [f"add {names[k]}" for k in added]
        return "; ".join(steps) or NO_CHANGE

    def p_right(self, row: int) -> np.ndarray:
        """(d,) float64: the model's probability that each class's decision for image ``row`` is
        right: the issue score for a removed label (P(wrong)) or an added one (P(missing)),
        1 - the issue score for a kept label or an unlisted one left out."""
        return p_right(self.issue[row], np.isin(self.verdicts[row], (REMOVED, ADDED)))


def clean_split(
    bundle: Bundle,
    inputs: ReviewInput,
    *,
    predict: Callable[[np.ndarray, np.ndarray], Arrays],
    read: Callable[[str], bytes],
    batch_size: int = 32,
    progress: bool = True,
    threads: int = READ_THREADS,
) -> Queue:
    """Clean every image of ``inputs`` with ``clean_decodable``, ``batch_size`` at a time,
    reading the next batch (``read(uri)``, in ``threads`` threads) while one is cleaned."""
    from tqdm import tqdm

    ids = inputs.image_ids
    n, d = len(ids), bundle.num_classes
    queue = Queue(
        bundle.classes, ids, np.zeros(n, bool), np.zeros((n, d), np.float32),
        np.zeros((n, d), np.float32), np.zeros((n, d), np.int8),
    )  # fmt: skip
    failed: dict[int, str] = {}
    todo = []
    for row, image in enumerate(ids):
        if image in inputs.images:
            todo.append(row)
        else:
            failed[row] = f"no image file under {inputs.images_uri}"
    size = max(1, batch_size)
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    bar = tqdm(total=n, initial=n - len(todo), unit="img", desc="cleaning", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    with bar, ThreadPoolExecutor(max(1, threads), thread_name_prefix="read") as pool:

        def fetch(batch: list[int]) -> list[Future[bytes]]:
            return [pool.submit(read, inputs.images[ids[row]]) for row in batch]

        pending = fetch(batches[0]) if batches else []
        for k, batch in enumerate(batches):
            reads, pending = pending, fetch(batches[k + 1]) if k + 1 < len(batches) else []
            good: list[tuple[int, bytes]] = []
            for row, future in zip(batch, reads, strict=True):
                try:
                    good.append((row, future.result()))
                except Exception as exc:  # noqa: BLE001 - listed, the others go on
                    failed[row] = f"unreadable: {exc}"
            _clean_batch(bundle, inputs, good, predict, queue, failed)
            bar.update(len(batch))
    queue.errors = [(ids[row], reason) for row, reason in sorted(failed.items())]
    return queue


def _clean_batch(
    bundle: Bundle, inputs: ReviewInput, good: list[tuple[int, bytes]],
    predict: Callable[[np.ndarray, np.ndarray], Arrays], queue: Queue, failed: dict[int, str],
) -> None:  # fmt: skip
    """Clean one batch; an image that fails to decode is listed and the rest cleaned again."""
    index = bundle.index
    labels = [
        [{"label": bundle.classes[k].id, "confidence": float(inputs.noisy[row, k])}
         for k in np.flatnonzero(inputs.noisy[row] > 0).tolist()]
        for row, _ in good
    ]  # fmt: skip
    results, bad = asyncio.run(
        clean_decodable(bundle, [data for _, data in good], labels, predict=predict)
    )
    failed.update({good[k][0]: reason for k, reason in bad.items()})
    for k, result in results.items():
        row = good[k][0]
        assert result.issue is not None and result.noisy is not None
        queue.done[row] = True
        queue.issue[row] = result.issue
        queue.noisy[row] = result.noisy
        for v in result.labels:
            col = index[v.id]
            queue.verdicts[row, col] = VERDICTS.index(v.verdict)
            if v.reason:
                queue.reasons[(row, col)] = v.reason


def rank_pairs(queue: Queue, *, min_issue: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every cleaned image's pair with an issue score >= ``min_issue`` or a
    verdict that changes the labels (removed, added: a label the hierarchy adds may score
    below it), highest score first; equal scores by ImageID, then label id."""
    changed = np.isin(queue.verdicts, (REMOVED, ADDED))
    rows, cols = np.nonzero(queue.done[:, None] & ((queue.issue >= min_issue) | changed))
    label_rank = np.argsort(np.argsort(np.asarray([c.id for c in queue.classes], dtype=object)))
    scores = queue.issue[rows, cols].astype(np.float64)
    order = np.lexsort((label_rank[cols], rows, -scores))  # image_ids are sorted: row = rank
    return rows[order], cols[order]


def verify_rank(queue: Queue) -> np.ndarray:
    """(N,) int: each image's place in the order ``labelclean suggest-verify`` would choose them
    for verification (0 first; ``service.review.suggest``); images not cleaned come last."""
    changed = np.isin(queue.verdicts, (REMOVED, ADDED))
    order = order_all(queue.issue, changed, listed=queue.noisy > 0, image_ids=queue.image_ids,
                      eligible=queue.done)  # fmt: skip
    rank = np.full(len(queue.image_ids), len(queue.image_ids), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def group_by_image(
    rows: np.ndarray, cols: np.ndarray, image_rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ranked pairs (``rows``, ``cols`` from ``rank_pairs``) regrouped image by image, the
    image of lowest ``image_rank`` ((N,) int, by row) first; each image's pairs keep their
    order. ``review --order suggest`` passes ``verify_rank``."""
    keep = np.argsort(image_rank[rows], kind="stable")
    return rows[keep], cols[keep]


@dataclass(frozen=True)
class Pair:
    """One row of the queue (review.csv's columns)."""

    rank: int  # 1 = the most likely wrong or missing
    image: str
    label: str
    name: str
    listed: bool
    confidence: float  # the machine's, 0 when not listed
    issue: float  # nine significant digits, as /clean returns it
    verdict: str  # the decision: kept, removed (listed), added, none (unlisted)
    reason: str  # the hierarchy's reason for that verdict, if it decided it
    row: int
    col: int

    @property
    def kind(self) -> str:
        return "suspected wrong" if self.listed else "suspected missing"


def pairs(
    queue: Queue, rows: np.ndarray, cols: np.ndarray, *, first_rank: int = 1
) -> Iterator[Pair]:
    """The ranked pairs as ``Pair`` rows (``rows``, ``cols`` from ``rank_pairs``)."""
    confidences = round_scores(queue.noisy[rows, cols])
    issues = issue_scores(queue.issue[rows, cols])
    codes = queue.verdicts[rows, cols].tolist()
    for i, (row, col) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        listed = bool(queue.noisy[row, col] > 0)
        label = queue.classes[col]
        yield Pair(
            first_rank + i, queue.image_ids[row], label.id, label.name, listed, confidences[i],
            issues[i], VERDICTS[codes[i]], queue.reasons.get((row, col), ""), row, col,
        )  # fmt: skip


def write_review_csv(queue: Queue, rows: np.ndarray, cols: np.ndarray, path: Path) -> int:
    """Write review.csv (REVIEW_HEADER) in the queue's order; returns the number of rows."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REVIEW_HEADER)
        for p in pairs(queue, rows, cols):
            writer.writerow([
                p.rank, p.image, p.label, p.name, "yes" if p.listed else "no", p.confidence,
                p.issue, p.verdict, p.reason,
            ])  # fmt: skip
            count += 1
    return count


def write_errors_csv(errors: Sequence[tuple[str, str]], path: Path) -> None:
    """errors.csv: ImageID,Reason of the images that could not be cleaned (header only if none)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(ERROR_HEADER)
        writer.writerows(errors)


def summary(queue: Queue, rows: np.ndarray, cols: np.ndarray) -> dict[str, Any]:
    """Counts for the command's closing line, over the ranked pairs (``rank_pairs``, which holds
    every change): ``suspected_wrong`` is the number of labels the decision removes,
    ``suspected_missing`` the number it adds (review.csv's removed and added rows)."""
    verdicts = queue.verdicts[rows, cols]
    return {
        "images": len(queue.image_ids),
        "cleaned": int(queue.done.sum()),
        "failed": len(queue.errors),
        "pairs": len(rows),
        "suspected_wrong": int((verdicts == REMOVED).sum()),
        "suspected_missing": int((verdicts == ADDED).sum()),
    }
