"""Issue 17, defects 4 and 5: the work of a radius or filtered search is bounded by k (not by the items inside the
radius or passing a loose pre-selection), a search stops at its deadline, heavy searches queue with backpressure
(429), and an oversized batch is refused by count before its body is parsed and validated.

Each test counts work (ids described from SQLite, rows scanned, validations) rather than timing it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hamdex.index.collection as collection_module
import numpy as np
import orjson
import pytest
from hamdex.index import Collection
from hamdex.index.deadline import Deadline
from hamdex.index.errors import SearchTimeoutError
from hamdex.index.scan import TopK, hamming
from hamdex.index.store import Store
from hamdex.index.validation import matches
from hamdex.models import bits
from hamdex.service import fast_search
from hamdex.service.app import create_app
from hamdex.service.batcher import MicroBatcher
from hamdex.service.engine import HEAVY_NICENESS, Engine, Timings
from hamdex.service.metrics import Metrics
from hamdex.service.middleware import batch_exceeds
from hamdex.service.routes import encode as encode_route
from hamdex.service.routes import items as items_route
from hamdex.service.routes import search as search_route
from hamdex.service.settings import Settings

from tests.conftest import MakeClient
from tests.helpers import assert_error, metric, serving
from tests.test_production import settings_for

N, N_BITS = 3000, 16


def oracle(query: np.ndarray, ids: list[str], codes: np.ndarray, keep: Callable[[int], bool] = lambda j: True):
    """Every (distance, id) of the kept items, sorted: the exact answer by popcount of XOR."""
    d = np.bitwise_count(codes ^ query[None, :]).sum(axis=1)
    return sorted((int(d[j]), ids[j]) for j in range(len(ids)) if keep(j))


def pairs(hits: list) -> list[tuple[int, str]]:
    return [(h.distance, h.id) for h in hits]


@pytest.fixture
def described(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Number of ids of each Store.describe call (the rows a search materialises from SQLite)."""
    calls: list[int] = []
    original = Store.describe

    def counting(self: Store, internal_ids: Any, *args: Any) -> Any:
        calls.append(len(internal_ids))
        return original(self, internal_ids, *args)

    monkeypatch.setattr(Store, "describe", counting)
    return calls


