"""The review queue for Label Studio: OUT/label-studio-tasks.json (tasks with predictions, in
Label Studio's documented import format), OUT/label-studio-config.xml (the labeling config the
predictions refer to) and OUT/label-studio-view.json (a Data Manager tab that treats
``max_issue`` as a number). Create a project with the config, then import the tasks.

    [{"data": {"image": URL, "image_id": ..., "max_issue": 0.93, "machine_labels": "Shirt, Tops",
               "changes": "remove Tops; add Dress",
               "noisy_labels": [{"label": "/lc/shirt", "confidence": 0.9}, ...]},
      "predictions": [{"model_version": "labelclean-<bundle sha256[:12]>", "score": 0.61,
                       "result": [{"id": ..., "from_name": "labels", "to_name": "image",
                                   "type": "choices", "value": {"choices": [names]}}]}]}, ...]

One task per image in the queue, the image with the highest issue score first. ``max_issue``
(a JSON number) is the image's highest issue score; ``machine_labels`` the display names of
the labels the machine listed; ``changes`` the decision's change, "remove X; add Y" (or
"no change"); ``noisy_labels`` the machine's labels with their confidences, as /clean's labels
field (what the ML backend, service.review.label_studio, cleans when Label Studio asks it to predict
the task again). The predicted choices are the image's final label set, exactly /clean's
``cleaned_labels``: the labels whose verdict is kept or added (so a child never comes without
its parent when the bundle has a class hierarchy).

``score`` is the model's confidence in that label set: the lowest, over every class, of the
probability that the class's decision is right (``Queue.p_right``). A removed label is right
with probability P(wrong) = its issue score, an added one with P(missing) = its issue score; a
kept label with 1 - P(wrong), an unlisted one left out with 1 - P(missing). A set is only as
sure as its least sure decision: near 1 when every decision is clear-cut (all issue scores near
0 or 1), near 0.5 or below when one is close to its threshold or was decided by the class
hierarchy against its own score. Sorting Label Studio's "Prediction score" column lowest first
puts the least certain sets first; the tasks themselves come highest ``max_issue`` first.

With ``labelclean review --order suggest`` the tasks come in the order ``suggest-verify`` would
choose the images for verification (``service.review.suggest``), each with ``verify_rank``
(1 = verify first, a JSON number), and label-studio-view.json sorts by it.

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

from ....model.bundle import LabelClass
from ....model.cleaning import issue_scores, round_scores
from ....storage import split_uri
from ..queue import Queue

FROM_NAME = "labels"  # the Choices tag's name
TO_NAME = "image"  # the Image tag's name
IMAGE_KEY = "image"  # the task data key of the image URL (value="$image")
LOCAL_FILES = "/data/local-files/?d="
NO_LABELS = "none"  # machine_labels of an image the machine listed nothing for
MAX_ISSUE_COLUMN = "tasks:data.max_issue"  # the Data Manager's id of the max_issue column
VERIFY_RANK_COLUMN = "tasks:data.verify_rank"  # review --order suggest: 1 = verify first
# How Label Studio 1.x types a task data column (read in HumanSignal/label-studio, 1.23):
# label_studio/data_manager/functions.py get_all_columns gives a data key that a tag of the labeling
# config names that tag's type (Image, Audio, Video; any other tag: String) and every other key of
# the imported data the type Unknown, whatever its JSON values: the server never types a data column
# Number. The Data Manager tab (a View) does: the "Display as" menu on a data column's header
# (web/libs/datamanager/src/components/Common/Table/TableHead/TableHead.jsx, TabColumn.setType in
# stores/Tabs/tab_column.jsx) stores the type in the view's data.columnsDisplayType. A filter's type
# and operators follow that type (stores/Tabs/tab_filter.js); without it an Unknown column gets the
# String operators only (contains, equal, regex: components/Filters/types/index.js has no Unknown),
# with Number <, >, ≥, between, and data_manager/managers.py apply_filters casts the column
# of a Number filter to a float (Cast(KeyTextTransform(key, "data"), FloatField())). apply_ordering
# sorts numerically only when columnsDisplayType[column] is "Number", else by KeyTextTransform (text
# on PostgreSQL). Tried on label-studio 1.23.2 from PyPI (SQLite, 127.0.0.1): the columns API types
# max_issue Unknown; with max_issue as JSON strings, sorting without the display type puts "1.5e-05"
# above "0.9" and a filter >= 0.5 typed Unknown keeps it; with JSON numbers, a filter typed Unknown
# matches nothing; with JSON numbers and this tab, the order and a Number filter are numeric. So
# max_issue is a JSON number in every task, and label-studio-view.json is such a tab: max_issue
# displayed as Number, highest first.


def choice_names(classes: Sequence[LabelClass]) -> list[str]:
    """Each class's choice value: its display name, or "name (id)" when several classes share
    that display name (a choice must name one class)."""
    counts: dict[str, int] = {}
    for c in classes:
        counts[c.name] = counts.get(c.name, 0) + 1
    return [c.name if counts[c.name] == 1 and c.name else f"{c.name} ({c.id})" for c in classes]


def config_xml(classes: Sequence[LabelClass]) -> str:
    """The labeling config: a header with the ImageID, the image, the machine's labels and the
    proposed change (task data, shown above the question), and one multiple-choice question
    over every class (the hint is the label id)."""
    choices = "\n".join(
        f"    <Choice value={quoteattr(name)} hint={quoteattr(c.id)}/>"
        for name, c in zip(choice_names(classes), classes, strict=True)
    )
    return f"""<View>
  <Header value="$image_id"/>
  <Image name="{TO_NAME}" value="${IMAGE_KEY}"/>
  <Header value="Machine labels: $machine_labels" size="5"/>
  <Header value="Proposed change: $changes" size="5"/>
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


