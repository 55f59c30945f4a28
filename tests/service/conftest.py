"""Fixtures for the service tests: a bundle exported by the project's own export path, real
Fashion-MNIST images, and real uvicorn servers (``labelclean serve`` subprocesses on 127.0.0.1).

torch is used here only to *make* the bundle; the servers under test never import it.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
CLASSES = [
    ("/fm/tshirt", "T-shirt/top"), ("/fm/trouser", "Trouser"), ("/fm/pullover", "Pullover"),
    ("/fm/dress", "Dress"), ("/fm/coat", "Coat"), ("/fm/sandal", "Sandal"),
    ("/fm/shirt", "Shirt"), ("/fm/sneaker", "Sneaker"), ("/fm/bag", "Bag"),
    ("/fm/boot", "Ankle boot"),
]  # fmt: skip
API_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def fashion_pixels(n: int) -> np.ndarray:
    """The first ``n`` Fashion-MNIST test images, (n, 28, 28) uint8 (IDX format, gzip)."""
    with gzip.open(FASHION, "rb") as fh:
        data = fh.read(16 + n * 28 * 28)
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, 28, 28)


def png(pixels: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", **save)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def images() -> list[bytes]:
    """Twelve real 28x28 greyscale PNGs (the root conftest stops the run if Fashion-MNIST is
    missing)."""
    return [png(p) for p in fashion_pixels(12)]


def tiny_decision(d: int, rule: str = "issue"):
    """The test bundles' decision: remove and add at an issue score of 0.5 (cleaned 0.5 for the
    paper's rule); for min_precision 0.9, remove from 0.2 and add from 0.8."""
    from labelclean.model.decision import Decision

    half, low, high = np.full(d, 0.5), np.full(d, 0.2), np.full(d, 0.8)
    levels = {0.5: (half, half), 0.9: (low, high)}
    return Decision(rule, "f1", half, half, half, np.zeros(d, bool), levels)  # type: ignore[arg-type]


def _tiny_bundle(
    out: Path, classes: list, adjust: Callable, scores_threshold: float, rule: str = "issue",
    **export: object,
):  # fmt: skip
    """A tiny joint network over ``classes`` with the paper's clipped cleaner (with y = 0 its
    residual alone can add a label) and the unfitted issue head (it follows the cleaner), its
    weights changed by ``adjust(net)``, exported with labelclean.model.export to ``out``
    (``tiny_decision``: remove and add at an issue score of 0.5; cleaned thresholds 0.5)."""
    import torch
    from labelclean.model.config import ModelConfig
    from labelclean.model.export import export_bundle
    from labelclean.model.network import LabelCleaningNet

    torch.manual_seed(0)
    config = ModelConfig(num_classes=len(classes), width=4, feature_dim=16, cleaner_loss="l1")
    net = LabelCleaningNet(config)
    with torch.no_grad():
        adjust(net)
    net.eval()
    rng = np.random.default_rng(0)
    sample = (
        rng.standard_normal((4, 1, 28, 28)).astype(np.float32),
        (rng.random((4, len(classes))) > 0.7).astype(np.float32),
    )
    export_bundle(
        net, out, classes, sample=sample, thresholds_cleaned=[0.5] * len(classes),
        thresholds_scores=[scores_threshold] * len(classes), mode="joint",
        decision=tiny_decision(len(classes), rule), **export,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny joint network (10 classes) exported with labelclean.model.export."""
    import torch
    from labelclean.model.bundle import LabelClass

    def adjust(net) -> None:
        torch.nn.init.normal_(net.cleaner.out.weight, std=0.5)  # a cleaner that changes labels
        torch.nn.init.normal_(net.classifier.weight, std=1.0)  # scores spread over (0, 1)

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    classes = [LabelClass(i, n) for i, n in CLASSES]
    return _tiny_bundle(out, classes, adjust, 0.4, metrics={"AP_all": 50.0})


@pytest.fixture(scope="session")
def hierarchy_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained network over the demo data's 15 classes, carrying their hierarchy: its
    cleaner returns the noisy labels unchanged but for Tops, lowered by 0.6 (threshold 0.5)."""
    from labelclean.model.bundle import LabelClass
    from labelclean.model.hierarchy import Hierarchy
    from labelclean.training import demo_data

    names = zip(demo_data.LABEL_NAMES, demo_data.DISPLAY_NAMES, strict=True)
    classes = [LabelClass(i, n) for i, n in names]

    def adjust(net) -> None:
        net.cleaner.out.bias[demo_data.LABEL_NAMES.index("/lc/tops")] = -0.6

    out = tmp_path_factory.mktemp("bundle") / "hierarchy-bundle"
    hierarchy = Hierarchy.build(demo_data.hierarchy_edges(), classes)
    return _tiny_bundle(out, classes, adjust, 0.5, metrics={}, hierarchy=hierarchy)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    headers: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30, **kwargs)

    def metrics(self) -> str:
        with self.client() as c:
            return c.get("/metrics").text

    def inference_pids(self) -> list[int]:
        """The pids of the inference processes under the server (children, grandchildren)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):  # the process ended meanwhile
                continue
        found = []
        for pid in parents:
            ancestor = parents.get(pid)
            while ancestor is not None and ancestor != self.process.pid:
                ancestor = parents.get(ancestor)
            if ancestor is None:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"labelclean.service.inference.process" in cmdline:
                found.append(pid)
        return found

    def inference_pid(self) -> int:
        """The pid of the server's one inference process."""
        pids = self.inference_pids()
        assert len(pids) == 1, f"expected one inference process, found {pids}"
        return pids[0]


