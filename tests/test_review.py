"""`labelclean review` on real Fashion-MNIST images and the tiny bundle of the service tests:
review.csv is ranked by issue score (ties by ImageID, then label id) and holds what
clean_images_sync gives image by image; the HTML pages list the CSV's top pairs in its order,
escaped, with local thumbnails and working page links; the Label Studio tasks validate against
the documented import shape and name the config's choices; bad inputs exit 2 naming the flag;
no torch."""

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
from labelclean.model.cleaning import ISSUE_THRESHOLD, clean_images_sync
from labelclean.service.review import Queue, rank_pairs
from labelclean.service.review_html import thumb_name

from labelclean.cli import main

from .bulk_fixtures import bundle, bundle_dir, onnx, read_csv  # noqa: F401 - fixtures
from .service.conftest import CLASSES, fashion_pixels, png

HEADER = [
    "Rank", "ImageID", "LabelName", "DisplayName", "Listed", "Confidence", "IssueScore",
    "Suggested", "Verdict", "Reason",
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
                "required": ["image"],
                "properties": {"image": {"type": "string", "minLength": 1}},
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
            flagged = float(r[6]) >= ISSUE_THRESHOLD
            want = ("remove" if flagged else "keep") if label in listed else (
                "add" if flagged else "none")  # fmt: skip
            assert r[7] == want
            assert r[8] == (verdicts[label].verdict if label in verdicts else "")
            if label in verdicts:
                assert float(r[6]) == pytest.approx(verdicts[label].issue, abs=2e-6)
    errors = dict(read_csv(out / "errors.csv")[1:])
    assert set(errors) == {BROKEN, GHOST}
    assert errors[BROKEN].startswith("corrupt_image") and errors[GHOST].startswith("no image file")
    printed = capsys.readouterr().out
    assert f"{len(good)} of {len(good) + 2} images cleaned, 2 failed" in printed
    # The default --min-issue keeps exactly the pairs at or above 0.01, in the same order.
    assert review(bundle_dir, data, data.parent / "default") == 0
    kept = [r[1:] for r in read_csv(data.parent / "default" / "review.csv")[1:]]
    assert kept == [r[1:] for r in rows if float(r[6]) >= 0.01]
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


def test_html_pages_list_the_csvs_top_pairs(review_data, bundle_dir):  # noqa: F811
    data, _, _ = review_data
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
            p["data-suggested"], p["data-verdict"]] for p in seen]  # fmt: skip
    assert got == [[r[0], r[1], r[2], r[4], r[6], r[7], r[8]] for r in want]
    names = dict(CLASSES)
    for p, r in zip(seen, want, strict=True):
        kind = "suspected wrong" if r[4] == "yes" else "suspected missing"
        for text in (r[1], names[r[2]], r[2], kind, f"{float(r[6]):.4f}", r[7]):
            assert text in p["text"], (text, p["text"])
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


def test_label_studio_tasks_validate_and_match_the_config(review_data, bundle_dir):  # noqa: F811
    data, given, _ = review_data
    out = data.parent / "out"
    assert review(bundle_dir, data, out, "--format", "label-studio") == 0
    tasks = json.loads((out / "label-studio-tasks.json").read_text())
    jsonschema.validate(tasks, TASKS_SCHEMA)
    config, values = choices_config(out / "label-studio-config.xml")
    assert values == [name for _, name in CLASSES]  # the bundle's display names
    assert config["multiple"] == "multiple" and config["value"] == "$image"
    rows = read_csv(out / "review.csv")[1:]
    in_csv = list(dict.fromkeys(r[1] for r in rows))  # images by their highest issue score
    assert [t["data"]["image_id"] for t in tasks] == in_csv
    assert [t["data"]["max_issue"] for t in tasks] == sorted(
        (t["data"]["max_issue"] for t in tasks), reverse=True
    )
    names = dict(CLASSES)
    images = data / "images"
    for task in tasks:
        image = task["data"]["image_id"]
        assert task["data"]["image"] == "/data/local-files/?d=" + quote(
            str(images.resolve()).lstrip("/") + f"/{image}.png"
        )
        path = unquote(task["data"]["image"].split("?d=")[1])
        assert path == f"{images.resolve()}/{image}.png"[1:]
        (prediction,) = task["predictions"]
        assert prediction["score"] == pytest.approx(1 - task["data"]["max_issue"], abs=1e-6)
        chosen = [c for r in prediction["result"] for c in r["value"]["choices"]]
        for r in prediction["result"]:
            assert (r["from_name"], r["to_name"]) == (config["choices"], config["image"])
            assert config["to"] == config["image"]
        assert set(chosen) <= set(values)
        # The labels after review: listed ones kept, unlisted ones added (issue >= 0.5). Pairs
        # below --min-issue are listed ones kept or unlisted ones not added.
        listed = {g["label"] for g in given[image]}
        pairs = {r[2]: r[7] for r in rows if r[1] == image}
        want = {lab for lab in listed if pairs.get(lab, "keep") == "keep"}
        want |= {lab for lab, s in pairs.items() if s == "add"}
        assert chosen == [names[lab] for lab, _ in CLASSES if lab in want]
    # The schema can fail: a result without its choices, or of another type, is refused.
    bad = json.loads(json.dumps(tasks[:1]))
    bad[0]["predictions"][0]["result"] = [{**bad[0]["predictions"][0]["result"][0], "value": {}}]
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
                  "/data/local-files/?d=", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):  # fmt: skip
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
