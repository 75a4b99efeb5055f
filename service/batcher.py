"""Dynamic micro-batching: concurrent requests are coalesced into one call of a batch function.

A request submits a block of ``size`` items (a feature matrix, an array of query codes) under a key; requests
with different keys are never mixed (a key is, say, the model, or the collection and the query's k). One worker
task per batcher takes the oldest pending request, then keeps adding pending requests of the same key until
``max_batch`` items are gathered or ``max_wait_ms`` has passed since that first request, and runs
``fn(key, blocks)`` in a dedicated thread, off the event loop; ``fn`` returns one result per block. A request
larger than ``max_batch`` runs alone. With ``workers`` > 1, that many such loops share the queue, so up to that many
batches run at once (each in its own thread): for a batch function that uses one core, such as a one-thread FAISS
search.

Backpressure: at most ``max_queue`` items wait at once; a request that would exceed it fails at once with
:class:`QueueFull` (the service answers 429 with ``Retry-After``) instead of waiting without bound. A request
cancelled while it waits (its timeout passed, or its client went away) is dropped, never run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The batcher's queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"the {name} queue is full; retry in {retry_after:.1f}s")
        self.retry_after = retry_after


@dataclass
class BatchStats:
    """What one request went through: seconds waiting in the queue and running, and the batch it ran in."""

    queue_s: float = 0.0
    run_s: float = 0.0
    batch_items: int = 0


@dataclass
class _Pending:
    key: Hashable
    block: Any
    size: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Coalesce ``submit(key, block, size)`` calls into ``fn(key, blocks) -> results`` (one result per block)."""

    def __init__(
        self,
        fn: Callable[[Hashable, list[Any]], Sequence[Any]],
        *,
        name: str,
        max_batch: int = 256,
        max_wait_ms: float = 2.0,
        max_queue: int = 4096,
        on_batch: Callable[[int, float], None] | None = None,  # (items, seconds) after each batch, for metrics
        workers: int = 1,
        thread_init: Callable[[], None] | None = None,  # run once in each batch thread (e.g. OpenMP threads)
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be >= 1, max_wait_ms >= 0")
        self.fn, self.name = fn, name
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self._on_batch = on_batch
        self._pending: deque[_Pending] = deque()
        self._queued_items = 0
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self._n_workers = workers
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"batch-{name}", initializer=thread_init
        )
        self._last_run_s = 0.01

    @property
    def queued_items(self) -> int:
        return self._queued_items

    async def submit(self, key: Hashable, block: Any, size: int) -> tuple[Any, BatchStats]:
        """The result for ``block`` (of ``size`` items) and the request's queue/run times. Raises QueueFull."""
        if self._queued_items and self._queued_items + size > self.max_queue:
            raise QueueFull(self.name, retry_after=max(1.0, round(self._last_run_s * 2, 1)))
        self._ensure_worker()
        pending = _Pending(key, block, size, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        self._queued_items += size
        assert self._wakeup is not None
        self._wakeup.set()
        return await pending.future

    def _ensure_worker(self) -> None:
        if len(self._workers) == self._n_workers and not any(w.done() for w in self._workers):
            return
        for worker in self._workers:
            worker.cancel()
        self._wakeup = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._run(), name=f"batcher-{self.name}-{i}") for i in range(self._n_workers)]

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._pending[0]
            deadline = first.enqueued + self.max_wait
            # wait for company until the batch is full or the first request's wait is up
            while self._same_key_items(first.key) < self.max_batch and (delay := deadline - time.perf_counter()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                except TimeoutError:
                    break
            if not self._pending or self._pending[0] is not first:  # another worker took it meanwhile
                continue
            batch = self._take(first.key)
            if batch:
                await self._execute(first.key, batch)

    def _same_key_items(self, key: Hashable) -> int:
        return sum(p.size for p in self._pending if p.key == key)

    def _take(self, key: Hashable) -> list[_Pending]:
        """Pending requests of ``key`` in arrival order up to max_batch items (the first always)."""
        batch, n, keep = [], 0, deque()
        while self._pending:
            p = self._pending.popleft()
            if p.future.done():  # cancelled while it waited (timed out, or its client left): never run it
                self._queued_items -= p.size
                continue
            if p.key == key and (not batch or n + p.size <= self.max_batch):
                batch.append(p)
                n += p.size
            else:
                keep.append(p)
        self._pending = keep
        self._queued_items -= n
        return batch

    async def _execute(self, key: Hashable, batch: list[_Pending]) -> None:
        blocks, n = [p.block for p in batch], sum(p.size for p in batch)
        start = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, key, blocks)
            if len(results) != len(blocks):
                raise RuntimeError(f"{self.name} batch function returned {len(results)} results for {len(blocks)}")
        except Exception as exc:  # every request of the batch gets the error
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        run_s = self._last_run_s = time.perf_counter() - start
        if self._on_batch is not None:
            self._on_batch(n, run_s)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():  # a cancelled request (client went away) is skipped
                p.future.set_result((result, BatchStats(start - p.enqueued, run_s, n)))

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
