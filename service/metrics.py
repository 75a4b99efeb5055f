"""Prometheus metrics of one app, in its own registry (several apps in one process, as in tests, do not clash).

Exposed at ``/metrics``, named after the Prometheus conventions (base units in the name, counters ending in
``_total``; https://prometheus.io/docs/practices/naming/): requests, their latency and their errors by
``error_type`` per route template; micro-batcher queue wait, batch sizes and run time; items per collection (read
at scrape time); ``hamdex_build_info`` (versions as labels, value 1); and the process's memory and CPU
(prometheus-client's process collector). docs/grafana-dashboard.json charts them (tests/test_metrics.py keeps it in
step with what is exported).
"""

from __future__ import annotations

import platform
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# a `_created` series per counter and histogram child doubles what a scrape stores and no dashboard reads it
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
BATCHERS = ("encode", "search", "heavy")  # service.engine's micro-batchers


class _CollectionItems(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def describe(self):  # registering must not call collect() (the app it reads may not exist yet)
        return []

    def collect(self):
        family = GaugeMetricFamily("hamdex_collection_items", "Live items per open collection", labels=["collection"])
        for name, count in sorted(self._counts().items()):
            family.add_metric([name], count)
        yield family


def build_labels() -> dict[str, str]:
    """The versions ``hamdex_build_info`` carries: hamdex, Python and the libraries that decide codes and search."""
    from importlib.metadata import PackageNotFoundError, version

    from hamdex import __version__

    labels = {"version": __version__, "python": platform.python_version()}
    for label, dist in (("torch", "torch"), ("faiss", "faiss-cpu"), ("numpy", "numpy")):
        try:
            labels[label] = version(dist)
        except PackageNotFoundError:
            labels[label] = "unknown"
    return labels


class Metrics:
    def __init__(self, collection_counts: Callable[[], dict[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "hamdex_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "hamdex_http_request_errors", "HTTP error responses by route, method and error_type",
            ["route", "method", "error_type"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "hamdex_http_request_duration_seconds", "HTTP request latency", ["route", "method"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "hamdex_queue_wait_seconds", "Time a request waited in a micro-batcher", ["batcher"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_items = Histogram(
            "hamdex_batch_items", "Items per executed micro-batch", ["batcher"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "hamdex_batch_duration_seconds", "Run time of one micro-batch (encode or search)", ["batcher"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "hamdex_rejected_requests", "Requests refused by backpressure (429)", ["batcher"], registry=r
        )
        self.queued = Gauge("hamdex_queued_items", "Items waiting in a micro-batcher", ["batcher"], registry=r)
        for batcher in BATCHERS:  # series that exist at 0 from the start: rate() and alerts see the first 429
            self.rejected.labels(batcher)
            self.queued.labels(batcher)
        Info("hamdex_build", "Versions of hamdex and the libraries it runs on", registry=r).info(build_labels())
        ProcessCollector(registry=r)
        if collection_counts is not None:
            r.register(_CollectionItems(collection_counts))

    def observe_batch(self, batcher: str) -> Callable[[int, float], None]:
        def observe(items: int, seconds: float) -> None:
            self.batch_items.labels(batcher).observe(items)
            self.batch_seconds.labels(batcher).observe(seconds)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
