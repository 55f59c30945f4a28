"""The review queue for Label Studio: OUT/label-studio-tasks.json (tasks with predictions, in
Label Studio's documented import format) and OUT/label-studio-config.xml (the labeling config
the predictions refer to). Create a project with the config, then import the tasks.

    [{"data": {"image": URL, "image_id": ..., "max_issue": ..., "changes": ...},
      "predictions": [{"model_version": "labelclean-<bundle sha256[:12]>", "score": 1 - max_issue,
                       "result": [{"id": ..., "from_name": "labels", "to_name": "image",
                                   "type": "choices", "value": {"choices": [names]}}]}]}, ...]

One task per image in the queue, the image with the highest issue score first. The predicted
choices are the labels after review: the listed ones not suggested for removal plus those
suggested for addition, by display name. ``score`` is 1 minus the image's highest issue score:
Label Studio sorts by prediction score lowest first, which is the queue's order.

Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from ..model.bundle import LabelClass
from ..storage import split_uri
from .review import Queue

FROM_NAME = "labels"  # the Choices tag's name
TO_NAME = "image"  # the Image tag's name
IMAGE_KEY = "image"  # the task data key of the image URL (value="$image")
LOCAL_FILES = "/data/local-files/?d="


def choice_names(classes: Sequence[LabelClass]) -> list[str]:
    """Each class's choice value: its display name, or "name (id)" when several classes share
    that display name (a choice must name one class)."""
    counts: dict[str, int] = {}
    for c in classes:
        counts[c.name] = counts.get(c.name, 0) + 1
    return [c.name if counts[c.name] == 1 and c.name else f"{c.name} ({c.id})" for c in classes]


def config_xml(classes: Sequence[LabelClass]) -> str:
    """The labeling config: the image, a header with its ImageID, and one multiple-choice
    question over every class (the hint is the label id)."""
    choices = "\n".join(
        f"    <Choice value={quoteattr(name)} hint={quoteattr(c.id)}/>"
        for name, c in zip(choice_names(classes), classes, strict=True)
    )
    return f"""<View>
  <Header value="$image_id"/>
  <Image name="{TO_NAME}" value="${IMAGE_KEY}"/>
  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="multiple" showInline="false">
{choices}
  </Choices>
</View>
"""


def default_image_url(images_uri: str) -> str:
    """The URL prefix images get without ``--image-url``: for a local folder, Label Studio's
    local-files form with the folder's absolute path (``/data/local-files/?d=abs/path/``, which
    assumes LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/); for a bucket, its URI (``s3://...``),
    which Label Studio resolves through a cloud storage connected to the project."""
    protocol, path = split_uri(images_uri)
    if protocol == "file":
        return LOCAL_FILES + quote(str(Path(path).resolve()).lstrip("/").rstrip("/") + "/")
    return images_uri.rstrip("/") + "/"


def image_urls(prefix: str, files: dict[str, str]) -> Callable[[str], str]:
    """ImageID -> ``prefix`` + its file name, URL-quoted unless the prefix is a bucket URI
    (``s3://``, ``gs://``: Label Studio reads those keys as they are)."""
    scheme = prefix.partition("://")[0].lower() if "://" in prefix else ""
    raw = scheme not in ("", "http", "https")

    def url(image: str) -> str:
        name = files[image].rstrip("/").rsplit("/", 1)[-1]
        return prefix + (name if raw else quote(name))

    return url


def tasks(
    queue: Queue, rows: np.ndarray, *, url: Callable[[str], str], model_version: str
) -> list[dict[str, Any]]:
    """One task per image of the ranked ``rows`` (from ``rank_pairs``), in the order of first
    appearance (= by the image's highest issue score, then ImageID)."""
    names = choice_names(queue.classes)
    seen: set[int] = set()
    out = []
    for row in rows.tolist():
        if row in seen:
            continue
        seen.add(row)
        image = queue.image_ids[row]
        worst = float(queue.issue[row].max())
        listed, keep = queue.listed(row), queue.suggested(row)
        changes = [f"remove {names[k]}" for k in listed if k not in keep]
        changes += [f"add {names[k]}" for k in keep if k not in listed]
        result = [
            {
                "id": f"lc{len(out)}",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": [names[k] for k in keep]},
            }
        ]
        out.append(
            {
                "data": {
                    IMAGE_KEY: url(image),
                    "image_id": image,
                    "max_issue": round(worst, 6),
                    "changes": "; ".join(changes),
                },
                "predictions": [
                    {
                        "model_version": model_version,
                        "score": round(1.0 - worst, 6),
                        "result": result if keep else [],
                    }
                ],
            }
        )
    return out


def write_label_studio(
    out: Path, queue: Queue, rows: np.ndarray, *, url: Callable[[str], str], model_version: str
) -> int:
    """Write label-studio-tasks.json and label-studio-config.xml; returns the task count."""
    found = tasks(queue, rows, url=url, model_version=model_version)
    body = "[\n" + ",\n".join(json.dumps(t, ensure_ascii=False) for t in found) + "\n]\n"
    (out / "label-studio-tasks.json").write_text(body, encoding="utf-8")  # a task per line
    (out / "label-studio-config.xml").write_text(config_xml(queue.classes), encoding="utf-8")
    return len(found)
