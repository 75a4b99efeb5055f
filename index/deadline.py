"""When a search must give up: a deadline on the monotonic clock and/or a cancel flag set from another thread.

A thread running a search cannot be killed, so the search stops cooperatively: the collection checks its
deadline between blocks of work (blocks of queries, over-fetch rounds, chunks of a scan). A single FAISS call is
not interrupted, which is why the work is cut into blocks that each take milliseconds.
"""

from __future__ import annotations

import threading
import time

from hamdex.index.errors import SearchTimeoutError


class Deadline:
    """``Deadline(seconds)`` expires that long from now; ``Deadline()`` only when :meth:`cancel` is called."""

    def __init__(self, seconds: float | None = None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Expire now (from any thread): e.g. the request was answered 504 or its client went away."""
        self._cancelled.set()

    @property
    def expired(self) -> bool:
        return self._cancelled.is_set() or (self.at is not None and time.monotonic() >= self.at)

    def check(self) -> None:
        """Raise :class:`SearchTimeoutError` once expired."""
        if self.expired:
            raise SearchTimeoutError("the search passed its deadline and was stopped")


def check(deadline: Deadline | None) -> None:
    """:meth:`Deadline.check`, for an optional deadline."""
    if deadline is not None:
        deadline.check()
