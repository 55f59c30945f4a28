"""The ML backend protocol on a real server (Label Studio's label_studio_ml/api.py routes and
payloads, under /label-studio): /setup checks the project's choices and answers the bundle's id;
/predict answers one prediction per task, in order, the same as `labelclean review` exported
(final label set, score, highest issue score), with an error in place of a task whose image
cannot be read; a key is needed, as Bearer or as basic auth's password; the webhook turns
annotations into Open Images human-label rows, deduplicated by task and annotation (the latest
edit stands, a deletion or a skip withdraws), which `labelclean import-reviews` joins, and reads
the same way from a JSON export."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import httpx
import pytest
from labelclean.model.bundle import load_bundle
from labelclean.model.openimages import read_annotations

from labelclean.cli import main

from ...conftest import API_KEY, CLASSES, Server, bundle_dir  # noqa: F401 - a fixture
from .conftest import Export

NAMES = [name for _, name in CLASSES]


def post(server: Server, path: str, body: dict, **kw: object) -> httpx.Response:
    with server.client() as c:
        return c.post(f"/label-studio/{path}", json=body, **kw)


def test_setup_answers_the_bundle_and_checks_the_choices(backend, export: Export, bundle_dir):  # noqa: F811
    server, _ = backend
    answer = post(server, "setup", {"project": "3.1712345678", "schema": export.config,
                                    "hostname": "http://ls", "access_token": "x"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    sha = load_bundle(bundle_dir).sha256
    assert answer.json() == {"model_version": f"labelclean-{sha[:12]}"}
    assert answer.json()["model_version"] == export.tasks[0]["predictions"][0]["model_version"]
    # A project may ask about a few classes, by display name or by label id.
    few = ('<View><Image name="img" value="$photo"/><Choices name="c" toName="img">'
           '<Choice value="Bag"/><Choice value="/fm/coat"/></Choices></View>')  # fmt: skip
    assert post(server, "setup", {"project": "4.1", "schema": few}).status_code == 200
    unknown = few.replace('<Choice value="Bag"/>', '<Choice value="Unicorn"/><Choice value="Bag"/>'
                          '<Choice value="Dragon"/>')  # fmt: skip
    answer = post(server, "setup", {"project": "5.1", "schema": unknown})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "unknown_choices"
    assert "'Unicorn'" in error["message"] and "'Dragon'" in error["message"]
    assert "'Bag'" not in error["message"]
    no_choices = '<View><Image name="img" value="$photo"/></View>'
    answer = post(server, "setup", {"project": "6.1", "schema": no_choices})
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "label_config_invalid")
    assert "'Unicorn'" in server.log.read_text()  # the operator sees it too


def test_a_key_is_needed_as_bearer_or_basic_auth(backend):
    server, _ = backend
    url = f"{server.url}/label-studio/health"
    assert httpx.get(url).status_code == 401
    assert "Basic" in httpx.get(url).headers["www-authenticate"]
    assert httpx.get(url, auth=("label-studio", "wrong-key-0123456789")).status_code == 401
    answer = httpx.get(url, auth=("label-studio", API_KEY))
    assert answer.status_code == 200 and answer.json()["status"] == "UP"
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    basic = base64.b64encode(f"any:{API_KEY}".encode()).decode()
    answer = httpx.post(f"{server.url}/label-studio/webhook", json={"action": "PROJECT_UPDATED"},
                        headers={"Authorization": f"Basic {basic}"})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    with server.client() as c:  # not part of the API contract
        assert "/label-studio" not in json.dumps(c.get("/openapi.json").json()["paths"])


def test_predict_answers_each_task_as_the_review_export_did(backend, export: Export):
    server, _ = backend
    broken = {"id": 901, "data": {"image": f"file://{export.images}/broken-truncated.png"}}
    elsewhere = {"id": 902, "data": {"image": "http://example.invalid/a.png"}}
    outside = {"id": 903, "data": {"image": f"file://{export.data}/class-descriptions.csv"}}
    upload = {"id": 904, "data": {"image": "/data/upload/1/x.png"}}  # no Label Studio URL set
    tasks = [{"id": t["id"], "data": t["data"]} for t in export.tasks]
    sent = tasks[:3] + [broken, elsewhere] + tasks[3:] + [outside, upload]
    body = {"tasks": sent, "label_config": export.config, "project": "3.1712345678",
            "params": {"context": None}}  # fmt: skip
    answer = post(server, "predict", body)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(sent)  # one per task, in order
    version = export.tasks[0]["predictions"][0]["model_version"]
    by_id = {t["id"]: t for t in export.tasks}
    for task, got in zip(sent, results, strict=True):
        if task["id"] > 900:
            assert "result" not in got and got["error"], got  # Label Studio skips it
            continue
        want = by_id[task["id"]]["predictions"][0]
        assert got["model_version"] == version
        assert got["result"] == [
            {**r, "id": f"lc{task['id']}"} for r in want["result"]
        ]  # the same choices, from_name and to_name
        assert got["score"] == pytest.approx(want["score"], abs=2e-6)
        assert got["mislabeling"] == pytest.approx(task["data"]["max_issue"], abs=2e-6)
    errors = {t["id"]: r["error"] for t, r in zip(sent, results, strict=True) if t["id"] > 900}
    assert "corrupt" in errors[901]
    assert "only Label Studio's own files" in errors[902]
    assert "outside" in errors[903] or "root" in errors[903]
    assert "LABELCLEAN_LABEL_STUDIO_URL" in errors[904]
    # Without the machine's labels, the prediction is the model's own label set.
    alone = [{"id": 1, "data": {"image": tasks[0]["data"]["image"]}}]
    bare = post(server, "predict", {"tasks": alone, "label_config": export.config})
    assert bare.status_code == 200 and "result" in bare.json()["results"][0]
    # A label of confidence 0 is not listed; one the model does not know is left out.
    unlisted = [{"label": CLASSES[0][0], "confidence": 0}, {"label": "/x/unknown"}]
    alone[0]["data"]["noisy_labels"] = unlisted
    same = post(server, "predict", {"tasks": alone, "label_config": export.config})
    assert same.json()["results"] == bare.json()["results"]


def event(action: str, annotation: dict, task: dict, config: str, project: int = 7) -> dict:
    """A webhook body as Label Studio sends it (webhooks/utils.py, serializers_for_hooks)."""
    return {"action": action, "annotation": annotation, "task": task,
            "project": {"id": project, "label_config": config, "title": "review"}}  # fmt: skip


def answer(annotation: int, task: int, ticked: list[str], when: str, **extra: object) -> dict:
    result = [{"id": "r1", "from_name": "labels", "to_name": "image", "type": "choices",
               "value": {"choices": ticked}}]  # fmt: skip
    return {"id": annotation, "task": task, "project": 7, "result": result,
            "was_cancelled": False, "updated_at": when, "created_at": when, **extra}  # fmt: skip


def task_rows(reviews: Path, task: int) -> dict[str, tuple[str, int]] | None:
    path = reviews / "labels" / f"p7-t{task}.csv"
    if not path.exists():
        return None
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == ["ImageID", "Source", "LabelName", "Confidence"]
    return {r[2]: (r[0], int(r[3])) for r in rows[1:]}


def test_webhook_reviews_become_verified_labels(backend, export: Export, tmp_path: Path):
    server, reviews = backend
    one, two = export.tasks[0], export.tasks[1]
    t1 = {"id": one["id"], "data": one["data"]}
    t2 = {"id": two["id"], "data": two["data"]}

    def send(body: dict) -> httpx.Response:
        return post(server, "webhook", body)

    def review(action: str, annotation: int, ticked: list[str], hour: int) -> httpx.Response:
        when = f"2026-01-01T{hour:02d}:00:00Z"
        return send(event(action, answer(annotation, t1["id"], ticked, when), t1, export.config))

    ids = {name: label for label, name in CLASSES}

    def expect(task: int, ticked: list[str], image: str) -> None:
        rows = task_rows(reviews, task)
        assert rows == {label: (image, int(name in ticked)) for label, name in CLASSES}

    created = review("ANNOTATION_CREATED", 11, ["Bag", "Coat"], 10)
    assert created.status_code == 200 and created.json()["result"] == {"saved": 1, "withdrawn": 0}
    expect(t1["id"], ["Bag", "Coat"], one["data"]["image_id"])  # every class: 1 ticked, 0 not
    review("ANNOTATION_UPDATED", 11, ["Dress"], 11)
    expect(t1["id"], ["Dress"], one["data"]["image_id"])  # the edit replaces it
    review("ANNOTATION_CREATED", 12, ["Sandal"], 12)
    expect(t1["id"], ["Sandal"], one["data"]["image_id"])  # the latest answer stands
    deleted = send({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 12}],
                    "project": {"id": 7, "label_config": export.config}})  # fmt: skip
    assert deleted.json()["result"] == {"withdrawn": 1}
    expect(t1["id"], ["Dress"], one["data"]["image_id"])  # the one before stands again
    # Two tasks at once (ANNOTATIONS_CREATED), one of them a task without an image_id.
    t3 = {"id": 77, "data": {"image": f"/data/upload/7/{one['data']['image_id']}-x.png"}}
    many = {"action": "ANNOTATIONS_CREATED", "project": {"id": 7, "label_config": export.config},
            "annotation": [answer(21, t2["id"], [], "2026-01-02T10:00:00Z"),
                           answer(31, 77, ["Trouser"], "2026-01-02T10:00:00Z")],
            "task": [t2, t3]}  # fmt: skip
    assert send(many).json()["result"] == {"saved": 2, "withdrawn": 0}
    expect(t2["id"], [], two["data"]["image_id"])  # nothing ticked: all verified absent
    expect(77, ["Trouser"], f"{one['data']['image_id']}-x")
    # Skipping withdraws; deleting the last answer leaves no labels for the task.
    skipped = answer(31, 77, ["Trouser"], "2026-01-03T10:00:00Z", was_cancelled=True)
    assert send(event("ANNOTATION_UPDATED", skipped, t3, export.config)).json()["result"] == {
        "saved": 0, "withdrawn": 1}  # fmt: skip
    assert task_rows(reviews, 77) is None
    send({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 999}], "project": {"id": 7}})
    expect(t1["id"], ["Dress"], one["data"]["image_id"])  # an unknown id changes nothing

    # One CSV of the store, which training reads as human labels.
    joined = tmp_path / "joined.csv"
    assert main(["import-reviews", "--reviews", str(reviews), "--out", str(joined)]) == 0
    index = {label: k for k, (label, _) in enumerate(CLASSES)}
    found = read_annotations(joined, index)
    assert sorted(found.image_ids) == sorted([one["data"]["image_id"], two["data"]["image_id"]])
    row = found.image_ids.index(one["data"]["image_id"])
    assert found.values[row].tolist() == [float(label == ids["Dress"]) for label, _ in CLASSES]

    # The same answers from a JSON export: the latest edited, skipped ones left out.
    exported = [
        {**one, "project": 7, "annotations": [
            answer(11, one["id"], ["Dress"], "2026-01-01T11:00:00Z"),
            answer(12, one["id"], ["Sandal"], "2026-01-01T09:00:00Z")]},
        {**two, "project": 7, "annotations": [answer(21, two["id"], [], "2026-01-02T10:00:00Z")]},
        {"id": 77, "data": t3["data"], "annotations": [skipped]},
        {"id": 78, "data": t3["data"], "annotations": []},
    ]  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps(exported))
    from_export = tmp_path / "from-export.csv"
    model = str(bundle_dir_of(server))
    assert main(["import-reviews", "--label-studio", str(tmp_path / "export.json"),
                 "--model", model, "--out", str(from_export)]) == 0  # fmt: skip
    assert sorted(from_export.read_text().splitlines()) == sorted(joined.read_text().splitlines())


def bundle_dir_of(server: Server) -> Path:
    """The bundle a server serves (its command line)."""
    args = server.process.args
    return Path(args[args.index("--model") + 1])  # type: ignore[union-attr, arg-type]


def test_start_training_starts_nothing_and_says_which_commands_retrain(backend, tmp_path: Path):
    """Label Studio's "Start Training": the service does not train. The answer and the log say
    so, and give the commands that do, with what the service knows filled in: the reviews'
    store, and the deployed run's checkpoint when it lies beside the bundle."""
    from labelclean.service.http.label_studio_training import training_steps

    from labelclean.settings import Settings

    server, reviews = backend
    answer = post(server, "webhook", {"action": "START_TRAINING", "project": {"id": 7}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "not_started"
    assert "training is not started by the service" in body["result"]
    assert "labelclean train --human-extra ... --init ..." in body["result"]
    imports, train, serve = body["steps"]
    assert imports == f"labelclean import-reviews --reviews {reviews} --out reviews.csv"
    assert train == ("labelclean train --data DATA --human-extra reviews.csv "
                     "--init RUN/checkpoint.pt --out NEW_RUN")  # fmt: skip
    assert "/model/reload" in serve
    log = server.log.read_text()
    assert "Label Studio asked to start training: the service does not train" in log
    assert train in log

    run = tmp_path / "run"
    (run / "bundle").mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    steps = training_steps(Settings(model=run / "bundle"))
    assert f"--init {run / 'checkpoint.pt'} " in steps[1]
    assert "set LABELCLEAN_LABEL_STUDIO_REVIEWS" in steps[0]  # reviews are not kept
