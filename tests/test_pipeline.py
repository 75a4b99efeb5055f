"""service.bulk.pipeline: the prefetching reader and the ordered background writer of the bulk job."""

from __future__ import annotations

import threading
import time

import pytest
from hamdex.service.bulk.pipeline import Worker, prefetch


def test_prefetch_yields_everything_in_order():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))


def test_prefetch_runs_at_most_depth_ahead():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    it = prefetch(source(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)  # the producer fills the queue, then waits
    # consumed 1; 2 queued; 1 more produced and waiting to be queued
    assert len(produced) <= 1 + 2 + 1
    assert list(it) == list(range(1, 50))


def test_prefetch_raises_the_source_error_where_the_item_would_come():
    def source():
        yield 1
        yield 2
        raise ValueError("bad block")

    got = []
    with pytest.raises(ValueError, match="bad block"):
        for item in prefetch(source()):
            got.append(item)
    assert got == [1, 2]


def test_closing_prefetch_early_stops_its_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    it = prefetch(endless(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert threading.active_count() == before


def test_worker_runs_calls_in_order_and_waits_on_close():
    done = []

    def slow_append(i):
        time.sleep(0.001)
        done.append(i)

    with Worker(slow_append, depth=2) as worker:
        for i in range(30):
            worker.submit(i)
    assert done == list(range(30))


def test_worker_raises_a_failed_call_at_the_next_submit_and_drops_the_rest():
    done = []

    def fn(i):
        if i == 3:
            raise OSError("disk full")
        done.append(i)

    worker = Worker(fn, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            worker.submit(i)
            time.sleep(0.002)
    worker.close()  # the error was raised once; close does not raise it again
    assert done == [0, 1, 2]


def test_worker_error_raised_at_close():
    def fn():
        raise RuntimeError("late")

    worker = Worker(fn)
    worker.submit()
    with pytest.raises(RuntimeError, match="late"):
        worker.close()


def test_worker_exit_with_an_error_keeps_it_and_still_finishes_queued_calls():
    done = []
    with pytest.raises(KeyError):
        with Worker(done.append, depth=4) as worker:
            worker.submit(1)
            worker.submit(2)
            raise KeyError("caller failed")
    assert done == [1, 2]


@pytest.mark.parametrize("depth", [0, -1])
def test_depth_must_be_positive(depth):
    with pytest.raises(ValueError):
        Worker(print, depth=depth)
    with pytest.raises(ValueError):
        next(prefetch([1], depth=depth))
