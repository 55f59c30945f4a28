"""`labelclean review` on real Fashion-MNIST images and the tiny bundle of the service tests:
review.csv is ranked by issue score (ties by ImageID, then label id) and its one Verdict per
pair is what clean_images_sync decides image by image; the HTML pages list the CSV's top pairs
in its order, escaped, with local thumbnails, the machine's labels, the proposed change and
working page links; the Label Studio tasks validate against the documented import shape, name
the config's choices and preselect exactly /clean's final label set (with the class hierarchy:
no child without its parent), with ``max_issue`` a number and ``score`` the confidence in that
set; bad inputs exit 2 naming the flag; no torch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

import jsonschema
import numpy as np
import pytest
from labelclean.model.bundle import LabelClass, load_bundle
from labelclean.model.cleaning import CleanResult, clean_images_sync
from labelclean.model.runtime import OnnxModel
from labelclean.service.review.html import thumb_name
from labelclean.service.review.label_studio.export import tasks as ls_tasks
from labelclean.service.review.queue import VERDICTS, Queue, rank_pairs

from labelclean.cli import main

from ..bulk_fixtures import bundle, bundle_dir, onnx, read_csv  # noqa: F401 - fixtures
from ..conftest import CLASSES, fashion_pixels, hierarchy_bundle_dir, png  # noqa: F401 - a fixture

HEADER = [
    "Rank", "ImageID", "LabelName", "DisplayName", "Listed", "Confidence", "IssueScore",
    "Verdict", "Reason",
]  # fmt: skip
ODD = "odd <b>&\"'id"  # an ImageID that needs escaping in HTML and quoting in URLs
BROKEN = "broken-truncated"
GHOST = "ghost-no-file"
FAST = ["--device", "cpu", "--batch-size", "5", "--quiet"]

# Label Studio's import format for tasks with predictions (labelstud.io/guide/predictions:
# "data" with the Object tag's value key; "predictions": [{"model_version", "score", "result":
# [{"id", "from_name", "to_name", "type", "value"}]}]; for a Choices control, type "choices" and
# value {"choices": [...]}).
TASKS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["data", "predictions"],
        "additionalProperties": False,
        "properties": {
            "data": {
                "type": "object",
                "required": ["image", "image_id", "max_issue", "machine_labels", "changes"],
                "properties": {
                    "image": {"type": "string", "minLength": 1},
                    "image_id": {"type": "string", "minLength": 1},
                    "max_issue": {"type": "number", "minimum": 0, "maximum": 1},
                    "machine_labels": {"type": "string", "minLength": 1},
                    "changes": {"type": "string", "minLength": 1},
                },
            },
            "predictions": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["model_version", "score", "result"],
                    "additionalProperties": False,
                    "properties": {
                        "model_version": {"type": "string", "minLength": 1},
                        "score": {"type": "number", "minimum": 0, "maximum": 1},
                        "result": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "from_name", "to_name", "type", "value"],
                                "additionalProperties": False,
                                "properties": {
                                    "id": {"type": "string", "minLength": 1},
                                    "from_name": {"type": "string"},
                                    "to_name": {"type": "string"},
                                    "type": {"const": "choices"},
                                    "value": {
                                        "type": "object",
                                        "required": ["choices"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "choices": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                                "minItems": 1,
                                                "uniqueItems": True,
                                            }
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def write_data(root: Path, n: int = 24, seed: int = 0) -> tuple[Path, dict, dict]:
    """A data folder in Open Images layout: ``n`` real images (one with an ImageID that needs
    escaping), a truncated PNG, a CSV row without an image file, a 0-confidence row and a file
    that is no image. Returns (folder, ImageID -> labels as /clean takes them, -> bytes)."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    data = {f"img-{i:03d}": png(p) for i, p in enumerate(fashion_pixels(n))}
    data[ODD] = data.pop(f"img-{n - 1:03d}")
    for image, content in data.items():
        (images / f"{image}.png").write_bytes(content)
    (images / f"{BROKEN}.png").write_bytes(data["img-000"][: len(data["img-000"]) // 2])
    (images / "notes.txt").write_text("not an image\n")
    rows, given = [], {}
    for image in [*sorted(data), BROKEN, GHOST]:
        picks = rng.choice(len(CLASSES), size=int(rng.integers(0, 4)), replace=False)
        given[image] = []
        for k in sorted(picks.tolist()):
            confidence = float(rng.choice([1.0, round(float(rng.uniform(0.05, 1)), 3), 0.0]))
            rows.append((image, "machine", CLASSES[k][0], repr(confidence)))
            if confidence > 0:
                given[image].append({"label": CLASSES[k][0], "confidence": confidence})
        if not picks.size:
            rows.append((image, "machine", CLASSES[0][0], "0.0"))  # listed nothing
    rng.shuffle(rows)
    with (root / "train-annotations-machine-imagelabels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("ImageID", "Source", "LabelName", "Confidence"), *rows])
    with (root / "class-descriptions.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("LabelName", "DisplayName"), *CLASSES])
    return root, given, data


@pytest.fixture
def review_data(tmp_path: Path) -> tuple[Path, dict, dict]:
    return write_data(tmp_path / "data")


HIERARCHY_CASES = {
    "h-0": [("/lc/shirt", 1.0), ("/lc/tops", 1.0)],  # Tops kept for Shirt; 2 ancestors added
    "h-1": [("/lc/tops", 1.0), ("/lc/long_sleeve", 0.3), ("/lc/shirt", 0.45)],  # all removed
    "h-2": [("/lc/sneaker", 1.0), ("/lc/bag", 0.2)],  # Bag removed; Footwear, Accessory added
    "h-3": [("/lc/dress", 1.0), ("/lc/clothing", 1.0), ("/lc/coat", 0.7)],  # Tops added at ~0
    "h-4": [],  # nothing listed
}
"""ImageID -> the machine's (label, confidence) for the hierarchy bundle (service conftest
``hierarchy_bundle_dir``: its cleaner keeps the labels as given but lowers Tops), chosen so that
the decisions hold kept, removed and added labels, some of them decided by the hierarchy."""


def write_hierarchy_data(root: Path) -> tuple[Path, dict, dict]:
    """A data folder in Open Images layout over the demo classes, one real image per case of
    HIERARCHY_CASES. Returns (folder, ImageID -> labels as /clean takes them, -> bytes)."""
    (root / "images").mkdir(parents=True)
    data = {i: png(p) for i, p in zip(HIERARCHY_CASES, fashion_pixels(len(HIERARCHY_CASES)),
                                      strict=True)}  # fmt: skip
    rows = [("ImageID", "Source", "LabelName", "Confidence")]
    for image, labels in HIERARCHY_CASES.items():
        (root / "images" / f"{image}.png").write_bytes(data[image])
        rows += [(image, "machine", k, repr(c)) for k, c in labels or [("/lc/bag", 0.0)]]
    with (root / "train-annotations-machine-imagelabels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    given = {i: [{"label": k, "confidence": c} for k, c in v] for i, v in HIERARCHY_CASES.items()}
    return root, given, data


def p_right(result: CleanResult, index: dict[str, int]) -> np.ndarray:
    """(d,) P(the decision is right) of every class, from /clean's answer for one image
    (``index``: label id -> column): the issue score for a removed or added label, 1 - it for a
    kept one or one left out."""
    assert result.issue is not None
    issue = result.issue.astype(np.float64)
    changed = [index[v.id] for v in result.labels if v.verdict != "kept"]
    out = 1.0 - issue
    out[changed] = issue[changed]
    return out


def change_text(result: CleanResult, names: dict[str, str], order: list[str]) -> str:
    """The change "remove X; add Y" from /clean's verdicts, labels in class ``order``, or
    "no change"."""
    verdicts = {v.id: v.verdict for v in result.labels}
    steps = [f"{verb} {names[k]}" for verb, verdict in (("remove", "removed"), ("add", "added"))
             for k in order if verdicts.get(k) == verdict]  # fmt: skip
    return "; ".join(steps) or "no change"


def review(bundle_dir: Path, data: Path, out: Path, *extra: str) -> int:  # noqa: F811
    return main(["review", "--model", str(bundle_dir), "--data", str(data), "--out", str(out),
                 *FAST, *extra])  # fmt: skip


def test_csv_is_ranked_and_holds_what_clean_gives(review_data, bundle_dir, bundle, onnx, capsys):  # noqa: F811
    data, given, images = review_data
    out = data.parent / "out"
    assert review(bundle_dir, data, out, "--min-issue", "0") == 0
    rows = read_csv(out / "review.csv")
    assert rows[0] == HEADER
    rows = rows[1:]
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    key = [(-float(r[6]), r[1], r[2]) for r in rows]
    assert key == sorted(key)  # highest issue first; ties by ImageID, then label id
    good = sorted(images)
    assert len(rows) == len(good) * len(CLASSES)  # --min-issue 0: every pair
    by_image: dict[str, dict[str, list[str]]] = {}
    for r in rows:
        by_image.setdefault(r[1], {})[r[2]] = r
    assert sorted(by_image) == good
    names = dict(CLASSES)
    for image in good:
        (result,) = clean_images_sync(bundle, [images[image]], [given[image]], predict=onnx.run)
        verdicts = {v.id: v for v in result.labels}
        listed = {g["label"]: g["confidence"] for g in given[image]}
        for k, (label, _) in enumerate(CLASSES):
            r = by_image[image][label]
            assert float(r[6]) == pytest.approx(float(result.issue[k]), abs=2e-6)
            assert r[3] == names[label]
            assert r[4] == ("yes" if label in listed else "no")
            assert float(r[5]) == pytest.approx(listed.get(label, 0.0), abs=1e-6)
            v = verdicts.get(label)
            assert (r[7], r[8]) == ((v.verdict, v.reason or "") if v else ("none", ""))
            if v:
                assert float(r[6]) == pytest.approx(v.issue, abs=2e-6)
    verdict_counts = {v: sum(r[7] == v for r in rows) for v in VERDICTS}
    assert all(verdict_counts.values()), verdict_counts  # every decision occurs
    errors = dict(read_csv(out / "errors.csv")[1:])
    assert set(errors) == {BROKEN, GHOST}
    assert errors[BROKEN].startswith("corrupt_image") and errors[GHOST].startswith("no image file")
    printed = capsys.readouterr().out
    assert f"{len(good)} of {len(good) + 2} images cleaned, 2 failed" in printed
    assert (f"the decision removes {verdict_counts['removed']} and adds "
            f"{verdict_counts['added']})") in printed  # fmt: skip
    # The default --min-issue keeps exactly the pairs at or above 0.01 and the changes, in the
    # same order.
    assert review(bundle_dir, data, data.parent / "default") == 0
    kept = [r[1:] for r in read_csv(data.parent / "default" / "review.csv")[1:]]
    assert kept == [r[1:] for r in rows if float(r[6]) >= 0.01 or r[7] in ("removed", "added")]
    assert 0 < len(kept) < len(rows)


class Pages(HTMLParser):
    """The review rows (``tr.pair``: data attributes, cell texts), image sources and links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pairs: list[dict] = []
        self.sources: list[str] = []
        self.links: dict[str, str] = {}  # text -> href
        self.tags: set[str] = set()
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "tr" and "pair" in (a.get("class") or "").split():
            self.pairs.append({**a, "text": ""})
        elif tag == "img":
            self.sources.append(a["src"])
        elif tag == "a":
            self._href, self._text = a["href"], ""

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links[self._text.strip()] = self._href
            self._href = None

    def handle_data(self, data):
        if self._href is not None:
            self._text += data
        if self.pairs:
            self.pairs[-1]["text"] += data + " "


def test_html_pages_list_the_csvs_top_pairs(review_data, bundle_dir, bundle, onnx):  # noqa: F811
    data, given, images = review_data
    out = data.parent / "out"
    out.mkdir()
    (out / "page-9.html").write_text("left by an earlier, longer run")
    assert review(bundle_dir, data, out, "--top", "23", "--per-page", "5") == 0
    rows = read_csv(out / "review.csv")[1:]
    assert len(rows) > 23
    seen, page, pages = [], "index.html", []
    while page:  # follow the "next" links from index.html
        pages.append(page)
        parser = Pages()
        parser.feed((out / page).read_text(encoding="utf-8"))
        assert "script" not in parser.tags and "link" not in parser.tags
        for src in parser.sources:
            assert not src.startswith(("/", "http:", "https:", "//")) and (out / src).is_file()
        assert len(parser.sources) == len(parser.pairs) <= 5
        seen += parser.pairs
        page = parser.links.get("next »", "")
    assert pages == ["index.html", "page-2.html", "page-3.html", "page-4.html", "page-5.html"]
    assert not (out / "page-9.html").exists()
    want = rows[:23]
    got = [[p["data-rank"], p["data-image"], p["data-label"], p["data-listed"], p["data-issue"],
            p["data-verdict"]] for p in seen]  # fmt: skip
    assert got == [[r[0], r[1], r[2], r[4], r[6], r[7]] for r in want]
    names, order = dict(CLASSES), [label for label, _ in CLASSES]
    for p, r in zip(seen, want, strict=True):
        (result,) = clean_images_sync(bundle, [images[r[1]]], [given[r[1]]], predict=onnx.run)
        listed = [names[k] for k in order if k in {g["label"] for g in given[r[1]]}]
        assert p["data-machine-labels"] == ", ".join(listed)
        assert p["data-change"] == change_text(result, names, order)
        kind = "suspected wrong" if r[4] == "yes" else "suspected missing"
        for text in (r[1], names[r[2]], r[2], kind, f"{float(r[6]):.4f}", r[7], *listed,
                     p["data-change"]):  # fmt: skip
            assert text in p["text"], (text, p["text"])
    assert any(p["data-change"] != "no change" for p in seen)
    odd = [p for p in seen if p["data-image"] == ODD]
    if odd:  # escaped in the page, found again by the parser; its thumbnail under a safe name
        assert ODD in odd[0]["text"] and thumb_name(ODD).startswith("id-")
    page_4 = (out / "page-4.html").read_text()
    assert 'href="page-3.html"' in page_4 and 'href="page-5.html"' in page_4


def test_escaping_of_odd_ids_and_names(tmp_path, bundle_dir):  # noqa: F811
    """The odd ImageID at the top of the queue: raw text never reaches the page unescaped."""
    data, _, _ = write_data(tmp_path / "data", n=6, seed=3)
    out = tmp_path / "out"
    assert review(bundle_dir, data, out, "--min-issue", "0", "--top", "60") == 0
    body = (out / "index.html").read_text()
    assert ODD not in body and "<b>&" not in body
    assert "odd &lt;b&gt;&amp;&quot;&#x27;id" in body
    parser = Pages()
    parser.feed(body)
    assert ODD in {p["data-image"] for p in parser.pairs}
    assert f"thumbs/{thumb_name(ODD)}" in parser.sources


def choices_config(path: Path) -> tuple[dict, list[str]]:
    root = ET.parse(path).getroot()
    image, choices = root.find("Image"), root.find("Choices")
    assert image is not None and choices is not None
    names = {"image": image.get("name"), "value": image.get("value"),
             "choices": choices.get("name"), "to": choices.get("toName"),
             "multiple": choices.get("choice")}  # fmt: skip
    return names, [c.get("value") for c in choices.findall("Choice")]


def assert_tasks_follow_clean(tasks: list, rows: list, given: dict, images: dict, model,
                              predict) -> None:  # fmt: skip
    """Each Label Studio task against /clean's answer for its image (``clean_images_sync``) and
    review.csv's ``rows``: the preselected choices are exactly the final label set (kept and
    added), ``max_issue`` is the image's highest issue score, ``score`` the lowest probability
    that a class's decision is right, ``machine_labels`` and ``changes`` as the verdicts say
    (``model``: the bundle, ``predict``: its ONNX model's run)."""
    names, order = {c.id: c.name for c in model.classes}, [c.id for c in model.classes]
    in_csv = {(r[1], r[2]): r[7] for r in rows}
    for task in tasks:
        image = task["data"]["image_id"]
        (result,) = clean_images_sync(model, [images[image]], [given[image]], predict=predict)
        (prediction,) = task["predictions"]
        chosen = [c for r in prediction["result"] for c in r["value"]["choices"]]
        assert chosen == [names[k] for k in order if k in result.cleaned_labels], image
        # review.csv gives the same set: every change is in it, so a listed label it leaves out
        # (below --min-issue) is kept and an unlisted one is not added.
        listed = {g["label"] for g in given[image]}
        verdicts = {k: in_csv.get((image, k), "kept" if k in listed else "none") for k in order}
        assert chosen == [names[k] for k in order if verdicts[k] in ("kept", "added")], image
        assert task["data"]["max_issue"] == pytest.approx(float(result.issue.max()), abs=2e-6)
        assert prediction["score"] == pytest.approx(p_right(result, model.index).min(), abs=2e-6)
        machine = ", ".join(names[k] for k in order if k in listed)
        assert task["data"]["machine_labels"] == (machine or "none")
        assert task["data"]["changes"] == change_text(result, names, order)


def test_label_studio_tasks_validate_and_match_the_config(review_data, bundle_dir, bundle, onnx):  # noqa: F811
    data, given, images = review_data
    out = data.parent / "out"
    assert review(bundle_dir, data, out, "--format", "label-studio") == 0
    text = (out / "label-studio-tasks.json").read_text()
    tasks = json.loads(text)
    jsonschema.validate(tasks, TASKS_SCHEMA)  # max_issue a JSON number, score in [0, 1]
    assert '"max_issue": "' not in text
    config, values = choices_config(out / "label-studio-config.xml")
    assert values == [name for _, name in CLASSES]  # the bundle's display names
    assert config["multiple"] == "multiple" and config["value"] == "$image"
    headers = [h.get("value") for h in ET.parse(out / "label-studio-config.xml").iter("Header")]
    assert headers == ["$image_id", "Machine labels: $machine_labels", "Proposed change: $changes"]
    rows = read_csv(out / "review.csv")[1:]
    in_csv = list(dict.fromkeys(r[1] for r in rows))  # images by their highest issue score
    assert [t["data"]["image_id"] for t in tasks] == in_csv
    assert [t["data"]["max_issue"] for t in tasks] == sorted(
        (t["data"]["max_issue"] for t in tasks), reverse=True
    )
    images_folder = data / "images"
    for task in tasks:
        image = task["data"]["image_id"]
        assert task["data"]["image"] == "/data/local-files/?d=" + quote(
            str(images_folder.resolve()).lstrip("/") + f"/{image}.png"
        )
        path = unquote(task["data"]["image"].split("?d=")[1])
        assert path == f"{images_folder.resolve()}/{image}.png"[1:]
        for r in task["predictions"][0]["result"]:
            assert (r["from_name"], r["to_name"]) == (config["choices"], config["image"])
            assert config["to"] == config["image"]
            assert set(r["value"]["choices"]) <= set(values)
        # The machine's labels as /clean takes them: what the ML backend cleans again.
        noisy = task["data"]["noisy_labels"]
        assert [n["label"] for n in noisy] == [g["label"] for g in given[image]]
        for n, g in zip(noisy, given[image], strict=True):
            assert n["confidence"] == pytest.approx(g["confidence"], abs=1e-6)
    assert_tasks_follow_clean(tasks, rows, given, images, bundle, onnx.run)
    assert any(t["data"]["changes"] != "no change" for t in tasks)
    view = json.loads((out / "label-studio-view.json").read_text())
    assert view["data"]["columnsDisplayType"] == {"tasks:data.max_issue": "Number"}
    assert view["data"]["ordering"] == ["-tasks:data.max_issue"]
    # The schema can fail: a result without its choices, or max_issue as a string, is refused.
    bad = json.loads(json.dumps(tasks[:1]))
    bad[0]["predictions"][0]["result"] = [{"id": "x", "from_name": "labels", "to_name": "image",
                                           "type": "choices", "value": {}}]  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, TASKS_SCHEMA)
    bad = json.loads(json.dumps(tasks[:1]))
    bad[0]["data"]["max_issue"] = str(bad[0]["data"]["max_issue"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, TASKS_SCHEMA)
    # Another image URL prefix: the file name appended, URL-quoted.
    out2 = data.parent / "out2"
    assert review(bundle_dir, data, out2, "--format", "label-studio",
                  "--image-url", "http://host:8081/imgs/") == 0  # fmt: skip
    urls = {t["data"]["image_id"]: t["data"]["image"]
            for t in json.loads((out2 / "label-studio-tasks.json").read_text())}  # fmt: skip
    assert urls["img-000"] == "http://host:8081/imgs/img-000.png"
    if ODD in urls:
        assert urls[ODD] == "http://host:8081/imgs/" + quote(f"{ODD}.png")


def test_label_studio_preselects_no_child_without_its_parent(tmp_path, hierarchy_bundle_dir,  # noqa: F811
                                                             capsys):  # fmt: skip
    data, given, images = write_hierarchy_data(tmp_path / "data")
    out = tmp_path / "out"
    assert review(hierarchy_bundle_dir, data, out, "--format", "label-studio") == 0
    printed = capsys.readouterr().out
    model = load_bundle(hierarchy_bundle_dir)
    hierarchy = model.hierarchy
    assert hierarchy is not None
    tasks = json.loads((out / "label-studio-tasks.json").read_text())
    jsonschema.validate(tasks, TASKS_SCHEMA)
    rows = read_csv(out / "review.csv")[1:]
    by_name = {c.name: c.id for c in model.classes}
    assert {"h-0", "h-1", "h-2", "h-3"} <= {t["data"]["image_id"] for t in tasks}
    for task in tasks:
        result = task["predictions"][0]["result"]
        chosen = {by_name[c] for r in result for c in r["value"]["choices"]}
        for label in chosen:
            assert set(hierarchy.ancestors(label)) <= chosen, (task["data"], label)
    assert_tasks_follow_clean(tasks, rows, given, images, model, OnnxModel(model, device="cpu").run)
    verdicts = {(r[1], r[2]): (r[7], r[8], float(r[6])) for r in rows}
    assert verdicts["h-0", "/lc/tops"][:2] == ("kept", "ancestor of /lc/shirt")
    assert verdicts["h-0", "/lc/long_sleeve"][:2] == ("added", "ancestor of /lc/shirt")
    assert verdicts["h-1", "/lc/shirt"][0] == verdicts["h-2", "/lc/bag"][0] == "removed"
    added_low = verdicts["h-3", "/lc/tops"]  # a change below --min-issue is still listed
    assert added_low[:2] == ("added", "ancestor of /lc/coat") and added_low[2] < 0.01
    counts = [sum(r[7] == v for r in rows) for v in ("removed", "added")]  # the summary's
    assert f"the decision removes {counts[0]} and adds {counts[1]})" in printed


def test_score_is_the_confidence_in_the_final_label_set():
    """A task whose decisions are all near-certain scores higher than one with an issue score
    near its threshold; the choices are the kept and added labels, the change names them."""
    classes = [LabelClass("/a", "A"), LabelClass("/b", "B"), LabelClass("/c", "C")]
    issue = np.array([[0.01, 0.99, 0.02], [0.45, 0.6, 0.01], [0.001, 0.001, 0.2]], np.float32)
    noisy = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0]], np.float32)
    decided = [("kept", "removed", "none"), ("kept", "added", "none"), ("kept", "added", "none")]
    codes = [[VERDICTS.index(v) for v in row] for row in decided]
    queue = Queue(classes, ["sure", "unsure", "hier"], np.ones(3, bool), noisy, issue,
                  np.array(codes, np.int8))  # fmt: skip
    rows, cols = rank_pairs(queue, min_issue=0.1)
    assert (2, 1) in set(zip(rows.tolist(), cols.tolist(), strict=True))  # "hier" adds, at 0.001
    made = ls_tasks(queue, rows, url=lambda i: f"http://x/{i}.png", model_version="v")
    found = {t["data"]["image_id"]: t for t in made}
    assert list(found) == ["sure", "unsure", "hier"]  # by the highest issue score
    score = {k: t["predictions"][0]["score"] for k, t in found.items()}
    assert score["sure"] == pytest.approx(0.98) and score["unsure"] == pytest.approx(0.55)
    assert score["hier"] == pytest.approx(0.001)  # added against its own score: doubtful
    assert all(0 <= v <= 1 for v in score.values()) and score["sure"] > score["unsure"]
    choices = {k: t["predictions"][0]["result"][0]["value"]["choices"] for k, t in found.items()}
    assert choices == {"sure": ["A"], "unsure": ["A", "B"], "hier": ["A", "B"]}
    data = {k: (t["data"]["machine_labels"], t["data"]["changes"]) for k, t in found.items()}
    assert data == {"sure": ("A, B", "remove B"), "unsure": ("A", "add B"), "hier": ("A", "add B")}
    assert found["sure"]["data"]["max_issue"] == pytest.approx(0.99)


def test_bad_inputs_exit_2_naming_the_flag(review_data, bundle_dir, tmp_path, capsys):  # noqa: F811
    data, _, _ = review_data
    out = tmp_path / "out"
    no_machine = tmp_path / "no-machine"
    no_machine.mkdir()
    (no_machine / "images").mkdir()
    other_classes = tmp_path / "other-classes"
    other_classes.mkdir()
    (other_classes / "class-descriptions.csv").write_text(
        "LabelName,DisplayName\n" + "".join(f"{i},{n}\n" for i, n in CLASSES[:-1]) + "/x/y,Y\n"
    )
    unknown = tmp_path / "unknown"
    (unknown / "images").mkdir(parents=True)
    (unknown / "train-annotations-machine-imagelabels.csv").write_text(
        "ImageID,Source,LabelName,Confidence\nimg-000,machine,/fm/nope,0.9\n"
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["--model", str(tmp_path / "nope")], "--model", "not a model bundle"),
        (["--data", str(tmp_path / "missing")], "--data", "folder not found"),
        (["--data", str(no_machine)], "--data",
         "train-annotations-machine-imagelabels.csv: file not found"),
        (["--data", str(no_machine), "--split", "test"], "--data", "test-annotations-machine"),
        (["--data", str(other_classes)], "--data", "classes differ from the bundle's"),
        (["--data", str(unknown)], "--data", "/fm/nope (pass --ignore-unknown-labels"),
        (["--machine", "nope.csv"], "--machine", "nope.csv: file not found"),
        (["--images", "nope"], "--images", "folder not found"),
        (["--out", f"{a_file}/out"], "--out", "not writable"),
        (["--per-page", "0"], "--per-page", "at least 1"),
        (["--top", "-1"], "--top", "at least 0"),
        (["--min-issue", "2"], "--min-issue", "between 0 and 1"),
    ]  # fmt: skip
    for extra, flag, message in cases:
        argv = ["review", "--model", str(bundle_dir), "--data", str(data), "--out", str(out),
                "--quiet", *extra]  # fmt: skip
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith(f"labelclean review: error: {flag}"), err
        assert message in err and err.count("\n") == 1, err
    # Unknown labels can be skipped.
    (unknown / "images" / "img-000.png").write_bytes(png(fashion_pixels(1)[0]))
    assert review(bundle_dir, unknown, out, "--ignore-unknown-labels") == 0


def test_equal_scores_are_ordered_by_image_then_label():
    from labelclean.model.bundle import LabelClass

    classes = [LabelClass("/b", "B"), LabelClass("/a", "A"), LabelClass("/c", "C")]
    issue = np.array([[0.5, 0.5, 0.0], [0.05, 0.5, 0.9], [0.5, 0.5, 0.5]], np.float32)
    queue = Queue(classes, ["x", "y", "z"], np.array([True, True, False]),
                  np.zeros((3, 3), np.float32), issue, np.zeros((3, 3), np.int8))  # fmt: skip
    rows, cols = rank_pairs(queue, min_issue=0.1)
    got = [(queue.image_ids[r], classes[c].id) for r, c in zip(rows, cols, strict=True)]
    assert got == [("y", "/c"), ("x", "/a"), ("x", "/b"), ("y", "/a")]  # z failed: left out


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as info:
        main(["review", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    text, joined = " ".join(out.split()), "".join(out.split())  # argparse wraps at hyphens too
    for words in ("review.csv", "errors.csv", "index.html", "--min-issue", "default 0.01",
                  "--top", "--per-page", "label-studio-tasks.json", "label-studio-config.xml",
                  "/data/local-files/?d=", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT",
                  "IssueScore,Verdict,Reason", "label-studio-view.json"):  # fmt: skip
        assert words in text or words in joined, words


def test_review_loads_no_torch(review_data, bundle_dir):  # noqa: F811
    """A real process with a progress bar: torch is never imported."""
    data, _, _ = review_data
    code = (
        "import sys; from labelclean.cli import main; code = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    argv = ["review", "--model", str(bundle_dir), "--data", str(data), "--out",
            str(data.parent / "out"), "--device", "cpu", "--format", "label-studio"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    done = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cleaning: 100%" in done.stderr
