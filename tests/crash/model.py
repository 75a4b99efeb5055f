"""The client side of the crash test: its model of the state the server must hold (from acknowledged writes), the
write generator, and the writer thread that streams writes until the kill."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

TAGS = ("a", "b", "ü", "日本", "")  # metadata strings, some non-ASCII to check the JSON round trip

State = dict[str, tuple[str, dict]]  # id -> (code hex, metadata) of every live item


@dataclass
class Write:
    n: int  # write number; every upserted item's metadata carries it as "w"
    kind: str  # "upsert" or "delete"
    items: State = field(default_factory=dict)  # upsert: id -> (code, metadata)
    id: str = ""  # delete: the id

    def describe(self) -> str:
        return f"upsert of {len(self.items)}" if self.kind == "upsert" else "delete"


@dataclass
class Tally:
    kills: int = 0
    acknowledged: int = 0  # write requests answered 2xx
    acknowledged_items: int = 0
    lost_writes: set[int] = field(default_factory=set)  # numbers of acknowledged writes found not reflected
    corrupted: int = 0
    in_flight_applied: int = 0
    in_flight_absent: int = 0
    kills_between_writes: int = 0  # no write in flight when the kill landed
    kills_mid_snapshot: int = 0  # a snapshot temp file was left behind
    snapshots: set[int] = field(default_factory=set)  # sequence numbers of snapshots seen on disk after a kill
    startup_s: list[float] = field(default_factory=list)
    verify_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, message: str) -> None:
        if kind == "lost":
            pass  # counted by write number in lost_writes
        else:
            self.corrupted += 1
        if len(self.problems) < 50:
            self.problems.append(f"{kind}: {message}")

    def summary(self, seconds: float) -> dict[str, Any]:
        startup = self.startup_s or [float("nan")]
        return {
            "kills": self.kills,
            "acknowledged": self.acknowledged,
            "lost": len(self.lost_writes),
            "corrupted": self.corrupted,
            "in_flight_applied": self.in_flight_applied,
            "in_flight_absent": self.in_flight_absent,
            "seconds": round(seconds, 2),
            "details": {
                "acknowledged_items": self.acknowledged_items,
                "kills_between_writes": self.kills_between_writes,
                "kills_mid_snapshot": self.kills_mid_snapshot,
                "snapshots_seen": len(self.snapshots),
                "startup_s_mean": round(float(np.mean(startup)), 3),
                "startup_s_max": round(float(np.max(startup)), 3),
                "verify_s_mean": round(float(np.mean(self.verify_s or [0.0])), 3),
                "problems": self.problems,
            },
        }


class Model:
    """The state the server must hold, from acknowledged writes; plus the write generator."""

    def __init__(self, pool: int, n_bytes: int, rng: np.random.Generator, max_items: int, delete_fraction: float):
        self.pool = [f"item-{i:05d}" for i in range(pool)]
        self.n_bytes, self.rng = n_bytes, rng
        self.max_items, self.delete_fraction = max_items, delete_fraction
        self.state: State = {}
        self.last_write: dict[str, int] = {}  # id -> number of the acknowledged write that set its state
        self.n = 0

    def next_write(self, size: int | None = None) -> Write:
        self.n += 1
        rng = self.rng
        if size is None and self.state and rng.random() < self.delete_fraction:
            live = sorted(self.state)
            return Write(self.n, "delete", id=live[int(rng.integers(len(live)))])
        size = size or int(rng.integers(1, self.max_items + 1))
        ids = rng.choice(len(self.pool), size=min(size, len(self.pool)), replace=False)
        items = {
            self.pool[i]: (rng.bytes(self.n_bytes).hex(), {"w": self.n, "i": j, "tag": TAGS[int(rng.integers(5))]})
            for j, i in enumerate(ids.tolist())
        }
        return Write(self.n, "upsert", items=items)

    def apply(self, w: Write) -> None:
        if w.kind == "upsert":
            self.state.update(w.items)
            self.last_write.update(dict.fromkeys(w.items, w.n))
        else:
            self.state.pop(w.id, None)
            self.last_write[w.id] = w.n


def send(client: httpx.Client, w: Write) -> httpx.Response:
    if w.kind == "upsert":
        body = {"items": [{"id": i, "code": c, "metadata": m} for i, (c, m) in w.items.items()]}
        return client.post("/v1/items", json=body)
    return client.delete(f"/v1/items/{w.id}")


class Writer(threading.Thread):
    """Streams writes, one request at a time, until ``stop`` is set or a request fails.

    ``stop`` is set before the kill, so a request started is started before the kill: the one that fails with
    a transport error is the write in flight at the kill (``pending``).
    """

    def __init__(self, url: str, model: Model, tally: Tally, stop: threading.Event, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.tally, self.stop, self.lock = url, model, tally, stop, lock
        self.pending: Write | None = None
        self.died_unkilled = False
        self.requests = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                with self.lock:
                    w = self.model.next_write()
                try:
                    resp = send(client, w)
                except httpx.TransportError:
                    self.pending = w
                    self.died_unkilled = not self.stop.is_set()
                    return
                self.requests += 1
                with self.lock:
                    if not self._acknowledge(w, resp):
                        return

    def _acknowledge(self, w: Write, resp: httpx.Response) -> bool:
        model, tally = self.model, self.tally
        if resp.is_success:
            tally.acknowledged += 1
            tally.acknowledged_items += len(w.items) or 1
            model.apply(w)
            return True
        if w.kind == "delete" and resp.status_code == 404:  # the id is expected live: its upsert was lost
            tally.lost_writes.add(model.last_write[w.id])
            tally.problem("lost", f"delete of {w.id} (expected live since write {model.last_write[w.id]}): 404")
            tally.acknowledged += 1
            model.apply(w)
            return True
        tally.problem("corrupted", f"write {w.n} ({w.describe()}): HTTP {resp.status_code} {resp.text[:200]}")
        self.pending = w  # its effect is unknown: resolved like a write in flight
        return False
