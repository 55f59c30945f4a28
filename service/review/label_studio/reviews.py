"""Reviews from Label Studio as human-verified labels: rows of an Open Images human-labels CSV.

    review = read_annotation(annotation, task_data, config)   # None: skipped, or no answer
    rows(review.image_id, review.labels, classes)   # [[ImageID, Source, LabelName, Confidence]]

A reviewer answers one image by ticking choices; every choice the reviewer saw is a verified
label: Confidence 1 when ticked, 0 when not (an unticked class is a verified negative, as in
Open Images' human-verified labels). A skipped (cancelled) annotation verifies nothing.

Each task keeps one answer, deduplicated by task and annotation: an edit replaces its
annotation's labels, and when several annotations of a task stand, the latest edited one
(``updated_at``, then the higher annotation id) gives the task's labels; a deleted annotation is
withdrawn and the one before it, if any, stands again. The webhook keeps them in a folder or
bucket (``ReviewStore``, LABELCLEAN_LABEL_STUDIO_REVIEWS):

    tasks/p<project>-t<task>.json        the task's standing annotations
    annotations/p<project>-a<id>.json    which task an annotation belongs to (for deletions,
                                         which name the annotation only)
    labels/p<project>-t<task>.csv        the task's human labels: what training reads

``labelclean import-reviews`` turns a Label Studio JSON export into one CSV by the same rule, or
joins the store's labels/ into one.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ....model.bundle import LabelClass
from ....storage import Storage, StorageError
from ...jobs.files import image_id as file_image_id
from .config import ProjectConfig

SOURCE = "labelstudio"  # the Source column of every row
HEADER = ("ImageID", "Source", "LabelName", "Confidence")
IMAGE_ID_KEY = "image_id"  # the task data key of the ImageID (`labelclean review` writes it)


@dataclass(frozen=True)
class Review:
    """One annotation's answer: the image it verified and each class it saw (column -> 1/0)."""

    project: int
    task: int
    annotation: int
    updated_at: str
    image_id: str
    labels: dict[int, int]

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["labels"] = {str(k): v for k, v in self.labels.items()}
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Review:
        labels = {int(k): int(v) for k, v in body["labels"].items()}
        return cls(**{**body, "labels": labels})


def image_id_of(data: dict[str, Any], image_key: str) -> str:
    """The task's ImageID: its ``image_id`` data, else the file name of its image URL without
    the extension (a local-files URL's ``d`` path, an upload's or a bucket key's name)."""
    given = data.get(IMAGE_ID_KEY)
    if isinstance(given, str | int) and str(given):
        return str(given)
    url = str(data.get(image_key) or "")
    parts = urlsplit(url)
    path = parse_qs(parts.query).get("d", [parts.path])[0] if parts.query else parts.path
    name = posixpath.basename(unquote(path))
    found = file_image_id(name) or name
    if not found:
        raise ValueError(f"task data has no {IMAGE_ID_KEY!r} and no image file name")
    return found


def ticked(result: Iterable[dict[str, Any]], config: ProjectConfig) -> set[str]:
    """The choice values ticked in an annotation's ``result`` for the config's Choices tag."""
    found: set[str] = set()
    for item in result or ():
        if item.get("from_name") == config.from_name and item.get("type") == "choices":
            found.update(str(v) for v in (item.get("value") or {}).get("choices") or ())
    return found


def read_annotation(
    annotation: dict[str, Any], task: dict[str, Any], config: ProjectConfig, project: int
) -> Review | None:
    """An annotation (Label Studio's JSON: id, result, was_cancelled, updated_at) of ``task``
    (id, data) as a Review; None when it was skipped (cancelled). Choices the config lacks are
    ignored (a reviewer only sees the config's)."""
    if annotation.get("was_cancelled"):
        return None
    chosen = ticked(annotation.get("result") or [], config)
    labels = {k: int(v in chosen) for v, k in zip(config.choices, config.classes, strict=True)}
    return Review(
        project=int(project),
        task=int(task["id"]),
        annotation=int(annotation["id"]),
        updated_at=str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        image_id=image_id_of(task.get("data") or {}, config.image_key),
        labels=labels,
    )


def standing(reviews: Iterable[Review]) -> Review | None:
    """Of one task's annotations, the one whose answer stands: the latest edited."""
    return max(reviews, key=lambda r: (r.updated_at, r.annotation), default=None)


