"""The pieces behind the endpoints, on their own: label parsing, verdicts, the one cleaning
path used without HTTP, the dynamic batcher, and settings that refuse unsafe values."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from labelclean.model.bundle import LabelClass, label_index, load_bundle
from labelclean.model.classifying import classify_images
from labelclean.model.cleaning import clean_images_sync, verdicts
from labelclean.model.decision import Decision
from labelclean.model.labels import InputError, parse_labels, parse_thresholds
from labelclean.model.runtime import OnnxModel
from labelclean.service.inference.batcher import DynamicBatcher
from pydantic import ValidationError

from labelclean.settings import Settings, decode_threads

from ..conftest import Server

CLASSES = [LabelClass(f"/x/{i}", f"class {i}") for i in range(4)]
INDEX = label_index(CLASSES)


def test_parse_labels_ids_and_confidences() -> None:
    y, unknown = parse_labels('["/x/1", {"label": "/x/3", "confidence": 0.25}, "/q"]', INDEX)
    assert y.tolist() == [0.0, 1.0, 0.0, 0.25] and unknown == ["/q"]
    assert parse_labels([], INDEX)[0].tolist() == [0.0] * 4


@pytest.mark.parametrize(
    "value, message",
    [("{", "not valid JSON"), ('"/x/1"', "JSON array"), ("[1]", "label ids"),
     ('[{"label": "/x/1", "confidence": 0}]', "above 0"),
     ('[{"label": "/x/1", "confidence": true}]', "must be a number"),
     ('[{"label": "/x/1", "extra": 1}]', 'string "label"'), ('["/x/1", "/x/1"]', "twice")],
)  # fmt: skip
def test_parse_labels_refuses(value: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        parse_labels(value, INDEX, field="labels[2]")
    assert info.value.field == "labels[2]"


def test_parse_thresholds() -> None:
    defaults = [0.5, 0.5, 0.5, 0.5]
    assert parse_thresholds(None, INDEX, defaults).tolist() == defaults
    assert parse_thresholds("0.25", INDEX, defaults).tolist() == [0.25] * 4
    assert parse_thresholds('{"/x/2": 0}', INDEX, defaults).tolist() == [0.5, 0.5, 0, 0.5]
    with pytest.raises(InputError) as info:
        parse_thresholds('{"/x/9": 0.1, "/x/8": 0.2}', INDEX, defaults)
    assert info.value.code == "unknown_labels" and info.value.unknown == ["/x/9", "/x/8"]
    for bad in ("-0.1", "1.5", "NaN", "[0.1]"):
        with pytest.raises(InputError):
            parse_thresholds(bad, INDEX, defaults)


def test_a_request_override_never_changes_the_bundles_thresholds(bundle_dir: Path, images) -> None:
    """The bundle's index and threshold arrays are built once and shared by every request."""
    bundle = load_bundle(bundle_dir)
    decision = bundle.require_decision()
    before = decision.remove.tolist(), decision.add.tolist(), bundle.cleaned_thresholds.tolist()
    assert bundle.index is bundle.index and bundle.index["/fm/bag"] == [
        c.id for c in bundle.classes
    ].index("/fm/bag")
    with pytest.raises(ValueError, match="read-only"):
        parse_thresholds(None, bundle.index, bundle.cleaned_thresholds)[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        decision.cuts()[0][0] = 0.0
    model = OnnxModel(bundle)
    for override in ("1", '{"/fm/bag": 1}'):
        (result,) = clean_images_sync(
            bundle, images[:1], ['["/fm/bag"]'], predict=model.run, thresholds=override
        )
        assert [v.threshold for v in result.labels if v.id == "/fm/bag"] == [1.0]
    after = decision.remove.tolist(), decision.add.tolist(), bundle.cleaned_thresholds.tolist()
    assert after == before
    default = clean_images_sync(bundle, images[:1], ['["/fm/bag"]'], predict=model.run)
    assert [v.threshold for v in default[0].labels] == [
        round(before[0 if v.id == "/fm/bag" else 1][bundle.index[v.id]], 6)
        for v in default[0].labels
    ]


def test_top_k_keeps_the_best_scores_and_breaks_ties_by_class_order(bundle_dir: Path, images):
    bundle = load_bundle(bundle_dir)
    d = bundle.num_classes
    scores = np.full((1, d), 0.3, np.float32)
    scores[0, [4, 1, 7]] = [0.9, 0.6, 0.6]  # 1 and 7 tie; 0.3 everywhere else ties too

    def predict(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return scores, y

    def top(k: int | None) -> list[int]:
        labels = asyncio.run(classify_images(bundle, images[:1], predict=predict, threshold=0.2,
                                             top_k=k))[0]  # fmt: skip
        return [bundle.index[x.id] for x in labels]

    assert top(None) == [4, 1, 7] + [i for i in range(d) if i not in (4, 1, 7)]
    assert top(2) == [4, 1]
    assert top(3) == [4, 1, 7]
    assert top(5) == [4, 1, 7, 0, 2]


def test_verdicts_follow_the_issue_score_and_show_c() -> None:
    """Rule issue: a listed label goes when its issue score reaches its remove threshold, an
    unlisted one comes when its issue score reaches its add threshold, whatever c says."""
    noisy = np.array([1.0, 0.7, 0.0, 0.0], np.float32)
    cleaned = np.array([0.2, 0.9, 0.1, 0.8], np.float32)  # c disagrees on every label
    issue = np.array([0.1, 0.6, 0.7, 0.3], np.float32)
    remove, add = np.full(4, 0.5, np.float32), np.array([0.5, 0.5, 0.65, 0.5], np.float32)
    decision = Decision("issue", "f1", remove, add, remove, np.zeros(4, bool))
    result = verdicts(CLASSES, noisy, cleaned, issue, decision, remove, add)
    assert [(v.id, v.verdict, v.threshold) for v in result.labels] == [
        ("/x/0", "kept", 0.5), ("/x/2", "added", 0.65), ("/x/1", "removed", 0.5)
    ]  # fmt: skip
    assert [v.confidence for v in result.labels] == pytest.approx([0.9, 0.7, 0.4])
    assert [v.cleaned for v in result.labels] == pytest.approx([0.2, 0.1, 0.9])
    assert result.cleaned_labels == ["/x/0", "/x/2"]
    assert result.labels[2].noisy == 0.7  # the request's value, not its float32 neighbour
    paper = Decision.paper(remove)  # the paper's rule on the same scores: c decides
    result = verdicts(CLASSES, noisy, cleaned, issue, paper, remove, remove)
    assert {v.id: v.verdict for v in result.labels} == {
        "/x/0": "removed",
        "/x/1": "kept",
        "/x/3": "added",
    }


def test_offline_path_matches_the_http_endpoint(server: Server, bundle_dir: Path, images) -> None:
    """The CLI/worker call clean_images with OnnxModel.run; /clean calls it with the batcher."""
    bundle = load_bundle(bundle_dir)
    labels = ['["/fm/bag"]', '[{"label": "/fm/coat", "confidence": 0.3}]']
    offline = clean_images_sync(bundle, images[:2], labels, predict=OnnxModel(bundle).run)
    with server.client() as c:
        files = [("image", ("a", data)) for data in images[:2]]
        online = c.post("/clean", files=files, data={"labels": labels}).json()["results"]
    for mine, theirs in zip(offline, online, strict=True):
        assert [v.id for v in mine.labels] == [v["id"] for v in theirs["labels"]]
        assert [v.verdict for v in mine.labels] == [v["verdict"] for v in theirs["labels"]]
        np.testing.assert_allclose(
            [v.cleaned for v in mine.labels], [v["cleaned"] for v in theirs["labels"]], atol=2e-6
        )


class SlowModel:
    """Stands in for OnnxModel.run: 20 ms per call, records batch sizes and its thread."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads: set[str] = set()

    def run(self, images: np.ndarray, noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.sizes.append(len(images))
        self.threads.add(threading.current_thread().name)
        time.sleep(0.02)
        return images.reshape(len(images), -1)[:, :2] * 2, noisy + 1


async def _run_batcher(model: SlowModel, n: int, *, max_batch: int, delay: float) -> list:
    batcher = DynamicBatcher(model.run, max_batch_size=max_batch, max_queue_delay_s=delay)
    batcher.start()

    async def one(i: int):
        async with batcher.expect(1) as predict:
            await asyncio.sleep(0.001 * (i % 3))  # decoding takes a little while
            x = np.full((1, 1, 1, 2), i, np.float32)
            return await predict(x, np.full((1, 3), i, np.float32))

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await batcher.stop()


def test_batcher_gathers_concurrent_callers_and_answers_each() -> None:
    model = SlowModel()
    results = asyncio.run(_run_batcher(model, 40, max_batch=16, delay=0.05))
    for i, (scores, cleaned) in enumerate(results):
        assert scores.tolist() == [[2 * i, 2 * i]] and cleaned.tolist() == [[i + 1] * 3]
    assert sum(model.sizes) == 40 and max(model.sizes) <= 16 and len(model.sizes) <= 5
    assert model.threads == {"inference_0"}  # one worker thread, never the event loop's


def test_lone_request_does_not_wait_for_the_queue_delay() -> None:
    model = SlowModel()
    start = time.perf_counter()
    asyncio.run(_run_batcher(model, 1, max_batch=16, delay=2.0))
    assert time.perf_counter() - start < 1.0 and model.sizes == [1]


@pytest.mark.parametrize(
    "overrides, message",
    [({"api_keys": "short"}, "shorter than 16"), ({"max_pixels": 10**9}, "decompression"),
     ({"max_body_bytes": 2 << 30}, "unsafe"), ({"allowed_formats": "PNG,EXE"}, "unknown image"),
     ({"max_batch_size": 0}, "greater than or equal"), ({"device": "tpu"}, "auto"),
     ({"max_images": 64, "max_queue_images": 10}, "at least max_images")],
)  # fmt: skip
def test_settings_refuse_unsafe_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELCLEAN_API_KEYS", "k" * 16 + ", " + "j" * 20)
    monkeypatch.setenv("LABELCLEAN_ALLOWED_FORMATS", "png, jpeg")
    monkeypatch.setenv("LABELCLEAN_MAX_QUEUE_DELAY_MS", "2.5")
    s = Settings()
    assert [k.secret for k in s.named_keys] == [b"k" * 16, b"j" * 20]
    assert s.allowed_formats == ("PNG", "JPEG") and s.max_queue_delay_ms == 2.5
    assert "k" * 16 not in repr(s)  # keys never show in logs
    assert Settings(**{k.removeprefix("LABELCLEAN_").lower(): v for k, v in s.env().items()}) == s


def test_api_keys_may_be_named_and_never_show() -> None:
    s = Settings(api_keys="team-a:" + "a" * 16 + "," + "b" * 20 + ",team-a:" + "a" * 16)
    a, b = s.named_keys
    assert (a.name, a.secret) == ("team-a", b"a" * 16)
    assert (b.name, b.secret) == ("key-" + hashlib.sha256(b"b" * 20).hexdigest()[:8], b"b" * 20)
    assert "a" * 16 not in repr(s.named_keys) and "b" * 20 not in repr(s.named_keys)
    assert Settings(api_keys="no/name:" + "c" * 16).named_keys[0].secret.startswith(b"no/name:")
    refused = [
        ("team-a:short", "'team-a' is shorter than 16"),
        ("x:" + "a" * 16 + ",x:" + "b" * 16, "two API keys are named 'x'"),
        ("x:" + "a" * 16 + ",y:" + "a" * 16, "listed as 'x' and as 'y'"),
    ]
    for keys, message in refused:
        with pytest.raises(ValidationError, match=message) as info:
            Settings(api_keys=keys)
        assert "a" * 16 not in str(info.value) and "b" * 16 not in str(info.value)


def test_a_key_is_found_among_all_in_constant_time() -> None:
    from labelclean.service.http.auth import matching_key

    keys = Settings(api_keys="a:" + "a" * 16 + ",b:" + "b" * 16).named_keys
    assert matching_key(b"b" * 16, keys).name == "b"
    assert matching_key(b"a" * 16, keys).name == "a"
    assert matching_key(b"a" * 15, keys) is None and matching_key(b"a:" + b"a" * 16, keys) is None


@pytest.mark.parametrize("cpus, expected", [(1, 2), (8, 8), (64, 16)])
def test_decode_threads_follow_the_usable_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cpus)), raising=False)
    assert decode_threads(Settings()) == expected
    assert decode_threads(Settings(decode_threads=3)) == 3


def test_serve_refuses_a_bad_bundle(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "bundle.json").write_text(json.dumps({"format": 3}))
    out = subprocess.run([sys.executable, "-m", "labelclean.cli", "serve", "--model",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "model.onnx is missing" in out.stderr


def test_batcher_refuses_past_its_queue_limit() -> None:
    from labelclean.service.errors import Overloaded

    async def scenario() -> None:
        batcher = DynamicBatcher(SlowModel().run, max_batch_size=4, max_queue_delay_s=0.01,
                                 max_queue_images=3)  # fmt: skip
        batcher.start()
        try:
            async with batcher.expect(2):
                with pytest.raises(Overloaded, match="already waiting"):
                    async with batcher.expect(2):
                        pass
                async with batcher.expect(1):  # 2 + 1 fits
                    pass
            assert batcher.pending == 0
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_the_app_shortens_the_thread_switch_interval_while_it_runs(bundle_dir: Path) -> None:
    import sys

    from labelclean.service.http.app import create_app

    before = sys.getswitchinterval()
    app = create_app(Settings(model=bundle_dir, gil_switch_interval_ms=0.3))

    async def lifespan() -> float:
        async with app.router.lifespan_context(app):
            return sys.getswitchinterval()

    assert asyncio.run(lifespan()) == pytest.approx(0.0003)
    assert sys.getswitchinterval() == before


def test_only_images_over_the_inline_limits_are_decoded_through_the_offload(
    bundle_dir: Path, images: list[bytes]
) -> None:
    import io

    from labelclean.model.cleaning import (
        DEFAULT_LIMITS,
        INLINE_BYTES,
        INLINE_PIXELS,
        prepare_images,
    )
    from PIL import Image, PngImagePlugin

    def png_bytes(size: int, text: str = "") -> bytes:
        info = PngImagePlugin.PngInfo()
        if text:
            info.add_text("padding", text)  # stored before the pixels
        buffer = io.BytesIO()
        Image.new("L", (size, size), 200).save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()

    many_pixels = png_bytes(100)
    many_bytes = png_bytes(28, "x" * (INLINE_BYTES + 1))
    assert 100 * 100 > INLINE_PIXELS >= 28 * 28 and len(many_bytes) > INLINE_BYTES
    offloaded = []

    async def offload(fn, first, *args):
        offloaded.append(first.size if isinstance(first, Image.Image) else len(first))
        return fn(first, *args)

    spec = load_bundle(bundle_dir).input
    payloads = [images[0], many_pixels, many_bytes]
    batch = asyncio.run(prepare_images(payloads, spec, DEFAULT_LIMITS, offload))
    # the 28x28 image was decoded inline; the large one after reading its header inline; the
    # one with many bytes went to the offload before anything was read
    assert offloaded == [(100, 100), len(many_bytes)]
    assert batch.shape == (3, spec.channels, spec.height, spec.width)
