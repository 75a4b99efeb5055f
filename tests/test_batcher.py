"""The micro-batcher: coalescing, per-key separation, order, errors and backpressure."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from hamdex.service.batcher import MicroBatcher, QueueFull


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_coalesced_and_results_split_in_order() -> None:
    calls: list[tuple[str, list[int]]] = []

    def fn(key, blocks):
        calls.append((key, [x for b in blocks for x in b]))
        return [[x * 10 for x in b] for b in blocks]

    async def main():
        b = MicroBatcher(fn, name="t", max_batch=100, max_wait_ms=50)
        results = await asyncio.gather(*(b.submit("k", [i, i + 1000], 2) for i in range(20)))
        await b.close()
        return results

    results = run(main())
    assert [r for r, _ in results] == [[i * 10, (i + 1000) * 10] for i in range(20)]
    assert len(calls) < 20  # coalesced: fewer model calls than requests
    assert sum(len(items) for _, items in calls) == 40
    assert max(stats.batch_items for _, stats in results) > 2


def test_keys_are_never_mixed_and_max_batch_is_respected() -> None:
    calls: list[tuple[str, int]] = []

    def fn(key, blocks):
        assert all(item[0] == key for b in blocks for item in b)
        calls.append((key, sum(len(b) for b in blocks)))
        return [[item[1] for item in b] for b in blocks]

    async def main():
        b = MicroBatcher(fn, name="t", max_batch=8, max_wait_ms=20)
        reqs = [b.submit(key, [(key, i), (key, i + 1)], 2) for i in range(12) for key in ("a", "b")]
        out = await asyncio.gather(*reqs)
        await b.close()
        return out

    out = run(main())
    assert [r for r, _ in out][:2] == [[0, 1], [0, 1]]
    assert all(n <= 8 for _, n in calls)
    assert {k for k, _ in calls} == {"a", "b"}


def test_oversized_request_runs_alone() -> None:
    sizes = []

    def fn(key, blocks):
        sizes.append(sum(len(b) for b in blocks))
        return blocks

    async def main():
        b = MicroBatcher(fn, name="t", max_batch=4, max_wait_ms=1)
        r, _ = await b.submit("k", list(range(10)), 10)
        await b.close()
        return r

    assert run(main()) == list(range(10))
    assert sizes == [10]


def test_an_error_reaches_every_request_of_its_batch_and_the_batcher_recovers() -> None:
    def fn(key, blocks):
        if any("bad" in b for b in blocks):
            raise ValueError("boom")
        return blocks

    async def main():
        b = MicroBatcher(fn, name="t", max_batch=10, max_wait_ms=30)
        res = await asyncio.gather(b.submit("k", ["bad"], 1), b.submit("k", ["ok"], 1), return_exceptions=True)
        after, _ = await b.submit("k", ["fine"], 1)
        await b.close()
        return res, after

    res, after = run(main())
    assert all(isinstance(r, ValueError) for r in res)
    assert after == ["fine"]


def test_full_queue_gives_queue_full_then_recovers() -> None:
    gate = threading.Event()

    def fn(key, blocks):
        gate.wait(5)
        return blocks

    async def main():
        b = MicroBatcher(fn, name="t", max_batch=2, max_wait_ms=0, max_queue=4)
        first = asyncio.ensure_future(b.submit("k", [1, 2], 2))  # taken by the worker, blocks in fn
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(b.submit("k", [i], 1)) for i in range(4)]  # fills the queue
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as info:
            await b.submit("k", [99], 1)
        assert info.value.retry_after >= 1
        gate.set()
        done = await asyncio.gather(first, *queued)
        again, _ = await b.submit("k", [7], 1)
        await b.close()
        return done, again

    done, again = run(main())
    assert [r for r, _ in done] == [[1, 2], [0], [1], [2], [3]]
    assert again == [7]


def test_batch_runs_off_the_event_loop() -> None:
    def fn(key, blocks):
        time.sleep(0.2)
        return blocks

    async def main():
        b = MicroBatcher(fn, name="t", max_wait_ms=0)
        task = asyncio.ensure_future(b.submit("k", [1], 1))
        ticks = 0
        start = time.perf_counter()
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await b.close()
        return ticks, time.perf_counter() - start

    ticks, elapsed = run(main())
    assert elapsed >= 0.2 and ticks >= 5  # the loop kept running while the batch slept


def test_workers_run_batches_at_once_and_every_result_is_right() -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def fn(key, blocks):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return [[x * 2 for x in b] for b in blocks]

    async def main(workers):
        b = MicroBatcher(fn, name="t", max_batch=4, max_wait_ms=0, workers=workers)
        start = time.perf_counter()
        results = await asyncio.gather(*(b.submit("k", [i], 1) for i in range(16)))
        elapsed = time.perf_counter() - start
        await b.close()
        return results, elapsed

    results, _ = run(main(1))
    assert peak[0] == 1 and [r for r, _ in results] == [[2 * i] for i in range(16)]
    peak[0] = 0
    results, _ = run(main(2))
    assert peak[0] == 2  # two batches overlapped
    assert [r for r, _ in results] == [[2 * i] for i in range(16)]  # each request got its own result
    with pytest.raises(ValueError):
        MicroBatcher(fn, name="t", workers=0)


def test_each_batch_thread_gets_its_own_openmp_thread_count() -> None:
    """OpenMP's thread count is per calling thread: one set in the event loop's thread does not reach the batch
    threads, so the engine sets it in each one as it starts (thread_init)."""
    import faiss
    from hamdex.service.engine import search_threads
    from hamdex.service.settings import Settings

    def fn(key, blocks):
        return [faiss.omp_get_max_threads() for _ in blocks]

    async def main(thread_init):
        b = MicroBatcher(fn, name="t", max_batch=1, max_wait_ms=0, workers=2, thread_init=thread_init)
        results = await asyncio.gather(*(b.submit("k", i, 1) for i in range(8)))
        await b.close()
        return {r for r, _ in results}

    main_threads = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(3)  # this thread only
        assert run(main(lambda: faiss.omp_set_num_threads(1))) == {1}
        assert run(main(lambda: faiss.omp_set_num_threads(2))) == {2}
    finally:
        faiss.omp_set_num_threads(main_threads)
    assert search_threads(Settings(faiss_threads=5)) == 5
    assert search_threads(Settings(search_workers=2)) == max(1, (os.cpu_count() or 2) // 2)
    assert search_threads(Settings(search_workers=10_000)) == 1
