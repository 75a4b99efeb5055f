"""Filtered search at scale (issue 22, part 3): range filters on a payload-indexed field vs an unfiltered flat search
of the same collection, measured in one process.

    python benchmarks/filters.py                      # 1M items, 64 bits
    python benchmarks/filters.py --quick --json f.json  # 50k items

Items: uniform random 64-bit codes, ids ``doc-%08d``, metadata ``{"price": i, "tag": "t%d" % (i % 7)}`` with
``price`` a random permutation of 0..n-1, so a range of price selects exactly its share of the items. ``price`` is
declared a payload index (``Collection.index_fields``). Filters: ``price`` in a range selecting 1% and one selecting
30%. Each filter, and no filter, is timed over the same ``--queries`` random queries (top-10, exact: flat), in two
ways: one query per call (latency-bound, what one HTTP request does) and every query in one call (the batch path).
FAISS runs on one thread (the machine is shared), every mode beside its own unfiltered baseline. A collection keeps
a filter's matching rows until its next write, so the same filter again is answered from memory; the last row, "1%,
a new filter per query", gives every query its own range (shifted by one), so nothing kept is used again: what a
first search with a filter costs. Every filtered result is compared with brute force (popcount of XOR over the
matching items, sorted by (distance, id)): the distances must be equal, and the ids equal wherever the k-th
distance is not tied.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/filters.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
import tempfile
import time
from typing import Any

import faiss
import numpy as np
from hamdex.index import Collection

LOG = logging.getLogger(__name__)
N_BITS = 64
K = 10
BATCH = 100_000


def build(path: Path, n: int, rng: np.random.Generator) -> tuple[Collection, np.ndarray, np.ndarray]:
    """A collection of ``n`` random codes with a payload-indexed ``price``; returns it, the codes and the prices."""
    codes = rng.integers(0, 256, (n, N_BITS // 8), dtype=np.uint8)
    price = rng.permutation(n)
    coll = Collection.create(path, N_BITS, "bench")
    start = time.perf_counter()
    for lo in range(0, n, BATCH):
        hi = min(n, lo + BATCH)
        ids = [f"doc-{i:08d}" for i in range(lo, hi)]
        coll.upsert(
            ids,
            codes[lo:hi],
            [{"price": int(p), "tag": f"t{i % 7}"} for i, p in zip(range(lo, hi), price[lo:hi], strict=True)],
        )
    LOG.info("inserted %d items in %.1fs", n, time.perf_counter() - start)
    start = time.perf_counter()
    coll.index_fields(["price"])
    LOG.info("payload index on price built in %.1fs", time.perf_counter() - start)
    return coll, codes, price


def brute_force(queries: np.ndarray, codes: np.ndarray, selected: np.ndarray) -> list[list[tuple[int, str]]]:
    """Top-K (distance, id) among the ``selected`` item numbers, by (distance, id)."""
    sub = codes[selected]
    out = []
    for q in queries:
        d = np.bitwise_count(sub ^ q).sum(axis=1, dtype=np.int64)
        order = np.lexsort((selected, d))[:K]  # ids are doc-%08d: their order is the item number's
        out.append([(int(d[i]), f"doc-{selected[i]:08d}") for i in order])
    return out


def agrees(got: list[list[Any]], want: list[list[tuple[int, str]]]) -> bool:
    for hits, exact in zip(got, want, strict=True):
        pairs = [(h.distance, h.id) for h in hits]
        if [d for d, _ in pairs] != [d for d, _ in exact]:
            return False
        last = exact[-1][0] if exact else 0
        if {p for p in pairs if p[0] < last} != {p for p in exact if p[0] < last}:
            return False
    return True


def selected(price: np.ndarray, where: dict[str, Any]) -> np.ndarray:
    """Item numbers whose price is in the filter's range."""
    bounds = where["price"]
    return np.flatnonzero((price >= bounds.get("$gte", -1)) & (price < bounds["$lt"]))


