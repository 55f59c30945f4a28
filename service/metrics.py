"""Prometheus metrics (prometheus-client), one registry per app so tests can build many apps.

    labelclean_requests_total{endpoint, method, status}
    labelclean_request_duration_seconds{endpoint, method, status}   histogram
    labelclean_batch_size                                          histogram, images per run
    labelclean_queue_wait_seconds                                  histogram, per image
    labelclean_inference_seconds                                   histogram, per model run
    labelclean_images_total{endpoint}                              images answered
    labelclean_model_ready                                         gauge, 1 when ready

``endpoint`` is the route's path template (``unmatched`` for unknown paths), never the raw path.

With ``serve --workers N`` the workers share prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by ``serve`` in a fresh directory): whichever worker answers
GET /metrics reports the sum over all of them, and over workers that uvicorn replaced.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .batcher import BatchObserver

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
disable_created_metrics()  # no *_created series: they only add noise here


class Metrics(BatchObserver):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "labelclean_requests", "HTTP requests answered", ["endpoint", "method", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "labelclean_request_duration_seconds", "Time from request to response",
            ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "labelclean_batch_size", "Images per ONNX Runtime run", buckets=BATCH_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "labelclean_queue_wait_seconds", "Time an image waited for its batch to start",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference = Histogram(
            "labelclean_inference_seconds", "Duration of one ONNX Runtime run",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.images = Counter(
            "labelclean_images", "Images classified or cleaned", ["endpoint"], registry=r
        )
        self.ready = Gauge(
            "labelclean_model_ready", "1 when the model is ready", registry=r,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.exposed = r
        """What GET /metrics reports: this registry, or every worker's values."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed)

    def batch(self, size: int, queue_waits: list[float], inference_s: float) -> None:
        self.batch_size.observe(size)
        for wait in queue_waits:
            self.queue_wait.observe(wait)
        self.inference.observe(inference_s)


class MetricsMiddleware:
    """Counts every response (errors from other middleware included) and its latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # labels() per request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            labels = (endpoint, scope.get("method", ""), str(status[0]))
            series = self._series.get(labels)
            if series is None:  # prometheus-client's labels() locks and validates: once each
                series = self._series[labels] = (
                    self.metrics.requests.labels(*labels),
                    self.metrics.latency.labels(*labels),
                )
            series[0].inc()
            series[1].observe(time.perf_counter() - start)
