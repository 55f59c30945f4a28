"""The annotation loop with a real Label Studio (studio.py: its own virtual environment, a free
loopback port, a fresh data folder) and the real service, on a tiny demo data set:

a model trained on it is deployed (``--model`` a symlink); a project from `labelclean review`'s
config, its tasks imported without predictions (images as Label Studio local files) and one
image uploaded; the service connected as the ML backend with basic auth (a key as the
password), Label Studio asks it for every task's prediction: they are what the review export
predicted. Reviews posted, edited, skipped and deleted through Label Studio's API reach the
service by the backend's webhook (given the key as a header) and become verified labels, the
same ones `labelclean import-reviews` reads from Label Studio's own export. Label Studio's Start
Training queues a retraining job that `labelclean train-worker` runs: with them, from the
deployed model (--human-extra, --init), it moves the reviewed images from T to V; reloaded
in the service (POST /model/reload), it gives Label Studio a new model version, and Label Studio
predicts every task again. With the webhook switched off, no review comes back and this test
fails."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from labelclean.cli import main

from ....conftest import FAST_TRAIN, TINY
from ...conftest import API_KEY, Server
from ...http.test_reload import point
from ...jobs.conftest import RedisServer, redis_factory  # noqa: F401 - fixture
from .conftest import service_env
from .studio import label_studio

pytestmark = pytest.mark.timeout(900)
WAIT_S = 30  # for the webhook's effect (Label Studio sends it before it answers)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo data set (40 verified images; the retrain adds two)."""
    from labelclean.training.demo_data import build_demo_data

    out = tmp_path_factory.mktemp("ls-demo") / "data"
    build_demo_data(out, seed=0, **TINY)
    return out