def row(name: str, where, price: np.ndarray, one: float, batch: float | None, ok: bool | None) -> dict[str, Any]:
    share = 1.0 if where is None else len(selected(price, where)) / len(price)
    return {
        "filter": name,
        "where": where,
        "selected": share,
        "qps_one_per_call": one,
        "qps_batch": batch,
        "equal_to_brute_force": ok,
    }


def timed(fn, reps: int) -> float:
    """Median seconds of ``reps`` runs of ``fn``."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(n: int, n_queries: int, reps: int, seed: int) -> dict[str, Any]:
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        coll, codes, price = build(Path(tmp) / "c", n, rng)
        queries = rng.integers(0, 256, (n_queries, N_BITS // 8), dtype=np.uint8)
        lo = int(rng.integers(0, n - n // 100))
        filters = {
            "none": None,
            "1%": {"price": {"$gte": lo, "$lt": lo + n // 100}},
            "30%": {"price": {"$lt": int(n * 0.3)}},
        }
        rows = []
        for name, where in filters.items():
            one = timed(lambda w=where: [coll.search(q[None], K, where=w) for q in queries], reps)
            batch = timed(lambda w=where: coll.search(queries, K, where=w), reps)
            ok = None
            if where is not None:
                ok = agrees(coll.search(queries, K, where=where), brute_force(queries, codes, selected(price, where)))
            rows.append(row(name, where, price, n_queries / one, n_queries / batch, ok))
        # a new filter for every query (a range shifted by one): nothing the collection keeps from one filtered
        # search to the next (the matching rows, per filter, until a write) is used again
        moved = [{"price": {"$gte": lo + i, "$lt": lo + i + n // 100}} for i in range(n_queries)]
        one = timed(lambda: [coll.search(q[None], K, where=w) for q, w in zip(queries, moved, strict=True)], reps)
        got = [coll.search(q[None], K, where=w)[0] for q, w in zip(queries, moved, strict=True)]
        want = [brute_force(q[None], codes, selected(price, w))[0] for q, w in zip(queries, moved, strict=True)]
        rows.append(row("1%, a new filter per query", moved[0], price, n_queries / one, None, agrees(got, want)))
        coll.close()
    base = rows[0]
    for r in rows:
        r["x_unfiltered_one_per_call"] = r["qps_one_per_call"] / base["qps_one_per_call"]
        r["x_unfiltered_batch"] = None if r["qps_batch"] is None else r["qps_batch"] / base["qps_batch"]
    return {"n": n, "n_bits": N_BITS, "k": K, "queries": n_queries, "reps": reps, "faiss_threads": 1, "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['n']:,} items, {result['n_bits']} bits, exact top-{result['k']}, {result['queries']} queries, "
        f"FAISS on {result['faiss_threads']} thread",
        "",
        "| filter | selects | QPS, 1 query/call | x unfiltered | QPS, batch | x unfiltered | = brute force |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ok = "-" if r["equal_to_brute_force"] is None else ("yes" if r["equal_to_brute_force"] else "NO")
        batch = "- | -" if r["qps_batch"] is None else f"{r['qps_batch']:.0f} | {r['x_unfiltered_batch']:.2f}"
        lines.append(
            f"| {r['filter']} | {r['selected']:.1%} | {r['qps_one_per_call']:.0f} "
            f"| {r['x_unfiltered_one_per_call']:.2f} | {batch} | {ok} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="items (default 1M)")
    parser.add_argument("--queries", type=int, default=100, help="queries per timing")
    parser.add_argument("--reps", type=int, default=3, help="timings per mode (the median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="50k items, 50 queries, 1 rep (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.n, args.queries, args.reps = min(args.n, 50_000), 50, 1
    result = run(args.n, args.queries, args.reps, args.seed)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if not all(r["equal_to_brute_force"] in (None, True) for r in result["rows"]):
        raise SystemExit("a filtered result differs from brute force")


if __name__ == "__main__":
    main()
