"""POST /model/reload on a real server with two HTTP workers sharing one inference process:
with requests streaming in, the bundle at --model (a symlink) switched to another and reloaded
answers every request (none dropped, none failed), after which every worker's GET /model and
Label Studio's model_version are the new bundle's; the same bundle again changes nothing; a
bundle that does not load is a 409 and the one in service goes on answering. SIGHUP to the
server process does the same (with one worker and with two)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ..conftest import API_KEY, CLASSES, Server, _tiny_bundle, bundle_dir  # noqa: F401 - a fixture


@pytest.fixture(scope="module")
def other_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle's classes with other weights: another sha256."""
    import torch
    from labelclean.model.bundle import LabelClass

    def adjust(net) -> None:
        torch.nn.init.normal_(net.classifier.weight, std=2.0)

    out = tmp_path_factory.mktemp("bundle") / "other"
    classes = [LabelClass(i, n) for i, n in CLASSES]
    return _tiny_bundle(out, classes, adjust, 0.4, metrics={"AP_all": 60.0})


def point(link: Path, target: Path) -> None:
    """Switch the symlink ``link`` to ``target`` at once (a new link renamed over it)."""
    temp = link.with_name(link.name + ".new")
    temp.symlink_to(target)
    os.replace(temp, link)


def sha256_of(server: Server) -> set[str]:
    """The bundle each of several fresh connections is told of (different workers)."""
    found = set()
    for _ in range(8):
        with server.client() as c:
            found.add(c.get("/model").json()["sha256"])
    return found


