"""Two small pipeline stages for the bulk job, so reading, encoding and writing overlap.

- :func:`prefetch` runs an iterator in a background thread, at most ``depth`` items ahead of its consumer.
- :class:`Worker` runs calls in order in one background thread, at most ``depth`` queued behind the caller.

Both hand errors back to the caller's thread: :func:`prefetch` raises the source's exception where the consumer
would have received the item, and :class:`Worker` raises a failed call's exception at the next ``submit`` or at
``close``. Numpy copies, torch kernels and SQLite commits release the GIL, so the stages really run in parallel.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


def prefetch(source: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``source``'s items, produced in a background thread up to ``depth`` ahead.

    Closing the generator early (break, exception) stops the thread after the item it is producing."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((_END, exc))
            return
        put((_END, None))

    thread = threading.Thread(target=produce, name="hamdex-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class Worker:
    """Run ``fn(*args)`` calls in submission order in one background thread (a bounded queue in front of it).

    Use as a context manager: leaving the block waits for the queued calls, then raises the first error if one
    happened. After an error the remaining queued calls are dropped."""

    def __init__(self, fn: Callable[..., Any], depth: int = 2, name: str = "hamdex-worker") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._fn = fn
        self._calls: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None  # raised once, in the caller's thread
        self._failed = False  # set for good after an error: later calls are dropped
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            args = self._calls.get()
            if args is _END:
                return
            if not self._failed:
                try:
                    self._fn(*args)
                except BaseException as exc:  # raised in the submitting thread
                    self._error, self._failed = exc, True

    def submit(self, *args: Any) -> None:
        """Queue a call (blocks while ``depth`` calls wait); raises an earlier call's error instead."""
        self._raise()
        self._calls.put(args)

    def close(self) -> None:
        """Wait for every queued call, then raise the first error, if any."""
        if self._thread.is_alive():
            self._calls.put(_END)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # already failing: still wait for the queued (good) calls, but keep the original error
            self.close()
        except BaseException:
            pass
