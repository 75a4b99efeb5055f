"""Progress that does not garble logs. On a terminal: a tqdm bar (tqdm, the one progress library here). Otherwise
(Docker logs, CI, a file): no carriage-return redraws, but a plain log line through ``logging`` every
``LOG_EVERY_S`` seconds and one when the loop ends. ``HAMDEX_PROGRESS`` forces ``bar``, ``log`` or ``off``.

Used by every long loop: training epochs, bulk indexing and upload, scattering features, benchmark harnesses."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

LOG = logging.getLogger("hamdex.progress")
LOG_EVERY_S = 30.0  # a line per half minute keeps a long job visible without flooding the log


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "item",
    initial: int = 0,
    enabled: bool = True,
    smoothing: float = 0.3,
    **bar_options: Any,
) -> Any:
    """A tqdm bar, or a :class:`LogProgress` when stderr is not a terminal; both take ``update``,
    ``set_postfix``, ``set_postfix_str``, iteration and ``with``. ``bar_options``: more of tqdm's (the bar only)."""
    mode = _mode() if enabled else "off"
    if mode == "log":
        return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    from tqdm.auto import tqdm  # a widget in notebooks, a bar on terminals

    options = {"total": total, "desc": desc, "unit": unit, "initial": initial, "smoothing": smoothing, **bar_options}
    return tqdm(iterable, disable=mode == "off", **options)


def _mode() -> str:
    forced = os.environ.get("HAMDEX_PROGRESS", "").strip().lower()
    if forced in ("bar", "log", "off"):
        return forced
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return "bar"
    stream = sys.stderr
    return "bar" if stream is not None and hasattr(stream, "isatty") and stream.isatty() else "log"


class LogProgress:
    """tqdm's interface as periodic log lines: ``indexing: 40,000/100,000 (40%) in 12.0s, 3,300 item/s``."""

    def __init__(
        self, iterable: Iterable[Any] | None, *, total: int | None, desc: str, unit: str, initial: int = 0
    ) -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self._start = total, initial, initial
        self._t0 = self._last = time.monotonic()
        self._postfix = ""
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "LogProgress without an iterable is updated by hand"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= LOG_EVERY_S:
            self._last = now
            self._log(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._log(time.monotonic(), done=True)

    def line(self, now: float, done: bool = False) -> str:
        seconds = now - self._t0
        count = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "")
        if self.total and not done:
            count += f" ({self.n / self.total:.0%})"
        rate = (self.n - self._start) / seconds if seconds > 0 else 0.0
        text = f"{self.desc}: {count} {'done ' if done else ''}in {seconds:.1f}s, {rate:,.0f} {self.unit}/s"
        return text + (f"; {self._postfix}" if self._postfix else "")

    def _log(self, now: float, done: bool = False) -> None:
        LOG.info("%s", self.line(now, done))