def start_server(
    bundle: Path, log: Path, env: dict[str, str], *, ready: bool = True, args: tuple[str, ...] = ()
) -> Server:
    """``labelclean serve [args]`` in a subprocess; returns once /healthz (and /readyz) answer."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    full_env.update(env)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "labelclean.cli", "serve", "--model", str(bundle),
             "--port", str(port), *args],
            env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    headers = AUTH if env.get("LABELCLEAN_API_KEYS") else {}
    server = Server(f"http://127.0.0.1:{port}", process, log, headers)
    deadline = time.monotonic() + 60
    path = "/readyz" if ready else "/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}): {log.read_text()}")
        try:
            if httpx.get(server.url + path, headers=headers, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server not up after 60 s: {log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()


MAIN_ENV = {
    "LABELCLEAN_API_KEYS": f"{API_KEY},another-key-0123456789",
    "LABELCLEAN_MAX_BODY_BYTES": str(2_000_000),
    "LABELCLEAN_MAX_IMAGES": "16",
    "LABELCLEAN_MAX_PIXELS": str(1_000_000),
    "LABELCLEAN_ALLOWED_FORMATS": "PNG,JPEG",
    "LABELCLEAN_MAX_BATCH_SIZE": "8",
    "LABELCLEAN_MAX_QUEUE_DELAY_MS": "50",
    "LABELCLEAN_DEVICE": "cpu",
}


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(
        bundle: Path, env: dict[str, str], *, ready: bool = True, args: tuple[str, ...] = ()
    ) -> Server:
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = start_server(bundle, log, env, ready=ready, args=args)
        started.append(server)
        return server

    yield make
    for server in started:
        stop_server(server)


@pytest.fixture(scope="session")
def server(server_factory: Callable[..., Server], bundle_dir: Path) -> Server:
    """The main server: API keys on, small limits, batches of up to 8 within 50 ms."""
    return server_factory(bundle_dir, MAIN_ENV)


def send_burst(requests: list[httpx.Request]) -> list[tuple[int, bytes]]:
    """Send every request before reading any answer, one connection each, so that they are all
    at the server at once (a thread per request can let each finish before the next is sent);
    (status, body) of each, in request order."""
    connections = []
    for request in requests:
        connection = http.client.HTTPConnection(request.url.host, request.url.port, timeout=30)
        connection.connect()
        connections.append(connection)
    for connection, request in zip(connections, requests, strict=True):
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        connection.request("POST", request.url.path, body=request.read(), headers=headers)
    answers = []
    for connection in connections:
        response = connection.getresponse()
        answers.append((response.status, response.read()))
        connection.close()
    return answers


def burst(requests: list[httpx.Request]) -> list[dict]:
    """``send_burst`` where every answer must be a 200: their JSON bodies."""
    answers = send_burst(requests)
    for status, body in answers:
        assert status == 200, body
    return [json.loads(body) for _, body in answers]
