"""The two collection backends side by side (issue 7): FAISS flat (SQLite + IndexBinaryFlat) and Milvus
(milvus-lite, BIN_FLAT, HAMMING), the same codes through the same ``Collection`` interface, in one process.

    python benchmarks/backends.py                        # 200k items, 64 bits
    python benchmarks/backends.py --items 1000000 --json var/backends.json
    python benchmarks/backends.py --quick                # CI smoke: 5k items, 200 queries

Data: the structured codes of benchmarks/data.py (random centres, each bit flipped with probability 0.1;
seeded), ids ``doc-%08d``, no metadata. Measured per backend: durable insert (``upsert`` in ``--batch`` batches;
Milvus writes them 1,000 rows per call), reopen (``close`` then ``open_collection``), batched search QPS (all
queries in one ``search`` call, k=10, metadata included; median of ``--reps``), single-query QPS (one query per
call, as a service request without batching), and recall@10 against exact search (ties counted as correct).
Needs the milvus extra (``pip install 'hamdex[milvus]'``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/backends.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import os

# as ``hamdex serve`` does: idle OpenMP threads must not spin on the cores the other backend needs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from hamdex.index import create_collection, open_collection  # noqa: E402

from benchmarks import data  # noqa: E402

LOG = logging.getLogger("benchmarks.backends")
FINGERPRINT = "bench-backends"
K = 10
BACKENDS = ("faiss", "milvus")
METRICS = (  # (key, label, higher is better)
    ("insert_items_per_s", "durable insert, items/s", True),
    ("open_s", "reopen, s", False),
    ("search_qps", f"search QPS, batched, k={K}", True),
    ("single_qps", "search QPS, one query per call", True),
    ("recall@10", "recall@10 vs exact", True),
)


@dataclass(frozen=True)
class Config:
    items: int = 200_000
    bits: int = 64
    queries: int = 1_000
    single_queries: int = 200
    batch: int = 10_000
    reps: int = 3
    centres: int = 1_000
    flip: float = 0.1
    seed: int = 0
    workdir: str | None = None
    faiss_threads: int = max(1, (os.cpu_count() or 1) // 2)  # the service's default (HAMDEX_FAISS_THREADS)


def bench_backend(backend: str, cfg: Config, db: np.ndarray, queries: np.ndarray, kth: np.ndarray, root: Path):
    ids = data.item_ids(len(db))
    path = root / backend
    collection = create_collection(path, cfg.bits, FINGERPRINT, backend=backend)
    start = time.perf_counter()
    for lo in range(0, len(db), cfg.batch):
        collection.upsert(ids[lo : lo + cfg.batch], db[lo : lo + cfg.batch])
    insert_s = time.perf_counter() - start
    collection.close()
    start = time.perf_counter()
    collection = open_collection(path)
    open_s = time.perf_counter() - start
    try:
        collection.search(queries[:10], K)  # warm-up
        times, hits = [], None
        for _ in range(cfg.reps):
            start = time.perf_counter()
            hits = collection.search(queries, K)
            times.append(time.perf_counter() - start)
        single = queries[: cfg.single_queries]
        start = time.perf_counter()
        for q in single:
            collection.search(q[None, :], K)
        single_s = time.perf_counter() - start
        recall = data.recall_at_k(queries, db, data.hits_to_rows(hits, K), kth)
        assert len(collection) == len(db)
    finally:
        collection.close()
    result = {
        "insert_items_per_s": len(db) / insert_s,
        "open_s": open_s,
        "search_qps": len(queries) / statistics.median(times),
        "single_qps": len(single) / single_s,
        "recall@10": recall,
    }
    LOG.info("%s: %s", backend, result)
    return result


def run(cfg: Config) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(cfg.faiss_threads)
    db, queries = data.make_codes(cfg.seed, cfg.bits, cfg.items, cfg.queries, cfg.centres, cfg.flip)
    kth = data.exact_kth(db, queries, K)
    root = Path(tempfile.mkdtemp(prefix="hamdex-backends-", dir=cfg.workdir))
    try:
        results = {backend: bench_backend(backend, cfg, db, queries, kth, root) for backend in BACKENDS}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"config": asdict(cfg), "machine": machine(), **results}


def machine() -> dict[str, Any]:
    import faiss
    import pymilvus

    versions = {"faiss": faiss.__version__, "pymilvus": pymilvus.__version__}
    try:
        from importlib.metadata import version

        versions["milvus-lite"] = version("milvus-lite")
    except Exception:  # not installed: a server URI
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "versions": versions}


def format_table(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [
        f"{cfg['items']:,} items, {cfg['bits']} bits, {cfg['queries']:,} queries; upsert batches of {cfg['batch']:,}; "
        f"{cfg['faiss_threads']} FAISS thread(s)",
        "",
        "| metric | FAISS flat | Milvus (milvus-lite, BIN_FLAT) | Milvus / FAISS |",
        "|---|---|---|---|",
    ]
    for key, label, _ in METRICS:
        faiss_value, milvus_value = results["faiss"][key], results["milvus"][key]
        digits = 3 if key in ("open_s", "recall@10") else 0
        ratio = f"{milvus_value / faiss_value:.2f}x" if faiss_value else "-"
        lines.append(f"| {label} | {faiss_value:,.{digits}f} | {milvus_value:,.{digits}f} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=Config.items)
    parser.add_argument("--bits", type=int, default=Config.bits)
    parser.add_argument("--queries", type=int, default=Config.queries)
    parser.add_argument("--batch", type=int, default=Config.batch)
    parser.add_argument("--reps", type=int, default=Config.reps)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--faiss-threads", type=int, default=Config.faiss_threads)
    parser.add_argument("--workdir", default=None, help="parent of the temporary collections (default: /tmp)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="5k items, 200 queries: a smoke test")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    cfg = Config(
        items=5_000 if args.quick else args.items,
        bits=args.bits,
        queries=200 if args.quick else args.queries,
        single_queries=50 if args.quick else Config.single_queries,
        batch=1_000 if args.quick else args.batch,
        reps=1 if args.quick else args.reps,
        seed=args.seed,
        workdir=args.workdir,
        faiss_threads=args.faiss_threads,
    )
    results = run(cfg)
    print(format_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