def score(queue: Queue, row: int) -> float:
    """The prediction score of image ``row``: the model's confidence in its final label set,
    the lowest probability that a class's decision is right (see the module docstring)."""
    return round(float(queue.p_right(row).min()), 6)


def task(
    queue: Queue, row: int, names: Sequence[str], *, url: str, model_version: str, key: str
) -> dict[str, Any]:
    """Image ``row``'s task: its data (the image ``url``, ImageID, highest issue score, the
    machine's labels and the proposed change) and one prediction whose choices are the final
    label set (``names``: ``choice_names``; ``key``: the result's id)."""
    final = queue.cleaned_labels(row)
    listed = queue.listed(row)
    result = {
        "id": key, "from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
        "value": {"choices": [names[k] for k in final]},
    }  # fmt: skip
    return {
        "data": {
            IMAGE_KEY: url,
            "image_id": queue.image_ids[row],
            "max_issue": issue_scores(queue.issue[row].max(keepdims=True))[0],
            "machine_labels": ", ".join(names[k] for k in listed) or NO_LABELS,
            "changes": queue.change_text(row, names),
            "noisy_labels": [
                {"label": queue.classes[k].id, "confidence": c}
                for k, c in zip(listed, round_scores(queue.noisy[row, listed]), strict=True)
            ],
        },
        "predictions": [
            {
                "model_version": model_version,
                "score": score(queue, row),
                "result": [result] if final else [],
            }
        ],
    }


def tasks(
    queue: Queue, rows: np.ndarray, *, url: Callable[[str], str], model_version: str,
    verify_rank: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """One task per image of the ranked ``rows`` (from ``rank_pairs``), in the order of first
    appearance (= by the image's highest issue score, then ImageID; with ``review --order
    suggest``, the suggestion's order, and ``verify_rank`` adds it to the data: 1, 2, ...)."""
    names = choice_names(queue.classes)
    found = []
    for n, row in enumerate(dict.fromkeys(rows.tolist())):
        one = task(queue, row, names, url=url(queue.image_ids[row]), model_version=model_version,
                   key=f"lc{n}")  # fmt: skip
        if verify_rank:
            one["data"]["verify_rank"] = n + 1
        found.append(one)
    return found


def view(*, verify_rank: bool = False) -> dict[str, Any]:
    """label-studio-view.json: a Data Manager tab (the body of POST /api/dm/views, once its
    "project" is set) that displays, filters and sorts ``max_issue`` as a number, highest
    first (see MAX_ISSUE_COLUMN's comment); with ``verify_rank``, sorted by it, lowest first
    (the suggestion's order), both shown as numbers."""
    types = {MAX_ISSUE_COLUMN: "Number"}
    if verify_rank:
        types[VERIFY_RANK_COLUMN] = "Number"
    return {
        "data": {
            "title": "labelclean review",
            "ordering": [VERIFY_RANK_COLUMN if verify_rank else f"-{MAX_ISSUE_COLUMN}"],
            "columnsDisplayType": types,
        }
    }


def write_label_studio(
    out: Path, queue: Queue, rows: np.ndarray, *, url: Callable[[str], str], model_version: str,
    verify_rank: bool = False,
) -> int:  # fmt: skip
    """Write label-studio-tasks.json, label-studio-config.xml and label-studio-view.json;
    returns the task count. ``verify_rank`` (``review --order suggest``): the tasks carry their
    place in the order as ``verify_rank`` and the tab sorts by it."""
    found = tasks(queue, rows, url=url, model_version=model_version, verify_rank=verify_rank)
    body = "[\n" + ",\n".join(json.dumps(t, ensure_ascii=False) for t in found) + "\n]\n"
    (out / "label-studio-tasks.json").write_text(body, encoding="utf-8")  # a task per line
    (out / "label-studio-config.xml").write_text(config_xml(queue.classes), encoding="utf-8")
    (out / "label-studio-view.json").write_text(
        json.dumps(view(verify_rank=verify_rank), indent=2) + "\n"
    )
    return len(found)