def test_reload_switches_bundles_without_dropping_requests(
    server_factory: Callable[..., Server], bundle_dir: Path, other_bundle_dir: Path,  # noqa: F811
    tmp_path: Path, images: list[bytes],
) -> None:  # fmt: skip
    from labelclean.model.bundle import load_bundle

    first, second = load_bundle(bundle_dir).sha256, load_bundle(other_bundle_dir).sha256
    assert first != second
    current = tmp_path / "current"
    current.symlink_to(bundle_dir)
    env = {"LABELCLEAN_API_KEYS": API_KEY, "LABELCLEAN_DEVICE": "cpu"}
    server = server_factory(current, env, args=("--workers", "2"))
    assert sha256_of(server) == {first}

    with server.client() as c:
        same = c.post("/model/reload")
        assert same.status_code == 200, same.text
        assert same.json()["changed"] is False and same.json()["sha256"] == first
        assert httpx.post(f"{server.url}/model/reload").status_code == 401  # a key is needed

    statuses: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        with server.client() as c:
            while not stop.is_set():
                files = [("image", ("a.png", images[len(statuses) % len(images)], "image/png"))]
                statuses.append(c.post("/classify", files=files).status_code)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        while len(statuses) < 6:  # requests are streaming in
            threading.Event().wait(0.05)
        point(current, other_bundle_dir)
        with server.client() as c:
            answer = c.post("/model/reload")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["changed"], body["sha256"], body["previous_sha256"]) == (True, second, first)
        assert body["model_version"] == f"labelclean-{second[:12]}"
        before = len(statuses)
        while len(statuses) < before + 6:  # requests keep being answered by the new model
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert set(statuses) == {200}, statuses
    print(f"{len(statuses)} requests answered across the reload")
    assert sha256_of(server) == {second}  # every worker
    with server.client() as c:
        setup = c.post("/label-studio/setup", json={"project": "1.1", "schema": (
            '<View><Image name="i" value="$image"/><Choices name="c" toName="i">'
            '<Choice value="Bag"/></Choices></View>')})  # fmt: skip
        assert setup.json() == {"model_version": f"labelclean-{second[:12]}"}

    # A bundle that does not load: refused, and the one in service answers on.
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    point(current, broken)
    with server.client() as c:
        refused = c.post("/model/reload")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "bundle_rejected"
        files = [("image", ("a.png", images[0], "image/png"))]
        assert c.post("/classify", files=files).status_code == 200
    assert sha256_of(server) == {second}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_the_bundle_as_the_admin_call_does(
    server_factory: Callable[..., Server], bundle_dir: Path, other_bundle_dir: Path,  # noqa: F811
    tmp_path: Path, images: list[bytes], workers: str,
) -> None:  # fmt: skip
    """SIGHUP to the `labelclean serve` process: the bundle now at --model serves (every worker's
    GET /model), with a log line; the same bundle again changes nothing; one that does not load
    is logged and the one in service answers on; the server stays up throughout."""
    from labelclean.model.bundle import load_bundle

    first, second = load_bundle(bundle_dir).sha256, load_bundle(other_bundle_dir).sha256
    current = tmp_path / "current"
    current.symlink_to(bundle_dir)
    env = {"LABELCLEAN_API_KEYS": API_KEY, "LABELCLEAN_DEVICE": "cpu"}
    server = server_factory(current, env, args=("--workers", workers))
    assert sha256_of(server) == {first}

    def logged(text: str, times: int = 1) -> Callable[[], bool]:
        return lambda: server.log.read_text(errors="replace").count(text) >= times

    point(current, other_bundle_dir)
    os.kill(server.process.pid, signal.SIGHUP)
    wait_until(lambda: sha256_of(server) == {second}, "every worker to serve the new bundle")
    wait_until(logged(f"SIGHUP: now serving {current} (sha256 {second[:12]})"), "the log line")
    with server.client() as c:
        files = [("image", ("a.png", images[0], "image/png"))]
        assert c.post("/classify", files=files).status_code == 200

    os.kill(server.process.pid, signal.SIGHUP)  # the same bundle
    wait_until(logged("SIGHUP: already serving, nothing changed"), "the same bundle's log line")

    broken = tmp_path / "broken"
    shutil.copytree(other_bundle_dir, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    point(current, broken)
    os.kill(server.process.pid, signal.SIGHUP)
    wait_until(logged("the model in service goes on serving"), "the refusal's log line")
    assert server.process.poll() is None
    with server.client() as c:
        assert c.post("/classify", files=files).status_code == 200
        assert c.get("/readyz").status_code == 200
    assert sha256_of(server) == {second}
    assert "restarting processes" not in server.log.read_text(errors="replace")  # uvicorn's HUP


def test_only_admin_keys_reload_and_start_training(
    server_factory: Callable[..., Server], bundle_dir: Path, other_bundle_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:  # fmt: skip
    """With LABELCLEAN_ADMIN_KEYS, a team's key may use the model but not change it for every
    team: POST /model/reload and Label Studio's Start Training answer it 403, naming the key;
    an admin key does both. Unset (every other test), any key may."""
    from labelclean.model.bundle import load_bundle

    team, ops = "team-a:team-a-key-0123456789", "ops:ops-key-0123456789abc"
    current = tmp_path / "current"
    current.symlink_to(bundle_dir)
    env = {"LABELCLEAN_API_KEYS": f"{team},{ops},{API_KEY}", "LABELCLEAN_ADMIN_KEYS": "ops",
           "LABELCLEAN_DEVICE": "cpu"}  # fmt: skip
    server = server_factory(current, env)
    as_team = {"Authorization": f"Bearer {team.split(':', 1)[1]}"}
    as_ops = {"Authorization": f"Bearer {ops.split(':', 1)[1]}"}
    point(current, other_bundle_dir)
    start = {"action": "START_TRAINING", "project": {"id": 1}}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/model", headers=as_team).status_code == 200  # using it: any key
        refused = c.post("/model/reload", headers=as_team)
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["code"] == "forbidden"
        assert error["message"] == ("the API key 'team-a' may not do POST /model/reload: only "
                                    "LABELCLEAN_ADMIN_KEYS (ops) may")  # fmt: skip
        assert c.get("/model", headers=as_team).json()["sha256"] == load_bundle(bundle_dir).sha256
        hook = c.post("/label-studio/webhook", json=start, headers=as_team)
        assert hook.status_code == 403 and "Start Training" in hook.json()["error"]["message"]
        assert c.post("/model/reload", headers={"Authorization": "Bearer nope"}).status_code == 401

        reloaded = c.post("/model/reload", headers=as_ops)
        assert reloaded.status_code == 200 and reloaded.json()["changed"], reloaded.text
        hook = c.post("/label-studio/webhook", json=start, headers=as_ops)
        assert hook.status_code == 200 and hook.json()["status"] == "not_started"


@pytest.mark.parametrize(
    ("admins", "keys", "message"),
    [("ops,nobody", "ops:ops-key-0123456789abc", "admin_keys names nobody: not the name of any"),
     ("ops", "team-a:team-a-key-0123456789", r"names ops: .*\(API_KEYS names: team-a\)")],
)  # fmt: skip
def test_admin_keys_must_name_api_keys(admins: str, keys: str, message: str) -> None:
    from labelclean.settings import Settings

    with pytest.raises(ValueError, match=message):
        Settings(admin_keys=admins, api_keys=keys)
