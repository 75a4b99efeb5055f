"""Recall under update churn (issue 17): the index kinds that delete by tombstone (hnsw, hash, multihash) keep their
recall while every item is re-written many times over, because the collection rebuilds their index in the
background once tombstones pass ``index.kinds.REBUILD_FRACTION`` of it.

    python benchmarks/churn.py                                  # 20k items, 64 bits, churn 10x, every such kind
    python benchmarks/churn.py --quick --json var/churn.json    # CI smoke: 1,000 items
    python benchmarks/churn.py --kinds hnsw --without-rebuild   # also the same churn with rebuilds turned off

Data: benchmarks/data.py's structured codes (seeded), ids ``doc-%08d``, no metadata. Per kind, in one process:

* baseline: recall@10 of ``Collection.search`` against exact (flat) results, ties counted, just after the insert;
* churn: ``--churn`` rounds, each re-upserting every item with a fresh code from the same centres, in batches of
  ``--batch`` in a random order (updates totalling ``churn`` x the collection); updates/s over all of it;
* after: recall@10 against the exact results of the final codes, measured as soon as the last write returns (a
  background rebuild may be running: that is what a search sees), the hits per query, the tombstone share then,
  and how many rebuilds ran;
* fresh: recall@10 of a new collection of the same kind built on the final codes (what churn must not lose).

Goal: recall@10 after >= 0.95 (GOAL), and "kept": after no lower than fresh less 0.01. The hash kinds answer
top-k from the buckets within ``nflip`` flips only, so their recall is low before any churn on small collections;
for them "kept" is the measure of churn.

``--without-rebuild`` repeats the churn with rebuilds turned off (the behaviour before the fix) beside it.
JSON: ``{"config", "machine", "kinds": {kind: {...}}, "runtime_s"}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/churn.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np
from hamdex.index import kinds
from hamdex.index.collection import Collection

from benchmarks import data

LOG = logging.getLogger("benchmarks.churn")
FINGERPRINT = "bench-churn"
K = 10
TOMBSTONE_KINDS = ["hnsw", "hash", "multihash"]
GOAL = 0.95  # recall@10 after churn
KEPT_MARGIN = 0.01  # ... and at most this far below the recall before it
KIND_KEYS = (  # every kind's record (the smoke test checks them)
    "items",
    "recall@10_before",
    "recall@10_after",
    "recall@10_fresh",
    "hits_per_query_after",
    "tombstone_share_after",
    "rebuilds",
    "updates",
    "updates_per_s",
    "goal_met",
    "kept",
)


@dataclass(frozen=True)
class Config:
    items: int = 20_000
    bits: int = 64
    kinds: tuple[str, ...] = tuple(TOMBSTONE_KINDS)
    churn: int = 10  # rounds: every item re-written this many times
    batch: int = 1_000
    queries: int = 500
    centres: int = 1_000
    flip: float = 0.1
    seed: int = 0
    without_rebuild: bool = False
    workdir: str | None = None


def recall(coll: Collection, state: np.ndarray, queries: np.ndarray) -> tuple[float, float]:
    """(recall@10 against the exact results over ``state``, ties counted; mean hits per query)."""
    hits = coll.search(queries, K, include_metadata=False)
    rows = data.hits_to_rows(hits, K)
    kth = data.exact_kth(state, queries, K)
    return data.recall_at_k(queries, state, rows, kth), float(np.mean([len(h) for h in hits]))


def count_rebuilds(coll: Collection) -> list[int]:
    """A counter of the index swaps a rebuild makes (the collection's ``_rebuild`` returning True)."""
    counter = [0]
    rebuild = coll._rebuild

    def counted() -> bool:
        done = rebuild()
        counter[0] += done
        return done

    coll._rebuild = counted  # type: ignore[method-assign]
    return counter


def churn_kind(cfg: Config, kind: str, root: Path, rebuild: bool) -> dict[str, Any]:
    rng, centres = data.seeded_centres(cfg.seed, cfg.bits, cfg.centres)
    state = data.structured_codes(rng, centres, cfg.items, cfg.flip)
    queries = data.structured_codes(rng, centres, cfg.queries, cfg.flip)
    ids = data.item_ids(cfg.items)
    out: dict[str, Any] = {"items": cfg.items}
    path = root / f"{kind}-{'rebuild' if rebuild else 'none'}"
    with Collection.create(path, cfg.bits, FINGERPRINT, kind) as coll:
        rebuilds = count_rebuilds(coll)
        for s in range(0, cfg.items, cfg.batch):
            coll.upsert(ids[s : s + cfg.batch], state[s : s + cfg.batch])
        _wait(coll)
        out["recall@10_before"], out["hits_per_query_before"] = recall(coll, state, queries)
        rebuilds[0] = 0
        start = time.perf_counter()
        for r in range(cfg.churn):
            order = rng.permutation(cfg.items)
            for s in range(0, cfg.items, cfg.batch):
                rows = np.sort(order[s : s + cfg.batch])
                state[rows] = data.structured_codes(rng, centres, len(rows), cfg.flip)
                coll.upsert([ids[i] for i in rows], state[rows])
            LOG.info("%s: round %d/%d, %d tombstones", kind, r + 1, cfg.churn, len(coll._index.tombstones))
        out["churn_s"] = time.perf_counter() - start
        out["updates"] = cfg.churn * cfg.items
        out["updates_per_s"] = out["updates"] / out["churn_s"]
        out["tombstone_share_after"] = len(coll._index.tombstones) / max(coll._index.ntotal, 1)
        out["recall@10_after"], out["hits_per_query_after"] = recall(coll, state, queries)
        _wait(coll)
        out["rebuilds"] = rebuilds[0]
        out["recall@10_settled"], _ = recall(coll, state, queries)
    with Collection.create(root / f"{kind}-fresh-{rebuild}", cfg.bits, FINGERPRINT, kind) as fresh:
        for s in range(0, cfg.items, cfg.batch):
            fresh.upsert(ids[s : s + cfg.batch], state[s : s + cfg.batch])
        out["recall@10_fresh"], _ = recall(fresh, state, queries)
    out["goal_met"] = out["recall@10_after"] >= GOAL
    out["kept"] = out["recall@10_after"] >= out["recall@10_fresh"] - KEPT_MARGIN
    return out


def _wait(coll: Collection) -> None:
    """Let the background snapshot or rebuild in flight finish."""
    if coll._snapshot_thread is not None:
        coll._snapshot_thread.join()


def bench_kind(cfg: Config, kind: str, root: Path) -> dict[str, Any]:
    out = churn_kind(cfg, kind, root, rebuild=True)
    if cfg.without_rebuild:
        saved = kinds.REBUILD_FRACTION
        kinds.REBUILD_FRACTION = float("inf")  # never wants a rebuild: the behaviour before issue 17
        try:
            off = churn_kind(cfg, kind, root, rebuild=False)
        finally:
            kinds.REBUILD_FRACTION = saved
        out["without_rebuild"] = {k: off[k] for k in ("recall@10_after", "hits_per_query_after", "updates_per_s")}
    return out


def run(cfg: Config) -> dict[str, Any]:
    start = time.perf_counter()
    results: dict[str, Any] = {
        "config": {**asdict(cfg), "k": K, "rebuild_fraction": kinds.REBUILD_FRACTION, "goal": GOAL},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
            "load_before": [round(x, 2) for x in os.getloadavg()],
        },
        "kinds": {},
    }
    with tempfile.TemporaryDirectory(prefix="hamdex-churn-bench-", dir=cfg.workdir) as tmp:
        for kind in cfg.kinds:
            results["kinds"][kind] = bench_kind(cfg, kind, Path(tmp))
            LOG.info("%s: %s", kind, results["kinds"][kind])
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["runtime_s"] = time.perf_counter() - start
    return results