@pytest.fixture(scope="module")
def deployed(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the demo data: the one in service first."""
    out = tmp_path_factory.mktemp("deployed") / "run"
    assert main(["train", "--data", str(demo_data), "--out", str(out), *FAST_TRAIN]) == 0
    return out / "bundle"


def choices(ticked: list[str]) -> list[dict]:
    return [{"from_name": "labels", "to_name": "image", "type": "choices",
             "value": {"choices": ticked}}]  # fmt: skip


def image_ids(path: Path) -> set[str]:
    with path.open(newline="") as fh:
        return {row["ImageID"] for row in csv.DictReader(fh)}


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


def retrieve_predictions(api, project: int) -> dict[int, dict]:  # noqa: ANN001
    """Data Manager, all tasks, Actions: Retrieve Predictions; task id -> its latest one."""
    asked = api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                                "project": project},
                     json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
    assert asked.status_code == 200, asked.text
    predictions = api.get("/api/predictions", params={"project": project}).json()
    return {p["task"]: p for p in sorted(predictions, key=lambda p: p["id"])}


def test_label_studio_loop_predict_review_retrain_reload(
    demo_data: Path, deployed: Path, server_factory: Callable[..., Server], tmp_path: Path,
    redis_factory: Callable[..., RedisServer],  # noqa: F811
) -> None:  # fmt: skip
    images = (demo_data / "images").resolve()
    out = tmp_path / "review"
    assert main(["review", "--model", str(deployed), "--data", str(demo_data), "--out", str(out),
                 "--format", "label-studio", "--min-issue", "0.3", "--quiet"]) == 0  # fmt: skip
    tasks = json.loads((out / "label-studio-tasks.json").read_text())
    config = (out / "label-studio-config.xml").read_text()
    classes = [(c.get("hint"), c.get("value")) for c in ET.fromstring(config).iter("Choice")]
    exported = {t["data"]["image_id"]: t["predictions"][0] for t in tasks}
    in_t = image_ids(demo_data / "train-annotations-machine-imagelabels.csv") - image_ids(
        demo_data / "train-annotations-human-imagelabels.csv")  # fmt: skip
    reviews = tmp_path / "reviews"
    current = tmp_path / "current"  # the deployed bundle, switched after the retrain
    current.symlink_to(deployed)

    with label_studio(tmp_path / "ls", images=images) as ls, ls.api as api:
        print(f"Label Studio up in {ls.started_s:.1f} s")
        env = service_env(
            images, reviews, LABELCLEAN_LABEL_STUDIO_URL=ls.url,
            LABELCLEAN_LABEL_STUDIO_TOKEN=ls.token, LABELCLEAN_MAX_IMAGES="16",
            LABELCLEAN_REDIS_URL=redis_factory().url, LABELCLEAN_MODEL=str(current),
            LABELCLEAN_TRAINING_DATA=str(demo_data),
            LABELCLEAN_TRAINING_RUNS=str(tmp_path / "runs"),
            LABELCLEAN_TRAINING_ARGS=shlex.join(FAST_TRAIN),
        )  # fmt: skip
        service = server_factory(current, env)
        outside = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
        training_env = {**outside, **env}
        project = api.post("/api/projects", json={"title": "labelclean review",
                                                  "label_config": config}).json()["id"]  # fmt: skip
        storage = api.post("/api/storages/localfiles", json={
            "project": project, "path": str(images), "title": "images", "use_blob_urls": False,
        })  # fmt: skip
        assert storage.status_code == 201, storage.text
        imported = api.post(f"/api/projects/{project}/import",
                            json=[{"data": t["data"]} for t in tasks])  # fmt: skip
        assert imported.status_code == 201, imported.text
        upload = next(images.iterdir()).read_bytes()
        uploaded = api.post(f"/api/projects/{project}/import",
                            files={"file": ("uploaded.png", upload, "image/png")})  # fmt: skip
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
        ml = f"/api/ml/{backend.json()['id']}"
        version = tasks[0]["predictions"][0]["model_version"]
        state = api.get(ml).json()
        assert (state["state"], state["model_version"]) == ("CO", version), state

        # Label Studio asks for every task's prediction: the export's, for the same model.
        by_task = retrieve_predictions(api, project)
        assert set(by_task) == {t["id"] for t in by_image.values()}
        for image, task in by_image.items():
            got = by_task[task["id"]]
            assert got["model_version"] == version
            if image == "uploaded":  # fetched from Label Studio with the token
                assert got["score"] is not None and 0 <= got["score"] <= 1
                continue
            want = exported[image]
            assert [r["value"] for r in got["result"]] == [r["value"] for r in want["result"]]
            # ONNX Runtime's float noise between batch sizes (the export ran 32 images a batch,
            # the backend however many Label Studio's call held): up to ~6e-5 on this model.
            assert got["score"] == pytest.approx(want["score"], abs=2e-4)

        # The backend's webhook, made by Label Studio with the backend, needs the key.
        hooks = api.get("/api/webhooks", params={"project": project}).json()
        [hook] = [h for h in hooks if h["url"] == f"{service.url}/label-studio/webhook"]
        patched = api.patch(f"/api/webhooks/{hook['id']}",
                            json={"headers": {"Authorization": f"Bearer {API_KEY}"}})  # fmt: skip
        assert patched.status_code == 200, patched.text

        # Reviews of four T images: one edited, one with nothing ticked, one skipped, one
        # deleted.
        picked = sorted(i for i in by_image if i in in_t)[:4]
        assert len(picked) == 4
        edited, empty, skipped, deleted = (by_image[i]["id"] for i in picked)
        names = [name for _, name in classes]

        def annotate(task: int, ticked: list[str], **extra: object) -> int:
            answer = api.post(f"/api/tasks/{task}/annotations",
                              json={"result": choices(ticked), **extra})  # fmt: skip
            assert answer.status_code == 201, answer.text
            return answer.json()["id"]

        def expect(task: int, image: str, ticked: list[str]) -> Callable[[], bool]:
            want = {label: (image, int(name in ticked)) for label, name in classes}
            return lambda: store_rows(reviews, project, task) == want

        first = annotate(edited, names[:2])
        annotate(empty, [])
        annotate(skipped, names[2:3], was_cancelled=True)
        gone = annotate(deleted, names[3:4])
        wait_for(expect(edited, picked[0], names[:2]), "the first review as labels")
        wait_for(expect(empty, picked[1], []), "a review ticking nothing: all absent")
        wait_for(expect(deleted, picked[3], names[3:4]), "the review to be deleted")
        assert store_rows(reviews, project, skipped) is None  # a skip verifies nothing
        edit = api.patch(f"/api/annotations/{first}", json={"result": choices(names[4:5])})
        assert edit.status_code == 200, edit.text
        wait_for(expect(edited, picked[0], names[4:5]), "the edit to replace the review")
        assert api.delete(f"/api/annotations/{gone}").status_code == 204
        wait_for(lambda: store_rows(reviews, project, deleted) is None, "the deletion")

        # Label Studio's own export reads the same: import-reviews from either agrees.
        dump = api.get(f"/api/projects/{project}/export", params={"exportType": "JSON"})
        assert dump.status_code == 200, dump.text
        (tmp_path / "export.json").write_bytes(dump.content)
        from_export, from_store = tmp_path / "from-export.csv", tmp_path / "from-store.csv"
        assert main(["import-reviews", "--label-studio", str(tmp_path / "export.json"),
                     "--model", str(deployed), "--config", str(out / "label-studio-config.xml"),
                     "--out", str(from_export)]) == 0  # fmt: skip
        assert main(["import-reviews", "--reviews", str(reviews), "--out", str(from_store)]) == 0
        lines = from_store.read_text().splitlines()
        assert len(lines) == 1 + 2 * len(classes)  # the edited review and the empty one
        assert sorted(from_export.read_text().splitlines()) == sorted(lines)

        # Start Training in Label Studio: it sends START_TRAINING to the backend, which queues
        # a retraining job; a training worker retrains with the webhook's reviews from the
        # deployed model (its bundle folder stands for its run's checkpoint): the two reviewed
        # images move from T to V.
        trained = api.post(f"{ml}/train", json={})
        assert trained.status_code == 200, trained.text
        with service.client() as c:
            [job] = c.get("/label-studio/training").json()["jobs"]
        assert job["state"] == "queued" and job["project"] == str(project), job
        worker = subprocess.run(
            [sys.executable, "-m", "labelclean", "train-worker", "--burst"],
            env=training_env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stdout + worker.stderr
        with service.client() as c:
            job = c.get(f"/label-studio/training/{job['id']}").json()
        assert job["state"] == "succeeded", job
        run, start = Path(job["run"]), (deployed.parent / "checkpoint.pt").resolve()
        assert (run.parent / "reviews.csv").read_text() == from_store.read_text()
        before = json.loads((deployed.parent / "report.json").read_text())["sizes"]
        after = json.loads((run / "report.json").read_text())
        assert (after["sizes"]["T"], after["sizes"]["V"]) == (before["T"] - 2, before["V"] + 2)
        assert after["start"]["init"] == str(start)

        # The retrained model in service: Label Studio takes its version, predicts anew.
        point(current, run / "bundle")
        with service.client() as c:
            reloaded = c.post("/model/reload").json()
        assert reloaded["changed"] and reloaded["model_version"] != version
        newer = retrieve_predictions(api, project)
        assert api.get(ml).json()["model_version"] == reloaded["model_version"]
        assert {t: p["model_version"] for t, p in newer.items()} == {
            t["id"]: reloaded["model_version"] for t in by_image.values()
        }
