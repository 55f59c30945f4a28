"""A full queue answers 503 over real HTTP: the images admitted at once are capped by
LABELCLEAN_MAX_QUEUE_IMAGES (service.inference.batcher), past it a request gets the JSON error at
once, and the server serves normally again when the burst is over."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from ..conftest import Server, png, send_burst

BURST = 24
OVERLOAD_ENV = {
    "LABELCLEAN_DEVICE": "cpu",
    "LABELCLEAN_MAX_QUEUE_IMAGES": "1",  # one image admitted at a time, server-wide
    "LABELCLEAN_MAX_IMAGES": "1",  # (at most max_queue_images)
    "LABELCLEAN_MAX_PIXELS": str(40_000_000),
}


@pytest.fixture(scope="module")
def slow_image() -> bytes:
    """6000 x 6000 grey pixels, 48 KB as a PNG: decoding and shrinking it to 28x28 takes about
    0.1 s of one core, the time its request holds the only place in the queue. The other
    requests of a burst arrive within milliseconds of it, so some are turned away for certain
    (and only the admitted ones pay for a decode)."""
    return png(np.full((6000, 6000), 100, np.uint8))


@pytest.fixture(scope="module")
def small_server(server_factory, bundle_dir: Path) -> Server:
    return server_factory(bundle_dir, OVERLOAD_ENV)


def test_full_queue_is_503_with_json_and_the_rest_are_answered(
    small_server: Server, slow_image: bytes, images: list[bytes]
) -> None:
    requests = [
        httpx.Request(
            "POST",
            f"{small_server.url}/classify",
            files=[("image", (f"big{i}.png", slow_image, "image/png"))],
        )  # fmt: skip
        for i in range(BURST)
    ]
    answers = send_burst(requests)
    statuses = [status for status, _ in answers]
    turned_away = [json.loads(body) for status, body in answers if status == 503]
    print(f"{statuses.count(200)} answered, {len(turned_away)} turned away of {BURST}")
    assert set(statuses) == {200, 503}, statuses  # some of each, nothing else
    for body in turned_away:
        assert body["error"]["code"] == "overloaded", body
        assert "limit 1" in body["error"]["message"] and "retry" in body["error"]["message"]
    for status, body in answers:
        if status == 200:
            assert len(json.loads(body)["results"]) == 1
    with small_server.client() as c:  # the queue emptied: a lone request goes through
        r = c.post("/classify", files=[("image", ("a.png", images[0], "image/png"))])
        assert r.status_code == 200, r.text
        text = c.get("/metrics").text
    counted = re.search(
        r'^labelclean_requests_total\{endpoint="/classify",method="POST",status="503"\} (\S+)$',
        text, re.M,
    )  # fmt: skip
    assert counted and float(counted[1]) == len(turned_away)