def rows(review: Review, classes: Sequence[LabelClass]) -> list[list[str]]:
    """The human-labels rows of a review, in class order."""
    return [
        [review.image_id, SOURCE, classes[k].id, str(v)] for k, v in sorted(review.labels.items())
    ]


def csv_text(lines: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(lines)
    return out.getvalue()


def export_reviews(export: list[dict[str, Any]], config: ProjectConfig) -> list[Review]:
    """A Label Studio JSON export (a list of tasks, each with its ``annotations``) -> the
    review that stands for each task, in task order."""
    found = []
    for task in export:
        project = int(task.get("project") or 0)
        answers = [read_annotation(a, task, config, project) for a in task.get("annotations", [])]
        best = standing(r for r in answers if r is not None)
        if best is not None:
            found.append(best)
    return found


class ReviewStore:
    """The webhook's reviews under ``root`` (a folder or bucket prefix; see the module doc).

    Not safe for two processes writing the same task at once: the service serialises its own
    webhook calls (routes), and Label Studio sends a project's events one after another."""

    def __init__(self, storage: Storage, root: str, classes: Sequence[LabelClass]) -> None:
        self.storage = storage
        self.root = root.rstrip("/")
        self.classes = classes

    def _uri(self, folder: str, name: str) -> str:
        return self.storage.join(self.root, folder, name)

    def _task_uri(self, project: int, task: int) -> str:
        return self._uri("tasks", f"p{project}-t{task}.json")

    def _labels_uri(self, project: int, task: int) -> str:
        return self._uri("labels", f"p{project}-t{task}.csv")

    def _pointer_uri(self, project: int, annotation: int) -> str:
        return self._uri("annotations", f"p{project}-a{annotation}.json")

    def _read_json(self, uri: str) -> Any:
        if not self.storage.exists(uri):
            return None
        return json.loads(self.storage.read_bytes(uri))

    def _write_json(self, uri: str, body: Any) -> None:
        self.storage.write_bytes(uri, json.dumps(body, sort_keys=True).encode())

    def task_reviews(self, project: int, task: int) -> dict[int, Review]:
        body = self._read_json(self._task_uri(project, task)) or {}
        return {int(a): Review.from_json(r) for a, r in body.items()}

    def _save_task(self, project: int, task: int, reviews: dict[int, Review]) -> None:
        """Write the task's annotations and its labels CSV (both removed when none stand)."""
        best = standing(reviews.values())
        if best is None:
            self.storage.delete(self._labels_uri(project, task))
            self.storage.delete(self._task_uri(project, task))
            return
        self._write_json(self._task_uri(project, task),
                         {str(a): r.to_json() for a, r in reviews.items()})  # fmt: skip
        text = csv_text(rows(best, self.classes))
        self.storage.write_bytes(self._labels_uri(project, task), text.encode())

    def save(self, review: Review) -> None:
        """An annotation created or edited: its answer replaces its earlier one."""
        reviews = self.task_reviews(review.project, review.task)
        reviews[review.annotation] = review
        self._write_json(self._pointer_uri(review.project, review.annotation),
                         {"task": review.task})  # fmt: skip
        self._save_task(review.project, review.task, reviews)

    def withdraw(self, project: int, annotation: int, task: int | None = None) -> bool:
        """An annotation deleted or skipped: its answer no longer counts. False when the store
        never had it."""
        pointer = self._pointer_uri(project, annotation)
        if task is None:
            found = self._read_json(pointer)
            if found is None:
                return False
            task = int(found["task"])
        reviews = self.task_reviews(project, task)
        had = reviews.pop(annotation, None) is not None
        self._save_task(project, task, reviews)
        self.storage.delete(pointer)
        return had

    def label_files(self) -> list[str]:
        """The URIs of every task's labels CSV, by name."""
        try:
            found = sorted(self.storage.list(self.storage.join(self.root, "labels")))
        except StorageError as exc:
            if exc.missing:  # no review yet
                return []
            raise
        return [uri for name, uri in found if name.endswith(".csv")]

    def joined(self) -> str:
        """Every task's labels as one human-labels CSV (ordered by file name)."""
        lines: list[list[str]] = []
        for uri in self.label_files():
            reader = csv.reader(io.StringIO(self.storage.read_bytes(uri).decode("utf-8")))
            next(reader, None)
            lines.extend(reader)
        return csv_text(lines)
