"""The service's two hot paths, each behind a micro-batcher (service.batcher): encoding raw inputs with a model,
and top-k search in a collection. Concurrent requests with the same model (encode), or the same collection, k and
options (search), become one model call or one batched FAISS search.

Featurizing (tokenizing, TF-IDF, parsing pixels) stays in the request's own worker thread: it validates the
input, so a bad input fails its own request only, and it spreads over the thread pool. A small array of numbers
(a binary body, base64, stacked JSON vectors) is featurized on the event loop instead: scaling and checking 256
images takes ~0.3 ms, less than the hop to a thread and back (p50 at concurrency 1: 11.4 -> 8.0 ms). Only the
model call and the FAISS call are batched, each in the batcher's own thread. On a GPU the model call runs there.

Filtered and radius searches cannot be coalesced (each has its own filter or radius) and may cost far more than a
top-k search; they go through a third batcher anyway, one request per batch, for its bounded concurrency
(``heavy_search_workers`` threads, of lower CPU priority) and its bounded queue (429 ``queue_full`` beyond it).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import faiss
import numpy as np
import scipy.sparse as sp
from hamdex.index import CollectionLike, Hit
from hamdex.models.hasher import EncodeResult, Hasher
from hamdex.service.batcher import BatchStats, MicroBatcher, QueueFull
from hamdex.service.metrics import Metrics
from hamdex.service.settings import Settings
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
# An array of at most this many values is featurized on the event loop (256 images of 28 x 28: ~0.3 ms): the hop to
# a worker thread and back cost more, in latency, on a loaded 2-core machine (docs/encode.md)
INLINE_FEATURES = 1 << 18


def search_threads(settings: Settings) -> int:
    """OpenMP threads for each batched FAISS search: ``faiss_threads``, else the CPUs shared among the workers.

    OpenMP's thread count is per calling thread (``omp_set_num_threads`` in one thread leaves the others at
    OMP_NUM_THREADS or every CPU), so it is set in each search thread as it starts. Two workers that each fork
    all CPUs' worth of OpenMP threads oversubscribe the cores and stall at every block's barrier.
    """
    return settings.faiss_threads or max(1, (os.cpu_count() or 2) // settings.search_workers)


@dataclass
class Timings:
    """Per-request seconds, reported in response headers (see service.middleware)."""

    queue_s: float = 0.0
    encode_s: float = 0.0
    search_s: float = 0.0

    def add(self, stats: BatchStats, kind: str) -> None:
        self.queue_s += stats.queue_s
        if kind == "encode":
            self.encode_s += stats.run_s
        else:
            self.search_s += stats.run_s


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.encoder = MicroBatcher(
            self._encode_blocks,
            name="encode",
            max_batch=settings.encode_max_batch,
            max_wait_ms=settings.batch_max_wait_ms,
            max_queue=settings.queue_max_items,
            on_batch=metrics.observe_batch("encode"),
        )
        self.searcher = MicroBatcher(
            self._search_blocks,
            name="search",
            max_batch=settings.search_max_batch,
            max_wait_ms=settings.batch_max_wait_ms,
            max_queue=settings.queue_max_items,
            on_batch=metrics.observe_batch("search"),
            workers=settings.search_workers,
            thread_init=partial(faiss.omp_set_num_threads, search_threads(settings)),
        )
        # filtered and radius searches: one request per batch (nothing to coalesce), a bounded number at once
        self.heavy = MicroBatcher(
            _run_alone,
            name="heavy",
            max_batch=1,
            max_wait_ms=0,
            max_queue=settings.queue_max_items,
            on_batch=metrics.observe_batch("heavy"),
            workers=settings.heavy_search_workers,
            thread_init=partial(_heavy_thread_init, search_threads(settings)),
        )

    async def close(self) -> None:
        await self.encoder.close()
        await self.searcher.close()
        await self.heavy.close()

    # ---- encode -------------------------------------------------------------------------------------------

    async def encode(
        self, hasher: Hasher, inputs: Sequence[Any] | np.ndarray, latent: bool, timings: Timings
    ) -> EncodeResult:
        """Raw inputs -> codes (and latents), through the encode batcher (one batch per model)."""
        if isinstance(inputs, np.ndarray) and inputs.size <= INLINE_FEATURES:  # raises InputError on bad input
            features = hasher.features(inputs)  # numbers already an array: a scale and a check, not worth a hop
        else:
            features = await run_in_threadpool(hasher.features, inputs)
        return await self.encode_features(hasher, features, latent, timings)

    async def encode_features(self, hasher: Hasher, features: Any, latent: bool, timings: Timings) -> EncodeResult:
        """Features (hasher.features' output) -> codes (and latents), through the encode batcher: for a caller
        that needs the features too (a reranked search, an upsert keeping vectors), so they are made once."""
        self.metrics.queued.labels("encode").set(self.encoder.queued_items)
        try:
            result, stats = await self.encoder.submit(hasher.fingerprint, (hasher, features, latent), features.shape[0])
        except QueueFull:
            self.metrics.rejected.labels("encode").inc()
            raise
        self.metrics.queue_wait.labels("encode").observe(stats.queue_s)
        timings.add(stats, "encode")
        return result

    @staticmethod
    def _encode_blocks(key: Hashable, blocks: list[tuple[Hasher, Any, bool]]) -> list[EncodeResult]:
        hasher = blocks[0][0]
        feats = [features for _, features, _ in blocks]
        stacked = sp.vstack(feats, format="csr") if sp.issparse(feats[0]) else np.concatenate(feats)
        want_latent = any(latent for _, _, latent in blocks)
        result = hasher.encode_features(stacked, latent=want_latent, batch_size=max(2048, stacked.shape[0]))
        out, start = [], 0
        for _, features, latent in blocks:
            end = start + features.shape[0]
            lat = result.latent[start:end] if latent and result.latent is not None else None
            out.append(EncodeResult(result.codes[start:end], lat))
            start = end
        return out

    # ---- search -------------------------------------------------------------------------------------------

    async def search(
        self,
        name: str,
        collection: CollectionLike,
        codes: np.ndarray,
        k: int,
        include_metadata: bool,
        params: dict[str, int],
        timings: Timings,
    ) -> list[list[Hit]]:
        """Top-k hits for each query code, through the search batcher (plain top-k queries only)."""
        key = (name, id(collection), k, include_metadata, tuple(sorted(params.items())))
        self.metrics.queued.labels("search").set(self.searcher.queued_items)
        try:
            hits, stats = await self.searcher.submit(key, (collection, codes, k, include_metadata, params), len(codes))
        except QueueFull:
            self.metrics.rejected.labels("search").inc()
            raise
        self.metrics.queue_wait.labels("search").observe(stats.queue_s)
        timings.add(stats, "search")
        return hits

    async def heavy_search(self, work: Callable[[], T], n_queries: int, timings: Timings) -> T:
        """Run ``work`` (a filtered or radius search of ``n_queries`` queries) in one of ``heavy_search_workers``
        threads; it waits in a queue of at most ``queue_max_items`` queries, beyond which QueueFull (429)."""
        self.metrics.queued.labels("heavy").set(self.heavy.queued_items)
        try:
            result, stats = await self.heavy.submit(object(), work, n_queries)  # a key of its own: never coalesced
        except QueueFull:
            self.metrics.rejected.labels("heavy").inc()
            raise
        self.metrics.queue_wait.labels("heavy").observe(stats.queue_s)
        timings.add(stats, "search")
        return result

    @staticmethod
    def _search_blocks(key: Hashable, blocks: list[tuple[CollectionLike, np.ndarray, int, bool, dict]]) -> list:
        collection, _, k, include_metadata, params = blocks[0]
        codes = np.concatenate([b[1] for b in blocks])
        hits = collection.search(codes, k, include_metadata=include_metadata, params=params)
        out, start = [], 0
        for b in blocks:
            out.append(hits[start : start + len(b[1])])
            start += len(b[1])
        return out


HEAVY_NICENESS = 10  # added to a heavy-search thread's nice value: it yields the CPU to the event loop


def _heavy_thread_init(omp_threads: int) -> None:
    """OpenMP threads as for top-k searches, and, on Linux (where the nice value is per thread), a lower CPU
    priority: a long filtered scan then takes the cores the event loop and top-k searches leave."""
    faiss.omp_set_num_threads(omp_threads)
    if sys.platform == "linux":
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):  # lowering a priority is always allowed; if not, run as is
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + HEAVY_NICENESS))


def _run_alone(key: Hashable, blocks: list[Callable[[], Any]]) -> list[Any]:
    return [work() for work in blocks]  # max_batch=1: one request per batch
