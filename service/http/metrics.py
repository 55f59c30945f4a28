"""Prometheus metrics (prometheus-client), one registry per app so tests can build many apps.

    labelclean_requests_total{endpoint, method, status}
    labelclean_request_duration_seconds{endpoint, method, status}   histogram
    labelclean_batch_size                                          histogram, images per run
    labelclean_queue_wait_seconds                                  histogram, per image
    labelclean_inference_seconds                                   histogram, per model run
    labelclean_images_total{endpoint}                              images answered
    labelclean_model_ready                                         gauge, 1 when ready

``endpoint`` is the route's path template (``unmatched`` for unknown paths), never the raw path.

Bulk jobs (counted in Redis by the job steps, so every server shows the same totals; read from
Redis when /metrics is scraped):

    labelclean_redis_up                                            gauge, 1 when Redis answered
    labelclean_jobs_total{event}                 created, completed, failed, cancelled
    labelclean_job_chunks_total{event}           stored, retried (a failed try), dead
    labelclean_job_images_total{outcome}         done, failed
    labelclean_job_dead_letters_total            messages moved to the dead-letter stream
    labelclean_job_queue_messages                gauge, messages waiting or in progress
    labelclean_job_workers                       gauge, workers with a live heartbeat

With ``serve --workers N`` the workers share prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by ``serve`` in a fresh directory): whichever worker answers
GET /metrics reports the sum over all of them, and over workers that uvicorn replaced.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..inference.batcher import BatchObserver

if TYPE_CHECKING:
    from ..jobs.store import JobStore

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
        self.jobs = JobCounters()
        self.exposed.register(self.jobs)

    def watch_jobs(self, store: JobStore) -> None:
        """Report the bulk-job counters of ``store``'s Redis."""
        self.jobs.store = store

    def batch(self, size: int, queue_waits: list[float], inference_s: float) -> None:
        self.batch_size.observe(size)
        for wait in queue_waits:
            self.queue_wait.observe(wait)
        self.inference.observe(inference_s)


class JobCounters:
    """The bulk-job series: a prometheus-client collector over the counters that the job steps
    keep in Redis (service.jobs.store), read by ``refresh`` (async) before each scrape."""

    WORKER_TTL_S = 30.0
    TIMEOUT_S = 1.0

    def __init__(self) -> None:
        self.store: JobStore | None = None
        self.values: dict[str, int] | None = None  # None: Redis did not answer

    async def refresh(self) -> None:
        if self.store is None:
            return
        try:
            self.values = await asyncio.wait_for(
                self.store.stats(worker_ttl_s=self.WORKER_TTL_S), self.TIMEOUT_S
            )
        except Exception:  # noqa: BLE001 - Redis down or slow: reported as labelclean_redis_up 0
            self.values = None

    def describe(self) -> list[Any]:
        return []  # the series depend on Redis: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        if self.store is None:
            return
        v = self.values
        yield GaugeMetricFamily(
            "labelclean_redis_up", "1 when Redis (bulk jobs) answered at this scrape",
            value=0 if v is None else 1,
        )  # fmt: skip
        if v is None:
            return
        families = [
            ("labelclean_jobs", "Bulk jobs by event", "event",
             {e: f"jobs_{e}" for e in ("created", "completed", "failed", "cancelled")}),
            ("labelclean_job_chunks", "Chunks of bulk jobs: stored, a try failed, dead-lettered",
             "event",
             {"stored": "chunks_done", "retried": "chunks_retried", "dead": "chunks_dead"}),
            ("labelclean_job_images", "Images of bulk jobs by outcome", "outcome",
             {"done": "images_done", "failed": "images_failed"}),
        ]  # fmt: skip
        for name, text, label, series in families:
            family = CounterMetricFamily(name, text, labels=[label])
            for value, key in series.items():
                family.add_metric([value], v.get(key, 0))
            yield family
        yield CounterMetricFamily(
            "labelclean_job_dead_letters", "Messages moved to the dead-letter stream",
            value=v.get("messages_dead", 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "labelclean_job_queue_messages", "Messages in the work stream, waiting or in progress",
            value=v.get("queue_messages", 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "labelclean_job_workers", "Workers with a live heartbeat", value=v.get("workers", 0)
        )


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
