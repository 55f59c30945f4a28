"""/classify, /clean, /model, /metrics and API keys against a real uvicorn server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from labelclean.model.bundle import load_bundle
from labelclean.model.cleaning import DEFAULT_LIMITS, prepare_image
from labelclean.model.runtime import OnnxModel

from ..conftest import API_KEY, CLASSES, Server, burst

IDS = [c for c, _ in CLASSES]


@pytest.fixture(scope="module")
def reference(bundle_dir: Path):
    """Scores, cleaned labels and issue scores straight from ONNX Runtime, one image at a time."""
    bundle = load_bundle(bundle_dir)
    model = OnnxModel(bundle, device="cpu")

    def run(image: bytes, noisy: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        x = prepare_image(image, bundle.input, DEFAULT_LIMITS)[None]
        y = np.zeros((1, len(IDS)), np.float32) if noisy is None else noisy[None]
        scores, cleaned, issue = model.run(x, y.astype(np.float32))
        return scores[0], cleaned[0], issue[0]

    return run


def files(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"img{i}.png", data, "image/png")) for i, data in enumerate(images)]


def test_classify_scores_are_the_models(server: Server, images, reference) -> None:
    with server.client() as c:
        r = c.post("/classify", files=files(*images[:3]), data={"threshold": "0"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1, 2]
    assert [x["filename"] for x in results] == ["img0.png", "img1.png", "img2.png"]
    for image, result in zip(images, results, strict=False):
        scores = reference(image)[0]
        got = {label["id"]: label["score"] for label in result["labels"]}
        assert set(got) == set(IDS)  # threshold 0: every class
        np.testing.assert_allclose([got[i] for i in IDS], scores, atol=2e-6)
        listed = [label["score"] for label in result["labels"]]
        assert listed == sorted(listed, reverse=True)
        assert {label["name"] for label in result["labels"]} == {n for _, n in CLASSES}


def test_classify_uses_bundle_thresholds_then_top_k(server: Server, images, reference) -> None:
    scores = reference(images[0])[0]
    with server.client() as c:
        default = c.post("/classify", files=files(images[0])).json()["results"][0]["labels"]
        top2 = c.post("/classify", files=files(images[0]), data={"top_k": "2", "threshold": "0"})
        per_class = c.post(
            "/classify", files=files(images[0]), data={"threshold": json.dumps({IDS[3]: 0.0})}
        ).json()["results"][0]["labels"]
    expected = {IDS[i] for i in np.flatnonzero(scores >= 0.4)}  # the bundle's 0.4
    assert {label["id"] for label in default} == expected
    assert all(label["threshold"] == 0.4 for label in default)
    assert [label["id"] for label in top2.json()["results"][0]["labels"]] == [
        IDS[i] for i in np.argsort(-scores)[:2]
    ]
    assert {label["id"] for label in per_class} == expected | {IDS[3]}


def test_clean_verdicts(server: Server, images, reference) -> None:
    given = [
        IDS[0],
        {"label": IDS[1], "confidence": 0.6},
        IDS[7],
        {"label": IDS[5], "confidence": 0.2},
    ]
    noisy = np.zeros(len(IDS), np.float32)
    noisy[[0, 1, 7, 5]] = [1.0, 0.6, 1.0, 0.2]
    _, cleaned, issue = reference(images[4], noisy)
    expected = {}  # the decision rule (model.decision), applied to the reference's issue scores
    for i, label in enumerate(IDS):
        flagged = issue[i] >= 0.5  # the test bundle's remove and add thresholds
        if noisy[i] > 0:
            expected[label] = "removed" if flagged else "kept"
        elif flagged:
            expected[label] = "added"
    # this image and these labels give every verdict, each issue score well off the threshold
    assert set(expected.values()) == {"kept", "removed", "added"}, expected
    assert np.abs(issue - 0.5).min() > 0.02
    with server.client() as c:
        r = c.post("/clean", files=files(images[4]), data={"labels": json.dumps(given)})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert {v["id"]: v["verdict"] for v in result["labels"]} == expected
    for v in result["labels"]:
        i = IDS.index(v["id"])
        assert v["noisy"] == pytest.approx(float(noisy[i]))
        assert v["cleaned"] == pytest.approx(float(cleaned[i]), abs=2e-6)
        assert v["threshold"] == 0.5
        # the model's issue score: P(wrong) for a given label, P(missing) for an added one
        assert v["issue_score"] == pytest.approx(float(issue[i]), rel=1e-6, abs=1e-9)
        # confidence: P(on the image), what the verdict follows
        present = 1 - issue[i] if noisy[i] > 0 else issue[i]
        assert v["confidence"] == pytest.approx(float(present), rel=1e-6, abs=1e-9)
    assert len({v["issue_score"] for v in result["labels"]}) == len(result["labels"])
    likeliest = [v["confidence"] for v in result["labels"]]
    assert likeliest == sorted(likeliest, reverse=True)  # likeliest first
    assert result["cleaned_labels"] == [
        v["id"] for v in result["labels"] if v["verdict"] != "removed"
    ]


def test_clean_threshold_override_turns_verdicts(server: Server, images) -> None:
    """``threshold`` is the cut on the issue score, for removing and adding alike: at 0 every
    given label is removed and every other added; at 1 (only an issue score of exactly 1
    reaches it) the given labels stay and nothing is added; per label, only that one moves."""
    data = {"labels": json.dumps([IDS[2]])}
    with server.client() as c:
        zero = c.post("/clean", files=files(images[5]), data={**data, "threshold": "0"})
        one = c.post("/clean", files=files(images[5]), data={**data, "threshold": "1"})
        some = json.dumps({IDS[2]: 0, IDS[4]: 0})
        one_label = c.post("/clean", files=files(images[5]), data={**data, "threshold": some})
        default = c.post("/clean", files=files(images[5]), data=data)
    verdicts = {v["id"]: v["verdict"] for v in zero.json()["results"][0]["labels"]}
    assert verdicts == {i: "removed" if i == IDS[2] else "added" for i in IDS}
    assert {
        (v["id"], v["verdict"], v["threshold"]) for v in one.json()["results"][0]["labels"]
    } == {(IDS[2], "kept", 1.0)}
    moved = {v["id"]: v["verdict"] for v in one_label.json()["results"][0]["labels"]}
    before = {v["id"]: v["verdict"] for v in default.json()["results"][0]["labels"]}
    assert moved[IDS[2]] == "removed" and moved[IDS[4]] == "added"
    assert {k: v for k, v in moved.items() if k not in (IDS[2], IDS[4])} == {
        k: v for k, v in before.items() if k not in (IDS[2], IDS[4])
    }


def test_clean_min_precision_uses_that_levels_thresholds(server: Server, images) -> None:
    """min_precision picks the bundle's thresholds for the lowest level at or above it (the
    test bundle: 0.9 -> remove from an issue score of 0.2, add from 0.8); above its highest
    level it is a 422 naming the field."""
    labels = json.dumps([IDS[0], IDS[3], IDS[7]])
    with server.client() as c:
        strict = c.post("/clean", files=files(images[1]),
                        data={"labels": labels, "min_precision": "0.85"})  # fmt: skip
        too_high = c.post("/clean", files=files(images[1]),
                          data={"labels": labels, "min_precision": "0.95"})  # fmt: skip
    assert strict.status_code == 200
    for v in strict.json()["results"][0]["labels"]:
        listed = v["id"] in (IDS[0], IDS[3], IDS[7])
        cut = 0.2 if listed else 0.8
        assert v["threshold"] == pytest.approx(cut)
        expected = ("removed" if v["issue_score"] >= cut else "kept") if listed else "added"
        assert v["verdict"] == expected and (listed or v["issue_score"] >= cut)
    assert too_high.status_code == 422
    error = too_high.json()["error"]
    assert error["field"] == "min_precision" and "at most 0.9" in error["message"]


def test_clean_several_images_keep_their_own_labels(server: Server, images) -> None:
    labels = [json.dumps([IDS[0]]), json.dumps([IDS[9]]), json.dumps([])]
    with server.client() as c:
        r = c.post("/clean", files=files(*images[:3]), data={"labels": labels})
    results = r.json()["results"]
    noisy = [{v["id"] for v in res["labels"] if v["noisy"] > 0} for res in results]
    assert noisy == [{IDS[0]}, {IDS[9]}, set()]


def test_concurrent_requests_are_batched(server: Server, images, reference) -> None:
    def batch_counts() -> tuple[float, float]:
        text = server.metrics()
        count = float(re.search(r"^labelclean_batch_size_count (\S+)$", text, re.M)[1])
        ones = float(re.search(r'^labelclean_batch_size_bucket\{le="1.0"\} (\S+)$', text, re.M)[1])
        return count, ones

    before_count, before_ones = batch_counts()

    results = []
    for first in (0, 24):  # two bursts of 24 concurrent requests
        bodies = [
            httpx.Request(
                "POST",
                f"{server.url}/classify",
                headers=server.headers,
                files=files(images[i % len(images)]),
                data={"threshold": "0"},
            )  # fmt: skip
            for i in range(first, first + 24)
        ]
        for i, body in enumerate(burst(bodies), start=first):
            labels = {x["id"]: x["score"] for x in body["results"][0]["labels"]}
            results.append((i, [labels[c] for c in IDS]))
    after_count, after_ones = batch_counts()
    batches = after_count - before_count
    multi = batches - (after_ones - before_ones)
    print(f"{batches:.0f} batches for 48 requests, {multi:.0f} of more than one image")
    assert multi >= 1, f"no batch larger than one image in {batches} batches"
    assert batches < 48  # 48 requests of one image each went through fewer runs
    for i, scores in results:  # each caller got its own image's scores back
        np.testing.assert_allclose(scores, reference(images[i % len(images)])[0], atol=2e-6)


def test_metrics_count_requests_and_images(server: Server, images) -> None:
    with server.client() as c:
        c.post("/classify", files=files(images[0]))
        c.post("/classify", files=files(b"not an image"))
        text = c.get("/metrics").text
    assert re.search(
        r'labelclean_requests_total\{endpoint="/classify",method="POST",status="200"\} [1-9]', text
    )
    assert re.search(
        r'labelclean_requests_total\{endpoint="/classify",method="POST",status="415"\} [1-9]', text
    )
    assert re.search(r'labelclean_request_duration_seconds_count\{endpoint="/classify"', text)
    assert re.search(r'labelclean_images_total\{endpoint="/classify"\} [1-9]', text)
    for name in ("queue_wait_seconds_count", "inference_seconds_count"):
        assert re.search(rf"^labelclean_{name} [1-9]", text, re.M), name
    assert re.search(r"^labelclean_model_ready 1\.0$", text, re.M)


def test_model_reports_bundle_and_provider(server: Server, bundle_dir: Path) -> None:
    with server.client() as c:
        info = c.get("/model").json()
    assert info["ready"] is True and info["device"] == "cpu"
    assert info["provider"] == "CPUExecutionProvider"
    assert info["classes"] == [{"id": i, "name": n} for i, n in CLASSES]
    assert info["thresholds"] == {"cleaned": [0.5] * 10, "scores": [0.4] * 10}
    assert info["input"]["height"] == 28 and info["input"]["color_mode"] == "L"
    assert info["sha256"] == load_bundle(bundle_dir).sha256
    assert info["metrics"]["AP_all"] == 50.0
    assert info["limits"]["max_images"] == 16 and info["batching"]["max_batch_size"] == 8


@pytest.mark.parametrize(
    "path", [("GET", "/readyz"), ("GET", "/model"), ("GET", "/metrics"), ("POST", "/classify"),
             ("POST", "/clean")],
)  # fmt: skip
@pytest.mark.parametrize("auth", [None, "Bearer wrong-key-0123456789abcdef", f"Basic {API_KEY}"])
def test_api_keys_are_required(server: Server, path: tuple[str, str], auth: str | None) -> None:
    method, url = path
    headers = {"Authorization": auth} if auth else {}
    with server.client() as c:
        c.headers.pop("Authorization")
        r = c.request(method, url, headers=headers, files=files(b"x") if method == "POST" else None)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


def test_healthz_needs_no_key_and_every_key_works(server: Server, images) -> None:
    with server.client() as c:
        c.headers.pop("Authorization")
        assert c.get("/healthz").json() == {"status": "alive"}
        for key in (API_KEY, "another-key-0123456789"):
            r = c.post(
                "/classify", files=files(images[0]), headers={"Authorization": f"Bearer {key}"}
            )
            assert r.status_code == 200


def test_clean_lists_suspected_missing_labels(server: Server, images, reference) -> None:
    """Labels neither given nor added whose issue score reaches 0.5, most likely first; a high
    threshold keeps the cleaner from adding them, the issue score still points at them."""
    found = 0
    with server.client() as c:
        for image in images[:6]:
            _, cleaned, issue = reference(image)
            r = c.post("/clean", files=files(image), data={"labels": "[]", "threshold": "0.95"})
            assert r.status_code == 200, r.text
            result = r.json()["results"][0]
            added = {v["id"] for v in result["labels"]}
            assert added == {IDS[i] for i in np.flatnonzero(cleaned >= 0.95)}
            want = [i for i in np.argsort(-issue, kind="stable") if issue[i] >= 0.5]
            want = [IDS[i] for i in want if IDS[i] not in added]
            got = result["suspected_missing"]
            assert [s["id"] for s in got] == want
            for s in got:
                assert s["issue_score"] == pytest.approx(float(issue[IDS.index(s["id"])]), rel=1e-6)
                assert s["id"] not in result["cleaned_labels"]
            found += len(got)
    assert found > 0  # the images chosen do show the case
