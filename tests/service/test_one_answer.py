"""One answer per (image, label), whichever way it is asked: POST /clean on a real
``labelclean serve``, a bulk job's cleaned.csv (a real ``labelclean worker`` on a real
redis-server), ``labelclean clean``'s cleaned.csv, ``labelclean review``'s review.csv and its
Label Studio tasks give the same verdict (and reason) for every label, and every final label set
holds every ancestor of its labels.

The bundle carries the demo data's class hierarchy (service conftest ``hierarchy_bundle_dir``)
and the machine labels (test_review ``HIERARCHY_CASES``) make the decisions keep, remove and
add labels, some of them by the hierarchy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from labelclean.model.bundle import Bundle, load_bundle

from labelclean.cli import main

from .bulk_fixtures import read_csv
from .conftest import API_KEY, Server, hierarchy_bundle_dir, server_factory  # noqa: F401 - fixtures
from .jobs.conftest import JOB_SETTINGS, RedisServer, Workers, redis_factory  # noqa: F401
from .review.test_review import TASKS_SCHEMA, write_hierarchy_data

Verdicts = dict[tuple[str, str], tuple[str, str]]
"""(ImageID, label id) -> (verdict, reason) of every label a path shows (kept, removed,
added); the reason is "" where the path gives none."""


@pytest.fixture(scope="module")
def answers(
    tmp_path_factory: pytest.TempPathFactory, hierarchy_bundle_dir: Path,  # noqa: F811
    server_factory: Callable[..., Server], redis_factory: Callable[..., RedisServer],  # noqa: F811
) -> dict[str, object]:  # fmt: skip
    """Every path's answer for the same images and machine labels: path name -> Verdicts, and
    "tasks" -> the Label Studio tasks."""
    root = tmp_path_factory.mktemp("one-answer")
    data, given, images = write_hierarchy_data(root / "data")
    labels_csv = data / "train-annotations-machine-imagelabels.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    env.update(JOB_SETTINGS)
    env.update({
        "LABELCLEAN_REDIS_URL": redis_factory().url, "LABELCLEAN_FILE_ROOTS": str(root),
        "LABELCLEAN_API_KEYS": API_KEY,
    })  # fmt: skip
    server = server_factory(hierarchy_bundle_dir, env)
    ids = sorted(images)
    with server.client() as c:
        r = c.post("/clean", files=[("image", (f"{i}.png", images[i])) for i in ids],
                   data={"labels": [json.dumps(given[i]) for i in ids]})  # fmt: skip
        assert r.status_code == 200, r.text
        clean = {
            (image, v["id"]): (v["verdict"], v["reason"] or "")
            for image, result in zip(ids, r.json()["results"], strict=True)
            for v in result["labels"]
        }
        job = {"images": f"file://{data}/images/", "labels": f"file://{labels_csv}",
               "output": f"file://{root}/job/"}  # fmt: skip
        r = c.post("/jobs", json=job)
        assert r.status_code == 202, r.text
        Workers(hierarchy_bundle_dir, root, env).run()
        r = c.get(f"/jobs/{r.json()['id']}/results")
        assert r.status_code == 200, r.text
    (root / "job.csv").write_bytes(r.content)
    offline = root / "offline"
    assert main(["clean", "--model", str(hierarchy_bundle_dir), "--images", str(data / "images"),
                 "--labels", str(labels_csv), "--out", str(offline), "--device", "cpu",
                 "--quiet"]) == 0  # fmt: skip
    queue = root / "review"
    assert main(["review", "--model", str(hierarchy_bundle_dir), "--data", str(data), "--out",
                 str(queue), "--min-issue", "0", "--format", "label-studio", "--device", "cpu",
                 "--quiet"]) == 0  # fmt: skip
    review = {(r[1], r[2]): (r[7], r[8]) for r in read_csv(queue / "review.csv")[1:]}
    return {
        "POST /clean": clean,
        "bulk job": cleaned_csv(root / "job.csv"),
        "labelclean clean": cleaned_csv(offline / "cleaned.csv"),
        "review.csv": {k: v for k, v in review.items() if v[0] != "none"},
        "tasks": json.loads((queue / "label-studio-tasks.json").read_text()),
    }


def cleaned_csv(path: Path) -> Verdicts:
    """cleaned.csv (ImageID,Source,LabelName,...,Verdict,...,Reason, by header) as Verdicts."""
    header, *rows = read_csv(path)
    image, label, verdict, reason = (header.index(k) for k in ("ImageID", "LabelName", "Verdict",
                                                              "Reason"))  # fmt: skip
    return {(r[image], r[label]): (r[verdict], r[reason]) for r in rows}


def task_verdicts(tasks: list[dict], bundle: Bundle) -> dict[tuple[str, str], str]:
    """The Label Studio tasks' verdicts: a preselected label is kept when the machine listed it,
    added when not; a listed one left out is removed. The task's ``changes`` must name the
    removed and added labels."""
    ids = {c.name: c.id for c in bundle.classes}
    found = {}
    for task in tasks:
        image, data = task["data"]["image_id"], task["data"]
        chosen = {ids[n] for r in task["predictions"][0]["result"] for n in r["value"]["choices"]}
        machine = data["machine_labels"]
        listed = {ids[n] for n in machine.split(", ")} if machine != "none" else set()
        for label in chosen | listed:
            kept_or_added = "kept" if label in listed else "added"
            found[image, label] = kept_or_added if label in chosen else "removed"
        steps = [f"remove {c.name}" for c in bundle.classes if c.id in listed - chosen]
        steps += [f"add {c.name}" for c in bundle.classes if c.id in chosen - listed]
        assert data["changes"] == ("; ".join(steps) or "no change"), image
    return found


def test_every_path_gives_the_same_verdicts(answers, hierarchy_bundle_dir):  # noqa: F811
    clean = answers["POST /clean"]
    assert {v for v, _ in clean.values()} == {"kept", "removed", "added"}
    assert any(reason.startswith("ancestor of ") for _, reason in clean.values())
    for path in ("bulk job", "labelclean clean", "review.csv"):
        assert answers[path] == clean, path
    tasks = answers["tasks"]
    jsonschema.validate(tasks, TASKS_SCHEMA)
    bundle = load_bundle(hierarchy_bundle_dir)
    assert task_verdicts(tasks, bundle) == {k: v for k, (v, _) in clean.items()}


def final_sets(verdicts: Verdicts) -> dict[str, set[str]]:
    """ImageID -> its final label set (the kept and added labels), for images that have one."""
    final: dict[str, set[str]] = {}
    for (image, label), (verdict, _) in verdicts.items():
        if verdict in ("kept", "added"):
            final.setdefault(image, set()).add(label)
    return final


def test_every_final_label_set_holds_its_ancestors(answers, hierarchy_bundle_dir):  # noqa: F811
    bundle = load_bundle(hierarchy_bundle_dir)
    hierarchy = bundle.hierarchy
    assert hierarchy is not None
    paths = ("POST /clean", "bulk job", "labelclean clean", "review.csv")
    finals = {path: final_sets(answers[path]) for path in paths}
    ids = {c.name: c.id for c in bundle.classes}
    for task in answers["tasks"]:
        for result in task["predictions"][0]["result"]:
            chosen = {ids[n] for n in result["value"]["choices"]}
            finals.setdefault("Label Studio", {})[task["data"]["image_id"]] = chosen
    for path, final in finals.items():
        assert final, path
        for image, labels in final.items():
            for label in labels:
                assert set(hierarchy.ancestors(label)) <= labels, (path, image, label)
