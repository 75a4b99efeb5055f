"""Prometheus metrics of one app, in its own registry (several apps in one process, as in tests, do not clash).

Exposed at ``/metrics``: requests and their latency per route template and status; micro-batcher queue wait and
batch sizes; encode and search time; items per collection (read at scrape time); and the process's memory and
CPU (prometheus-client's process collector).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


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


class Metrics:
    def __init__(self, collection_counts: Callable[[], dict[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "hamdex_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "hamdex_request_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "hamdex_queue_wait_seconds", "Time a request waited in a micro-batcher", ["batcher"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_items = Histogram(
            "hamdex_batch_items", "Items per executed micro-batch", ["batcher"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "hamdex_batch_seconds", "Run time of one micro-batch (encode or search)", ["batcher"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rejected = Counter("hamdex_rejected", "Requests refused by backpressure", ["batcher"], registry=r)
        self.queued = Gauge("hamdex_queued_items", "Items waiting in a micro-batcher", ["batcher"], registry=r)
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