def format_table(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [
        f"\n### Recall@10 under churn: {cfg['items']:,} items, {cfg['bits']} bits, every item re-written"
        f" {cfg['churn']}x in batches of {cfg['batch']:,} (rebuild at {cfg['rebuild_fraction']:.0%} tombstones)\n",
        "| kind | recall@10 before | recall@10 after | recall@10 fresh | goal >= 0.95 | kept | hits/query after"
        " | tombstones after | rebuilds | updates/s | recall@10 after, no rebuild |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in results["kinds"].items():
        off = r.get("without_rebuild")
        no_rebuild = f"{off['recall@10_after']:.4f}" if off else "-"
        lines.append(
            f"| {kind} | {r['recall@10_before']:.4f} | {r['recall@10_after']:.4f} | {r['recall@10_fresh']:.4f}"
            f" | {'yes' if r['goal_met'] else 'no'} | {'yes' if r['kept'] else 'no'}"
            f" | {r['hits_per_query_after']:.1f} | {r['tombstone_share_after']:.1%} | {r['rebuilds']}"
            f" | {r['updates_per_s']:,.0f} | {no_rebuild} |"
        )
    m = results["machine"]
    lines.append(
        f"\n{m['cpus']} CPUs, FAISS {m['faiss']} ({m['faiss_threads']} threads); load average {m['load_before']}"
        f" before, {m['load_after']} after; {results['runtime_s']:.0f} s in all."
    )
    return "\n".join(lines)


def _kinds(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in TOMBSTONE_KINDS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"kinds are some of {', '.join(TOMBSTONE_KINDS)}; got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, help="items per collection (default 20,000; --quick 1,000)")
    parser.add_argument("--bits", type=int, default=Config.bits, help="code length, a multiple of 8")
    parser.add_argument("--kinds", type=_kinds, help="tombstoned kinds (default all: hnsw,hash,multihash)")
    parser.add_argument("--churn", type=int, default=Config.churn, help="rounds of re-writing every item")
    parser.add_argument("--batch", type=int, help="items per upsert (default 1,000; --quick 100)")
    parser.add_argument("--queries", type=int, help="queries (default 500; --quick 100)")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--without-rebuild", action="store_true", help="also churn with rebuilds turned off")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1,000 items")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", help="parent directory of the temp collections (default: system temp)")
    args = parser.parse_args(argv)
    if args.bits <= 0 or args.bits % 8:
        parser.error(f"--bits must be a positive multiple of 8, got {args.bits}")
    for name in ("items", "churn", "batch", "queries"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be positive, got {value}")
    return args


def config_from_args(args: argparse.Namespace) -> Config:
    quick = args.quick
    return Config(
        items=args.items or (1_000 if quick else Config.items),
        bits=args.bits,
        kinds=tuple(args.kinds or TOMBSTONE_KINDS),
        churn=args.churn,
        batch=args.batch or (100 if quick else Config.batch),
        queries=args.queries or (100 if quick else Config.queries),
        seed=args.seed,
        without_rebuild=args.without_rebuild,
        workdir=args.workdir,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamdex.index").setLevel(logging.WARNING)
    results = run(config_from_args(args))
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    return results


if __name__ == "__main__":
    main()
