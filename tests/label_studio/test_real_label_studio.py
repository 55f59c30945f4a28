"""The annotation loop with a real Label Studio (studio.py: its own virtual environment,
a free loopback port, a fresh data folder) and the real service:

a project from `labelclean review`'s config, its tasks imported without predictions (images as
Label Studio local files) and one image uploaded; the service connected as the ML backend with
basic auth (a key as the password), Label Studio asks it for every task's prediction: they are
what the review export predicted; reviews posted, edited, skipped and deleted through Label
Studio's API reach the service by the backend's webhook (given the key as a header) and become
verified labels, the same ones `labelclean import-reviews` reads from Label Studio's own
export. A new bundle reloaded in the service (POST /model/reload) gives Label Studio a new model
version, and it predicts every task again. With the webhook switched off, no review comes back
and this test fails."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from labelclean.cli import main

from ..service.conftest import API_KEY, CLASSES, Server, bundle_dir  # noqa: F401 - a fixture
from ..service.test_reload import other_bundle_dir, point  # noqa: F401 - a fixture
from .conftest import Export, service_env
from .studio import label_studio

pytestmark = pytest.mark.timeout(600)
WAIT_S = 30  # for the webhook's effect (Label Studio sends it before it answers)


def choices(ticked: list[str]) -> list[dict]:
    return [{"from_name": "labels", "to_name": "image", "type": "choices",
             "value": {"choices": ticked}}]  # fmt: skip


def store_rows(reviews: Path, project: int, task: int) -> dict[str, tuple[str, int]] | None:
    path = reviews / "labels" / f"p{project}-t{task}.csv"
    if not path.exists():
        return None
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return {r[2]: (r[0], int(r[3])) for r in rows[1:]}


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"after {WAIT_S} s: {what}")
        time.sleep(0.2)


def test_label_studio_predicts_with_the_backend_and_reviews_come_back(
    export: Export, server_factory: Callable[..., Server], bundle_dir: Path,  # noqa: F811
    other_bundle_dir: Path, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    # The export with Label Studio's own image URLs (local files), as a user makes it.
    out = tmp_path / "review"
    assert main(["review", "--model", str(bundle_dir), "--data", str(export.data),
                 "--out", str(out), "--format", "label-studio", "--quiet"]) == 0  # fmt: skip
    tasks = json.loads((out / "label-studio-tasks.json").read_text())
    config = (out / "label-studio-config.xml").read_text()
    exported = {t["data"]["image_id"]: t["predictions"][0] for t in tasks}
    reviews = tmp_path / "reviews"

    with label_studio(tmp_path / "ls", images=export.images) as ls, ls.api as api:
        print(f"Label Studio up in {ls.started_s:.1f} s")
        current = tmp_path / "current"  # the deployed bundle, switched later
        current.symlink_to(bundle_dir)
        service = server_factory(current, service_env(
            export.images, reviews, LABELCLEAN_LABEL_STUDIO_URL=ls.url,
            LABELCLEAN_LABEL_STUDIO_TOKEN=ls.token,
        ))  # fmt: skip
        project = api.post("/api/projects", json={"title": "labelclean review",
                                                  "label_config": config}).json()["id"]  # fmt: skip
        storage = api.post("/api/storages/localfiles", json={
            "project": project, "path": str(export.images), "title": "images",
            "use_blob_urls": False,
        })  # fmt: skip
        assert storage.status_code == 201, storage.text
        imported = api.post(f"/api/projects/{project}/import",
                            json=[{"data": t["data"]} for t in tasks])  # fmt: skip
        assert imported.status_code == 201, imported.text
        upload = (export.images / "img-000.png").read_bytes()
        uploaded = api.post(f"/api/projects/{project}/import",
                            files={"file": ("uploaded-000.png", upload, "image/png")})  # fmt: skip
        assert uploaded.status_code == 201, uploaded.text
        listed = api.get("/api/tasks", params={"project": project, "page_size": 1000}).json()
        by_image = {t["data"].get("image_id", "uploaded"): t for t in listed["tasks"]}
        assert len(by_image) == len(tasks) + 1
        assert by_image["uploaded"]["data"]["image"].startswith("/data/upload/")

        # Connect the backend: Label Studio checks /health and /setup, takes model_version.
        backend = api.post("/api/ml", json={
            "project": project, "url": f"{service.url}/label-studio", "title": "labelclean",
            "auth_method": "BASIC_AUTH", "basic_auth_user": "label-studio",
            "basic_auth_pass": API_KEY,
        })  # fmt: skip
        assert backend.status_code == 201, backend.text
        version = tasks[0]["predictions"][0]["model_version"]
        state = api.get(f"/api/ml/{backend.json()['id']}").json()
        assert (state["state"], state["model_version"]) == ("CO", version), state

        # Label Studio asks for every task's prediction (Data Manager: Retrieve Predictions).
        asked = api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                                    "project": project},
                         json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
        assert asked.status_code == 200, asked.text
        predictions = api.get("/api/predictions", params={"project": project}).json()
        by_task = {p["task"]: p for p in predictions}
        assert set(by_task) == {t["id"] for t in by_image.values()}
        for image, task in by_image.items():
            got = by_task[task["id"]]
            assert got["model_version"] == version
            if image == "uploaded":  # fetched from Label Studio with the token
                assert got["score"] is not None and 0 <= got["score"] <= 1
                continue
            want = exported[image]
            assert [r["value"] for r in got["result"]] == [r["value"] for r in want["result"]]
            assert got["score"] == pytest.approx(want["score"], abs=2e-6)

        # The backend's webhook, made by Label Studio with the backend, needs the key.
        hooks = api.get("/api/webhooks", params={"project": project}).json()
        [hook] = [h for h in hooks if h["url"] == f"{service.url}/label-studio/webhook"]
        patched = api.patch(f"/api/webhooks/{hook['id']}",
                            json={"headers": {"Authorization": f"Bearer {API_KEY}"}})  # fmt: skip
        assert patched.status_code == 200, patched.text

        # Reviews: one edited, one with nothing ticked, one skipped, one deleted.
        images = sorted(i for i in by_image if i != "uploaded")[:4]
        edited, empty, skipped, deleted = (by_image[i]["id"] for i in images)

        def annotate(task: int, ticked: list[str], **extra: object) -> int:
            answer = api.post(f"/api/tasks/{task}/annotations",
                              json={"result": choices(ticked), **extra})  # fmt: skip
            assert answer.status_code == 201, answer.text
            return answer.json()["id"]

        first = annotate(edited, ["Bag", "Coat"])
        annotate(empty, [])
        annotate(skipped, ["Dress"], was_cancelled=True)
        gone = annotate(deleted, ["Sandal"])

        def expect(task: int, image: str, ticked: list[str]) -> Callable[[], bool]:
            want = {label: (image, int(name in ticked)) for label, name in CLASSES}
            return lambda: store_rows(reviews, project, task) == want

        wait_for(expect(edited, images[0], ["Bag", "Coat"]), "the first review as labels")
        wait_for(expect(empty, images[1], []), "a review ticking nothing: all absent")
        wait_for(expect(deleted, images[3], ["Sandal"]), "the review to be deleted")
        assert store_rows(reviews, project, skipped) is None  # a skip verifies nothing
        edit = api.patch(f"/api/annotations/{first}", json={"result": choices(["Shirt"])})
        assert edit.status_code == 200, edit.text
        wait_for(expect(edited, images[0], ["Shirt"]), "the edit to replace the review")
        assert api.delete(f"/api/annotations/{gone}").status_code == 204
        wait_for(lambda: store_rows(reviews, project, deleted) is None, "the deletion")

        # A new bundle in service: Label Studio takes its model version and predicts anew.
        point(current, other_bundle_dir)
        with service.client() as c:
            reloaded = c.post("/model/reload").json()
        assert reloaded["changed"] and reloaded["model_version"] != version
        asked = api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                                    "project": project},
                         json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
        assert asked.status_code == 200, asked.text
        state = api.get(f"/api/ml/{backend.json()['id']}").json()
        assert state["model_version"] == reloaded["model_version"]
        predictions = api.get("/api/predictions", params={"project": project}).json()
        newer = {p["task"] for p in predictions if p["model_version"] == state["model_version"]}
        assert newer == {t["id"] for t in by_image.values()}

        # Label Studio's own export reads the same: import-reviews from either agrees.
        dump = api.get(f"/api/projects/{project}/export", params={"exportType": "JSON"})
        assert dump.status_code == 200, dump.text
        (tmp_path / "export.json").write_bytes(dump.content)

    from_export, from_store = tmp_path / "from-export.csv", tmp_path / "from-store.csv"
    assert main(["import-reviews", "--label-studio", str(tmp_path / "export.json"),
                 "--model", str(bundle_dir), "--config", str(out / "label-studio-config.xml"),
                 "--out", str(from_export)]) == 0  # fmt: skip
    assert main(["import-reviews", "--reviews", str(reviews), "--out", str(from_store)]) == 0
    lines = from_store.read_text().splitlines()
    assert len(lines) == 1 + 2 * len(CLASSES)  # the edited review and the empty one
    assert sorted(from_export.read_text().splitlines()) == sorted(lines)