def filled(path: Path, kind: str = "flat", metadata: Callable[[int], dict] | None = None, **params: int):
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (N, N_BITS // 8), dtype=np.uint8)
    ids = [f"item-{j:05d}" for j in range(N)]
    coll = Collection.create(path, N_BITS, "fp", kind, params or None)
    coll.upsert(ids, codes, [metadata(j) if metadata else {"j": j} for j in range(N)])
    return coll, ids, codes


# ---- radius search: bounded by k --------------------------------------------------------------------------------


def test_radius_with_k_describes_only_k_rows(tmp_path: Path, described: list[int]) -> None:
    """radius = n_bits holds every item; with k = 1 only one row per query is read from SQLite (was: all 3,000)."""
    coll, ids, codes = filled(tmp_path / "c")
    queries = codes[:3]
    described.clear()
    got = coll.range_search(queries, N_BITS, k=1)
    assert sum(described) <= len(queries)
    for q, hits in zip(queries, got, strict=True):
        assert len(hits) == 1 and hits[0].distance == oracle(q, ids, codes)[0][0]
        assert hits[0].metadata == {"j": ids.index(hits[0].id)}  # metadata read for the returned hit
    described.clear()
    got = coll.range_search(queries, 3, k=5, include_metadata=False)
    assert sum(described) <= 5 * len(queries)
    for q, hits in zip(queries, got, strict=True):
        assert [d for d, _ in pairs(hits)] == [d for d, _ in oracle(q, ids, codes) if d <= 3][:5]
    coll.close()


@pytest.mark.parametrize(
    ("kind", "params"),
    [("flat", {}), ("ivf", {"nlist": 8, "nprobe": 2, "train_size_per_list": 39}), ("hash", {"b": 8}),
     ("multihash", {"nhash": 2, "b": 8})],
)  # fmt: skip
def test_radius_with_k_is_the_first_k_of_the_whole_radius(tmp_path: Path, kind: str, params: dict[str, int]) -> None:
    """The rule: the k nearest within the radius. Distances are those of every hit in the radius, cut at k; the ids
    strictly nearer than the k-th distance are the same; at the k-th distance the index picks among the ties."""
    coll, ids, codes = filled(tmp_path / "c", kind, **params)
    coll.delete(ids[:40])  # tombstoned kinds: deleted items never come back
    queries = codes[40:60]
    for radius in (2, 5, N_BITS):
        every = coll.range_search(queries, radius)
        for k in (1, 7, 100):
            for whole, cut in zip(every, coll.range_search(queries, radius, k=k), strict=True):
                assert [h.distance for h in cut] == [h.distance for h in whole[:k]]
                assert pairs(cut) == sorted(pairs(cut))  # (distance, id) order
                if cut:
                    kth = cut[-1].distance
                    assert {h.id for h in cut if h.distance < kth} == {h.id for h in whole if h.distance < kth}
    coll.close()


# ---- filters the SQLite pre-selection used to pass whole --------------------------------------------------------


def test_null_filter_selects_explicit_nulls_in_sqlite(
    tmp_path: Path, described: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """{"zzz": null} matches only items whose zzz is null; json_extract IS NULL also passed every item without zzz,
    so the filter could not be narrowed and the over-fetch loop searched the whole index."""
    monkeypatch.setattr(collection_module, "FILTER_SCAN_MAX", 100)
    special = {5: {"zzz": None}, 17: {"zzz": None}, 900: {"zzz": 0}, 901: {"zzz": False}, 902: {"zzz": ""}}
    coll, ids, codes = filled(tmp_path / "c", metadata=lambda j: special.get(j, {"flag": True, 'a"b': j % 7}))
    query = codes[0]
    described.clear()
    hits = coll.search(query[None], 10, where={"zzz": None})[0]
    assert pairs(hits) == oracle(query, ids, codes, lambda j: j in (5, 17))
    assert all(h.metadata == {"zzz": None} for h in hits)
    assert coll.search(query[None], 10, where={"zzz": "nope"}) == [[]]  # a filter matching nothing
    assert coll.search(query[None], 10, where={"flag": 1}) == [[]]  # true is not 1, in SQLite too
    assert described == []  # answered from the rows SQLite selected: no over-fetch through the index
    quoted = coll.search(query[None], 5, where={'a"b': 3})[0]  # a field name a JSON path cannot quote
    want = oracle(query, ids, codes, lambda j: j not in special and j % 7 == 3)
    assert [h.distance for h in quoted] == [d for d, _ in want[:5]] and all(h.metadata['a"b'] == 3 for h in quoted)
    coll.close()


STORED = [1, 1.0, True, False, 0, "1", None, "", "a", "a\u0000b", "\u00fc", 0.1, 2**53 + 1, float(2**53),
          2**63 - 1, -(2**63), -(2**63) - 1, 2**70, float(2**70), [1], {"a": 1}]  # fmt: skip


@pytest.mark.parametrize("scan_max", [1000, 0])  # the rows SQLite selects, or the ids it describes (over-fetch)
# keys JSON writes escaped (non-ASCII, control characters) are stored escaped: a JSON path would not find them
@pytest.mark.parametrize("key", ["v", 'a"b', "a.b", "k\u0000ey", "\u00e9t\u00e9", "a\nb", "\U0001f600"])
def test_sqlite_selection_agrees_with_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan_max: int, key: str
) -> None:
    """SQLite now selects by JSON type and value, and alone decides when it can: it must agree with matches()."""
    monkeypatch.setattr(collection_module, "FILTER_SCAN_MAX", scan_max)
    metadata = [{key: v} for v in STORED] + [{}, {"other": 1}]
    ids = [f"m{j:02d}" for j in range(len(metadata))]
    coll = Collection.create(tmp_path / "c", N_BITS, "fp")
    coll.upsert(ids, np.zeros((len(ids), N_BITS // 8), np.uint8), metadata)
    query = np.zeros((1, N_BITS // 8), np.uint8)
    for value in [v for v in STORED if not isinstance(v, (list, dict))] + [2**64, float("inf"), -0.0]:
        want = [i for i, m in zip(ids, metadata, strict=True) if matches(m, {key: value})]
        got = coll.search(query, len(ids), where={key: value})[0]
        assert [h.id for h in got] == want, value
    coll.close()


def test_broad_filter_whose_matches_are_far_stays_bounded(
    tmp_path: Path, described: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More items match than an exact scan takes at once, and they are the farthest from the query: over-fetching
    stops at FILTER_FETCH_ROWS and the matching rows are scanned exactly, chunk by chunk (was: the whole index
    described from SQLite, 4x deeper each round)."""
    monkeypatch.setattr(collection_module, "FILTER_SCAN_MAX", 50)
    monkeypatch.setattr(collection_module, "FILTER_FETCH_ROWS", 256)
    rng = np.random.default_rng(3)
    query = np.zeros(N_BITS // 8, np.uint8)
    codes = rng.integers(0, 256, (N, N_BITS // 8), dtype=np.uint8)
    far = set(np.argsort(-np.bitwise_count(codes).sum(axis=1), kind="stable")[:200].tolist())
    ids = [f"item-{j:05d}" for j in range(N)]
    coll = Collection.create(tmp_path / "c", N_BITS, "fp")
    coll.upsert(ids, codes, [{"far": j in far} for j in range(N)])
    described.clear()
    for k, radius in ((10, None), (300, None), (10, 12)):
        if radius is None:
            got = coll.search(query[None], k, where={"far": True})[0]
        else:
            got = coll.range_search(query[None], radius, k=k, where={"far": True})[0]
        want = [p for p in oracle(query, ids, codes, lambda j: j in far) if radius is None or p[0] <= radius]
        assert pairs(got) == want[:k]  # exact, ties by id
    assert sum(described) <= 3 * (64 + 256)  # two bounded rounds per search at most, never the 3,000 items
    coll.close()


# ---- deadlines --------------------------------------------------------------------------------------------------


def test_a_search_past_its_deadline_raises(tmp_path: Path) -> None:
    coll, _, codes = filled(tmp_path / "c")
    expired = Deadline(0)
    for call in (
        lambda d: coll.search(codes[:2], 5, deadline=d),
        lambda d: coll.search(codes[:2], 5, where={"j": 3}, deadline=d),
        lambda d: coll.range_search(codes[:2], 4, k=5, deadline=d),
        lambda d: coll.range_search(codes[:2], 4, deadline=d),
    ):
        with pytest.raises(SearchTimeoutError):
            call(expired)
        assert call(Deadline(60))  # a live deadline changes nothing
    coll.close()


def test_a_cancelled_scan_stops_at_the_next_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while it scans, a search reads one more chunk at most, not the rest of the rows."""
    monkeypatch.setattr(collection_module, "FILTER_SCAN_MAX", 10)
    monkeypatch.setattr(collection_module, "FILTER_FETCH_ROWS", 1)  # straight to the chunked scan
    monkeypatch.setattr("hamdex.index.store._CHUNK", 100)
    coll, _, codes = filled(tmp_path / "c", metadata=lambda j: {"all": 1})
    deadline, chunks = Deadline(), []
    original = Store.matching_chunks

    def cancelling(self: Store, where: dict, deadline: Deadline | None = None) -> Iterator[Any]:
        for chunk in original(self, where, deadline):
            chunks.append(len(chunk.ids))
            deadline.cancel()  # e.g. the request was answered 504 meanwhile
            yield chunk

    monkeypatch.setattr(Store, "matching_chunks", cancelling)
    with pytest.raises(SearchTimeoutError):
        coll.search(codes[:1], 5, where={"all": 1}, deadline=deadline)
    assert len(chunks) <= 2 and N // 100 == 30
    coll.close()


def test_a_filter_scan_inside_sqlite_stops_at_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite reads every row to apply a filter (1.4 s at 1M items): its progress handler polls the deadline, so the
    scan itself stops, not only the work after it."""
    monkeypatch.setattr("hamdex.index.store._PROGRESS_STEPS", 100)
    coll, _, codes = filled(tmp_path / "c")
    scanned = []
    monkeypatch.setattr(collection_module, "TopK", lambda *a: scanned.append(a))

    class AfterThreePolls(Deadline):
        polls = 0

        @property
        def expired(self) -> bool:
            self.polls += 1
            return self.polls > 3

    deadline = AfterThreePolls()
    with pytest.raises(SearchTimeoutError):
        coll.search(codes[:1], 5, where={"zzz": None}, deadline=deadline)
    assert deadline.polls >= 4 and scanned == []  # stopped inside the SQL scan, before any row was ranked
    monkeypatch.setattr(collection_module, "TopK", TopK)
    assert coll.search(codes[:1], 5, where={"zzz": None}, deadline=Deadline(60)) == [[]]  # the handler is gone
    coll.close()


def test_topk_keeps_the_smallest_ids_among_ties() -> None:
    queries = np.zeros((2, 2), np.uint8)
    codes = np.zeros((50, 2), np.uint8)  # every row at distance 0
    codes[::2, 0] = 1  # even rows at distance 1
    ids = [f"{j:03d}" for j in range(50)][::-1]
    top = TopK(queries, 3)
    for lo in range(0, 50, 7):  # the answer does not depend on how the rows are cut into blocks
        top.add(codes[lo : lo + 7], ids[lo : lo + 7], list(range(lo, min(lo + 7, 50))))
    assert [[(d, i) for d, i, _ in row] for row in top.result()] == [[(0, "000"), (0, "002"), (0, "004")]] * 2
    assert np.array_equal(hamming(queries, codes), np.bitwise_count(codes).sum(axis=1)[None].repeat(2, 0))


# ---- the service: 504 stops the work, 429 when heavy searches are full --------------------------------------------


def put(client: Any, n: int = 200) -> None:
    codes = np.random.default_rng(1).integers(0, 256, (n, 2), dtype=np.uint8)
    items = [{"id": f"i{j}", "code": bits.to_wire(c, "hex"), "metadata": {"g": j % 3}} for j, c in enumerate(codes)]
    assert client.post("/v1/items", json={"items": items}).status_code == 200


def test_a_timed_out_search_stops_its_thread(
    make_client: MakeClient, dense_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the 504 the search thread stops at its next check (was: it ran on to the end, for minutes)."""
    client = make_client(dense_model_dir, request_timeout_s=0.3)
    put(client)
    stopped = threading.Event()

    class Slow(TopK):
        def add(self, *args: Any) -> None:
            try:
                for _ in range(500):  # a scan of many chunks, 10 ms each, checking between them
                    threading.Event().wait(0.01)
                    super().add(*args)
            finally:
                stopped.set()

    monkeypatch.setattr(collection_module, "TopK", Slow)
    for body in ({"filter": {"g": 1}}, {"filter": {"g": 1}, "radius": 8}):
        stopped.clear()
        resp = client.post("/v1/search", json={"queries": [{"code": "0000"}], "k": 5, **body})
        assert_error(resp, 504, "timeout")
        assert stopped.wait(2)  # 500 chunks would take 5 s
    monkeypatch.setattr(collection_module, "TopK", TopK)
    assert client.post("/v1/search", json={"queries": [{"code": "0000"}], "filter": {"g": 1}}).status_code == 200


def test_heavy_searches_queue_then_429(dense_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One heavy search runs, one waits (the queue holds one query), the next is refused with 429 and
    Retry-After; plain top-k searches are not held up by them."""
    app = create_app(settings_for(dense_model_dir, tmp_path, heavy_search_workers=1, queue_max_items=1))
    entered, release = threading.Event(), threading.Event()
    original = Collection.range_search

    def blocking(self: Collection, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "range_search", blocking)
    radius = {"queries": [{"code": "0000"}], "k": 3, "radius": 4}
    filtered = {"queries": [{"code": "0000"}], "k": 3, "filter": {"g": 0}}

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def run() -> dict[str, Any]:
        async with serving(app) as client:
            items = [{"id": f"i{j}", "code": f"{j:04x}", "metadata": {"g": j % 3}} for j in range(50)]
            assert (await client.post("/v1/items", json={"items": items})).status_code == 200
            running = asyncio.create_task(client.post("/v1/search", json=radius))
            await until(entered.is_set)
            queued = asyncio.create_task(client.post("/v1/search", json=filtered))
            await until(lambda: app.state.engine.heavy.queued_items == 1)
            refused = [await client.post("/v1/search", json=body) for body in (radius, filtered)]
            plain = await client.post("/v1/search", json={"queries": [{"code": "0000"}], "k": 3})
            release.set()
            return {"refused": refused, "plain": plain, "waited": await asyncio.gather(running, queued)}

    got = asyncio.run(run())
    for resp in got["refused"]:
        assert_error(resp, 429, "queue_full")
        assert int(resp.headers["retry-after"]) >= 1
    assert got["plain"].status_code == 200
    assert [r.status_code for r in got["waited"]] == [200, 200]
    assert [h["id"] for h in got["waited"][1].json()["results"][0]] == ["i0", "i12", "i18"]  # ties: smallest ids


@pytest.mark.skipif(sys.platform != "linux", reason="the nice value is per thread on Linux only")
def test_heavy_searches_run_at_a_lower_cpu_priority() -> None:
    """So that a long scan takes the cores the event loop and top-k searches leave (/livez stays fast)."""
    engine = Engine(Settings(), Metrics())
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def run() -> int:
        try:
            return await engine.heavy_search(priority, 1, Timings())
        finally:
            await engine.close()

    assert asyncio.run(run()) == min(19, own + HEAVY_NICENESS)
    assert priority() == own  # the caller's own priority is untouched


def test_a_request_cancelled_in_the_queue_never_runs() -> None:
    ran: list[int] = []
    gate = threading.Event()

    def fn(key: Any, blocks: list[int]) -> list[int]:
        gate.wait(5)
        ran.extend(blocks)
        return blocks

    async def run() -> None:
        batcher = MicroBatcher(fn, name="t", max_batch=1, workers=1)
        first = asyncio.create_task(batcher.submit(object(), 1, 1))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit(object(), 2, 1))
        third = asyncio.create_task(batcher.submit(object(), 3, 1))
        await asyncio.sleep(0.05)
        second.cancel()
        gate.set()
        assert (await first)[0] == 1 and (await third)[0] == 3
        assert batcher.queued_items == 0
        await batcher.close()

    asyncio.run(run())
    assert ran == [1, 3]


# ---- oversized batches: refused by count, before parsing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "limit", "over"),
    [
        (b'{"queries": [1, 2, 3]}', 2, True),
        (b'{"queries": [1, 2]}', 2, False),
        (b' { "k" : {"queries": [1, 2, 3]}, "queries" : [ {"code": "00"}, [1, [2]], "x" ] } ', 2, True),
        (b'{"quer\\u0069es": [1, 2, 3]}', 2, True),  # the key as JSON reads it
        (b'{"queries": [NaN, 1e999, 123456789012345678901234567890]}', 2, True),  # what FastAPI's json reads
        (b'{"queries": [1, 2, 3', 2, True),  # past the limit before the body breaks off
        (b'{"queries": [1, 2', 2, False),
        (b"[1, 2, 3]", 2, False),
        (b'{"queries": 3}', 2, False),
        (b'{"queries": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", 2, False),  # too deep: the route's to refuse
        (b'\xff{"queries": [1, 2, 3]}', 2, False),
    ],
)
def test_batch_exceeds(body: bytes, limit: int, over: bool) -> None:
    assert batch_exceeds(body, "queries", limit) is over


def test_an_oversized_batch_is_refused_before_validation(
    make_client: MakeClient, dense_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50,000 queries: 422 batch_too_large without the fast path's or the route's validation running (was: the body
    validated by pydantic twice on the event loop, then refused by the route's count)."""
    client = make_client(dense_model_dir, max_batch=100)
    calls = {"validate": 0, "check_batch": 0}
    real = fast_search.SearchRequest

    class Counting:
        @staticmethod
        def model_validate_json(body: bytes) -> Any:
            calls["validate"] += 1
            return real.model_validate_json(body)

    def counting_check(n: int, *args: Any) -> None:
        calls["check_batch"] += 1
        return check_batch(n, *args)

    check_batch = search_route.check_batch
    monkeypatch.setattr(fast_search, "SearchRequest", Counting)
    for module in (search_route, items_route, encode_route):
        monkeypatch.setattr(module, "check_batch", counting_check)
    n = 50_000
    bodies = {
        "/v1/search": {"queries": [{"code": "0000"}] * n, "k": 1},
        "/v1/collections/default/search": {"queries": [{"code": "0000"}] * n},
        "/v1/items": {"items": [{"id": f"i{j}", "code": "0000"} for j in range(n)]},
        "/v1/encode": {"inputs": [[0.0] * 12] * n},
    }
    for path, body in bodies.items():
        resp = client.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
        error = assert_error(resp, 422, "batch_too_large")
        assert "at most 100" in error["error"], path
    assert calls == {"validate": 0, "check_batch": 0}
    fits = client.post("/v1/search", json={"queries": [{"code": "0000"}] * 100, "k": 1})
    # the fast path answered it: parsed once, checked once (routes.search.check_search; the route would check again)
    assert fits.status_code == 200 and calls == {"validate": 1, "check_batch": 1}
    assert_error(client.post("/v1/items", json={"items": []}), 422, "empty_batch")  # the route's own check
    metrics = client.get("/metrics").text
    assert metric(metrics, "hamdex_http_requests_total", route="/v1/collections/{name}/search", status="422") == 1
