"""Durable-collection performance (issue 4): writes, restart, memory, deletes and search of index.Collection, each
beside raw FAISS measured in the same run on the same codes.

    python benchmarks/store.py                                   # 1M items, 64 and 256 bits, every kind
    python benchmarks/store.py --bits 64 --kinds flat,ivf        # a subset
    python benchmarks/store.py --quick --json var/store.json     # CI smoke: 20k items, 64 bits, every kind
    python benchmarks/store.py --nested                          # flat vs nested kind, 1M 64-bit PCA codes

Data: synthetic structured codes (``--centres`` random centres, each bit of an item flipped with probability
``--flip``; seeded), the setting of the peer table in ../shared/notes/benchmarks.md. Queries are fresh draws from
the same centres. Items have ids ``doc-%08d`` and no metadata.

Per width and kind, in one process (the machine is shared and noisy, so every number has its baseline beside it):

* durable insert: ``upsert`` in ``--batch`` batches (each one SQLite transaction, fsynced; background snapshots
  every 100k changes as in production) vs the same kind's raw FAISS index ``add`` (in memory, not durable);
* search: ``Collection.search`` of all queries in one call (k=10, default params, with and without metadata) vs
  raw FAISS batched ``search`` on its own index of the same kind and parameters; median of ``--reps`` runs,
  interleaved; recall@10 of both against exact (flat) results, ties counted as correct;
* single-id durable deletes (``--deletes`` of them): p50 / p99 latency, then search QPS again (tombstones);
* ``close`` (a snapshot), then ``Collection.open`` in a fresh subprocess, timed there: ``restart_s``; RSS after
  open minus RSS of that process before it (imports done), per item: ``bytes_per_item`` (and the peak during
  open, the kernel's peak-RSS mark reset just before it: ``peak_bytes_per_item``). Then manifest.json and
  the snapshots are removed and the same is measured again (a rebuild from the store):
  ``restart_s_no_snapshot``. Baselines: raw ``faiss.read_index_binary`` of the raw index, and the raw build time.
  Also reported: the FAISS index's own serialized size and the collection's bytes on disk, per item.

``hnsw`` is built on the first ``--hnsw-items`` items only (its graph build runs at ~10k items/s on 2 cores), and
every hnsw number, its raw baseline and its exact reference are on that prefix. ``flat`` always runs: it gives
the headline numbers. JSON: ``{bits: {...}}`` plus the headline keys of 64 bits (or the first width) at top level.

``--nested`` (issue 20, docs/nested.md) is a separate mode: top-10 QPS of the ``nested`` kind (``--prefix-bits`` x
``--candidates``) against ``flat`` on the full code, both the index kinds (index.kinds) a collection searches
under its read lock, all queries in one call, each nested setting timed interleaved with flat (median of
``--reps``), recall@10 against flat's exact top-10 (ties counted as correct). The codes are nested by
construction, as uniform random ones would have no useful prefix: the signs of the top ``--bits`` principal
components of Fashion-MNIST's pixels, largest first (so a prefix is the sign of the coarsest components), the
60k training images tiled to ``--items`` with Gaussian pixel noise of std ``--noise`` grey levels per copy (drawn
in the component space, where orthonormal components keep its std); queries are test images, without noise.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/store.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import gc
import json
import logging
import math
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np
from hamdex.index.collection import Collection
from hamdex.index.kinds import KINDS
from hamdex.index.snapshot import MANIFEST_FILE, SNAPSHOT_GLOB

from benchmarks.data import K, exact_kth, hits_to_rows, item_ids, make_codes, recall_at_k
from benchmarks.report import publish, setup_logging
from hamdex.progress import progress

LOG = logging.getLogger("benchmarks.store")
REPO = Path(__file__).resolve().parents[1]
FINGERPRINT = "bench-store"
ALL_KINDS = ["flat", "ivf", "hnsw", "hash", "multihash"]
INSERT_GOAL = 100_000  # durable items/s at 64 bits
RESTART_GOAL_S = 5.0  # for 1M items, with and without a fresh snapshot
FLAT_OVERHEAD_GOAL = 32  # bytes per item above the code bytes
HEADLINE_KEYS = (
    "insert_items_per_s",
    "raw_insert_items_per_s",
    "restart_s",
    "restart_s_no_snapshot",
    "bytes_per_item",
    "delete_ms_p50",
    "delete_ms_p99",
    "search_qps",
    "raw_search_qps",
    "recall@10",
    "raw_recall@10",
)
PER_KIND_KEYS = (  # of each kind's record, all finite and positive (the smoke test checks them)
    "items",
    "insert_items_per_s",
    "raw_add_items_per_s",
    "search_qps",
    "search_qps_ids_only",
    "search_qps_after_deletes",
    "raw_search_qps",
    "recall@10",
    "raw_recall@10",
    "delete_ms_p50",
    "delete_ms_p99",
    "close_s",
    "restart_s",
    "restart_s_no_snapshot",
    "raw_load_s",
    "raw_build_s",
    "bytes_per_item",
    "bytes_per_item_no_snapshot",
    "peak_bytes_per_item",
    "peak_bytes_per_item_no_snapshot",
    "index_bytes_per_item",
    "raw_index_bytes_per_item",
    "disk_bytes_per_item",
)


@dataclass(frozen=True)
class Config:
    items: int = 1_000_000
    bits: tuple[int, ...] = (64, 256)
    kinds: tuple[str, ...] = tuple(ALL_KINDS)
    batch: int = 10_000
    queries: int = 1_000
    deletes: int = 200  # single-id durable deletes per kind
    hnsw_items: int = 200_000
    reps: int = 3  # search timings per side; the median is reported
    centres: int = 1_000
    flip: float = 0.1
    seed: int = 0
    progress: bool = True
    workdir: str | None = None  # parent of the temp dir (default: the system's, /tmp)


# ---- data and exact reference ---------------------------------------------------------------------------------


def make_data(cfg: Config, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(database uint8 (items, n_bytes), queries uint8 (queries, n_bytes)), seeded by (seed, n_bits)."""
    return make_codes(cfg.seed, n_bits, cfg.items, cfg.queries, cfg.centres, cfg.flip)


# ---- raw FAISS baselines ---------------------------------------------------------------------------------------


def raw_index(kind: str, n_bits: int, train: np.ndarray) -> faiss.IndexBinary:
    """The FAISS index a collection of ``kind`` keeps, with the kind's default parameters, without the id map."""
    p = KINDS[kind].defaults
    if kind == "flat":
        return faiss.IndexBinaryFlat(n_bits)
    if kind == "ivf":
        quantizer = faiss.IndexBinaryFlat(n_bits)
        index = faiss.IndexBinaryIVF(quantizer, n_bits, p["nlist"])
        index.own_fields = True  # the index frees the quantizer
        quantizer.this.disown()
        index.nprobe = p["nprobe"]
        index.train(train)
        return index
    if kind == "hnsw":
        index = faiss.IndexBinaryHNSW(n_bits, p["m"])
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
        return index
    if kind == "hash":
        index = faiss.IndexBinaryHash(n_bits, min(p["b"], n_bits))
        index.nflip = p["nflip"]
        return index
    if kind == "multihash":
        nhash, b = p["nhash"], p["b"]
        if nhash * b > n_bits:
            b = max(1, n_bits // nhash)
        index = faiss.IndexBinaryMultiHash(n_bits, nhash, b)
        index.nflip = p["nflip"]
        return index
    raise ValueError(f"unknown kind {kind!r}")


def ivf_train_rows(n: int, batch: int) -> int:
    """How many codes a collection's IVF index is trained on: every code up to the batch that crosses the size."""
    p = KINDS["ivf"].defaults
    need = p["nlist"] * p["train_size_per_list"]
    return min(n, math.ceil(need / batch) * batch)


# ---- measurement helpers ---------------------------------------------------------------------------------------


def _rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; else the peak, all that resource gives)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_rss()


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0). Without it the peak of a child process includes its
    parent's RSS at fork (exec carries it over), and import-time transients."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """Peak RSS in bytes: VmHWM (resettable), else getrusage's ru_maxrss (whole-process)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def probe_open(path: str) -> dict[str, Any]:
    """In this (fresh) process: time ``Collection.open`` and the RSS it adds. Run as ``--probe-open PATH``."""
    gc.collect()
    before, peak_reset = _rss(), _reset_peak_rss()
    start = time.perf_counter()
    coll = Collection.open(path)
    open_s = time.perf_counter() - start
    peak = _peak_rss()
    gc.collect()
    return {
        "open_s": open_s,
        "items": len(coll),
        "rss_before": before,
        "rss_after": _rss(),
        "peak": peak,
        "peak_reset": peak_reset,
    }


def _probe_subprocess(path: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe-open", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"open probe failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each function, run in turns ``reps`` times (noise hits every side alike)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(_seconds(fn))
    return {name: float(np.median(t)) for name, t in times.items()}


def _bar(cfg: Config, total: int, desc: str) -> Any:
    return progress(total=total, desc=desc, enabled=cfg.progress, unit_scale=True, leave=False)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


# ---- one kind --------------------------------------------------------------------------------------------------


def bench_kind(
    cfg: Config, kind: str, n_bits: int, db: np.ndarray, queries: np.ndarray, kth: np.ndarray, workdir: Path
) -> dict[str, Any]:
    n, tag = len(db), f"{kind}/{n_bits}b"
    out: dict[str, Any] = {"items": n}
    ids = item_ids(n)

    # raw FAISS build, then ours, on the same codes in the same batches
    start = time.perf_counter()
    raw = raw_index(kind, n_bits, db[: ivf_train_rows(n, cfg.batch)] if kind == "ivf" else db[:0])
    with _bar(cfg, n, f"{tag} raw add") as bar:
        for s in range(0, n, cfg.batch):
            raw.add(db[s : s + cfg.batch])
            bar.update(len(db[s : s + cfg.batch]))
    out["raw_build_s"] = time.perf_counter() - start
    out["raw_add_items_per_s"] = n / out["raw_build_s"]

    path = workdir / f"{kind}-{n_bits}"
    coll = Collection.create(path, n_bits, FINGERPRINT, kind)
    start = time.perf_counter()
    with _bar(cfg, n, f"{tag} durable upsert") as bar:
        for s in range(0, n, cfg.batch):
            coll.upsert(ids[s : s + cfg.batch], db[s : s + cfg.batch])
            bar.update(len(ids[s : s + cfg.batch]))
    out["insert_s"] = time.perf_counter() - start
    out["insert_items_per_s"] = n / out["insert_s"]
    LOG.info(
        "%s: durable insert %.0f items/s, raw add %.0f", tag, out["insert_items_per_s"], out["raw_add_items_per_s"]
    )

    # search: ours (with and without metadata) and raw, interleaved; recall of each against the exact k-th distance
    q = len(queries)
    timings = _interleaved(
        {
            "ours": lambda: coll.search(queries, K),
            "ours_ids_only": lambda: coll.search(queries, K, include_metadata=False),
            "raw": lambda: raw.search(queries, K),
        },
        cfg.reps,
    )
    out["search_qps"] = q / timings["ours"]
    out["search_qps_ids_only"] = q / timings["ours_ids_only"]
    out["raw_search_qps"] = q / timings["raw"]
    out["recall@10"] = recall_at_k(queries, db, hits_to_rows(coll.search(queries, K)), kth)
    out["raw_recall@10"] = recall_at_k(queries, db, raw.search(queries, K)[1], kth)
    out["index_bytes_per_item"] = coll.index_bytes() / n
    out["raw_index_bytes_per_item"] = faiss.serialize_index_binary(raw).size / n
    LOG.info(
        "%s: search %.0f QPS (raw %.0f), recall@10 %.4f",
        tag,
        out["search_qps"],
        out["raw_search_qps"],
        out["recall@10"],
    )

    # single-id durable deletes, then search again (kinds that cannot remove keep tombstones)
    rng = np.random.default_rng([cfg.seed, n_bits, 1])
    victims = rng.choice(n, min(cfg.deletes, n - K), replace=False)
    latencies = []
    for row in progress(victims.tolist(), desc=f"{tag} deletes", enabled=cfg.progress, leave=False):
        start = time.perf_counter()
        coll.delete([ids[row]])
        latencies.append(time.perf_counter() - start)
    out["deletes"] = len(latencies)
    out["delete_ms_p50"], out["delete_ms_p99"] = (float(v) * 1e3 for v in np.percentile(latencies, [50, 99]))
    out["search_qps_after_deletes"] = q / _interleaved({"ours": lambda: coll.search(queries, K)}, cfg.reps)["ours"]
    if KINDS[kind].removes:  # raw FAISS remove_ids of one id at a time, in memory
        raw_lat = []
        for row in victims.tolist():
            start = time.perf_counter()
            raw.remove_ids(np.array([row], np.int64))
            raw_lat.append(time.perf_counter() - start)
        out["raw_delete_ms_p50"] = float(np.percentile(raw_lat, 50)) * 1e3

    # close (a snapshot), then restart in a fresh process, with and without the snapshot
    start = time.perf_counter()
    coll.close()
    out["close_s"] = time.perf_counter() - start
    out["disk_bytes_per_item"] = _dir_bytes(path) / n
    raw_file = workdir / f"raw-{kind}-{n_bits}.faissb"
    faiss.write_index_binary(raw, str(raw_file))
    raw = None  # free it before the probes
    start = time.perf_counter()
    loaded = faiss.read_index_binary(str(raw_file))
    out["raw_load_s"] = time.perf_counter() - start
    del loaded
    raw_file.unlink()
    live = n - out["deletes"]
    for suffix in ("", "_no_snapshot"):
        if suffix:
            (path / MANIFEST_FILE).unlink()
            for snap in path.glob(SNAPSHOT_GLOB):
                snap.unlink()
        probe = _probe_subprocess(path)
        if probe["items"] != live:
            raise RuntimeError(f"{tag}: reopened with {probe['items']} items, expected {live}")
        out[f"restart_s{suffix}"] = probe["open_s"]
        out[f"bytes_per_item{suffix}"] = (probe["rss_after"] - probe["rss_before"]) / live
        out[f"peak_bytes_per_item{suffix}"] = (probe["peak"] - probe["rss_before"]) / live
        out["peak_rss_reset"] = probe["peak_reset"]  # False: the peaks include the process's earlier history
    LOG.info(
        "%s: restart %.2fs, without snapshot %.2fs, RSS %.1f B/item",
        tag,
        out["restart_s"],
        out["restart_s_no_snapshot"],
        out["bytes_per_item"],
    )
    shutil.rmtree(path)
    return out


# ---- one width, goals ------------------------------------------------------------------------------------------


def bench_width(cfg: Config, n_bits: int, workdir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    db, queries = make_data(cfg, n_bits)
    kths: dict[int, np.ndarray] = {}
    kinds: dict[str, dict[str, Any]] = {}
    for kind in cfg.kinds:
        n = min(cfg.items, cfg.hnsw_items) if kind == "hnsw" else cfg.items
        if n not in kths:
            kths[n] = exact_kth(db[:n], queries)
        kinds[kind] = bench_kind(cfg, kind, n_bits, db[:n], queries, kths[n], workdir)
    flat = kinds["flat"]
    out: dict[str, Any] = {
        "items": cfg.items,
        "queries": cfg.queries,
        "insert_items_per_s": flat["insert_items_per_s"],
        "raw_insert_items_per_s": flat["raw_add_items_per_s"],
        "restart_s": flat["restart_s"],
        "restart_s_no_snapshot": flat["restart_s_no_snapshot"],
        "bytes_per_item": {k: v["bytes_per_item"] for k, v in kinds.items()},
        "delete_ms_p50": flat["delete_ms_p50"],
        "delete_ms_p99": flat["delete_ms_p99"],
        "search_qps": {k: v["search_qps"] for k, v in kinds.items()},
        "raw_search_qps": {k: v["raw_search_qps"] for k, v in kinds.items()},
        "recall@10": {k: v["recall@10"] for k, v in kinds.items()},
        "raw_recall@10": {k: v["raw_recall@10"] for k, v in kinds.items()},
        "kinds": kinds,
    }
    out["goals"] = goals(cfg, n_bits, kinds)
    out["seconds"] = time.perf_counter() - start
    return out


def _goal(name, kind, items, target, measured, raw, ok) -> dict[str, Any]:
    return {
        "goal": name,
        "kind": kind,
        "items": items,
        "target": target,
        "measured": measured,
        "raw_faiss": raw,
        "ratio": measured / raw if raw else None,
        "pass": ok,
    }


def goals(cfg: Config, n_bits: int, kinds: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Goal rows; ``pass`` is None where the goal does not apply (another width, a prefix of the items)."""
    flat = kinds["flat"]
    rows = [
        _goal(
            "durable insert items/s (raw: IndexBinaryFlat add, in memory)",
            "flat",
            flat["items"],
            f">= {INSERT_GOAL:,} at 64 bits",
            flat["insert_items_per_s"],
            flat["raw_add_items_per_s"],
            flat["insert_items_per_s"] >= INSERT_GOAL if n_bits == 64 else None,
        )
    ]
    for suffix, what, raw_key in (
        ("", "restart s, fresh snapshot (raw: read_index_binary)", "raw_load_s"),
        ("_no_snapshot", "restart s, no snapshot (raw: build from memory)", "raw_build_s"),
    ):
        for kind, r in kinds.items():
            value = r[f"restart_s{suffix}"]
            ok = value <= RESTART_GOAL_S if r["items"] == cfg.items else None
            rows.append(_goal(what, kind, r["items"], f"<= {RESTART_GOAL_S:g} s", value, r[raw_key], ok))
    limit = n_bits // 8 + FLAT_OVERHEAD_GOAL
    rows.append(
        _goal(
            "RSS bytes/item after open (raw: IndexBinaryFlat serialized)",
            "flat",
            flat["items"],
            f"<= {limit} (code + {FLAT_OVERHEAD_GOAL})",
            flat["bytes_per_item"],
            flat["raw_index_bytes_per_item"],
            flat["bytes_per_item"] <= limit,
        )
    )
    return rows


# ---- output ----------------------------------------------------------------------------------------------------


def _num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _sec(v: float | None) -> str:
    """Seconds to 3 significant digits (raw FAISS loads take microseconds, rebuilds tens of seconds)."""
    return "-" if v is None else f"{v:.3g}"


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.3g}x" if b else "-"


def _goal_value(goal: str, v: float | None) -> str:
    return _num(v) if "items/s" in goal else _num(v, 1) if "bytes" in goal else _sec(v)


def format_tables(results: dict[str, Any]) -> str:
    lines: list[str] = []
    for bits in results["bits"]:
        r = results[str(bits)]
        lines += [
            f"\n## {bits} bits: {r['items']:,} items, {r['queries']:,} queries, k={K}"
            f" (hnsw on {results['config']['hnsw_items_effective']:,} items)\n",
            "### Goals\n",
            "| goal | kind | items | target | measured | raw FAISS | ratio | pass |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for g in r["goals"]:
            ok = {True: "PASS", False: "FAIL", None: "n/a"}[g["pass"]]
            measured, raw = _goal_value(g["goal"], g["measured"]), _goal_value(g["goal"], g["raw_faiss"])
            lines.append(
                f"| {g['goal']} | {g['kind']} | {g['items']:,} | {g['target']} | {measured} | {raw}"
                f" | {_ratio(g['measured'], g['raw_faiss'])} | {ok} |"
            )
        lines += [
            "\n### Writes and restart\n",
            "| kind | items | durable insert items/s | raw add items/s | ratio | delete ms p50 | p99 | raw delete ms"
            " p50 | close (snapshot) s | restart s | raw load s | restart no snapshot s | raw build s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for kind, k in r["kinds"].items():
            lines.append(
                f"| {kind} | {k['items']:,} | {_num(k['insert_items_per_s'])} | {_num(k['raw_add_items_per_s'])}"
                f" | {_ratio(k['insert_items_per_s'], k['raw_add_items_per_s'])} | {_num(k['delete_ms_p50'], 2)}"
                f" | {_num(k['delete_ms_p99'], 2)} | {_num(k.get('raw_delete_ms_p50'), 3)} | {_sec(k['close_s'])}"
                f" | {_sec(k['restart_s'])} | {_sec(k['raw_load_s'])} | {_sec(k['restart_s_no_snapshot'])}"
                f" | {_sec(k['raw_build_s'])} |"
            )
        lines += [
            "\n### Search (batched, k=10) and memory\n",
            "| kind | QPS | raw QPS | ratio | QPS ids only | QPS after deletes | recall@10 | raw recall@10"
            " | RSS B/item | peak B/item | RSS B/item no snapshot | peak B/item no snapshot | FAISS serialized B/item"
            " | raw serialized B/item | disk B/item |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for kind, k in r["kinds"].items():
            lines.append(
                f"| {kind} | {_num(k['search_qps'])} | {_num(k['raw_search_qps'])}"
                f" | {_ratio(k['search_qps'], k['raw_search_qps'])} | {_num(k['search_qps_ids_only'])}"
                f" | {_num(k['search_qps_after_deletes'])} | {k['recall@10']:.4f} | {k['raw_recall@10']:.4f}"
                f" | {_num(k['bytes_per_item'], 1)} | {_num(k['peak_bytes_per_item'], 1)}"
                f" | {_num(k['bytes_per_item_no_snapshot'], 1)}"
                f" | {_num(k['peak_bytes_per_item_no_snapshot'], 1)} | {_num(k['index_bytes_per_item'], 1)}"
                f" | {_num(k['raw_index_bytes_per_item'], 1)} | {_num(k['disk_bytes_per_item'], 1)} |"
            )
    m = results["machine"]
    lines.append(
        f"\n{m['cpus']} CPUs, FAISS {m['faiss']} ({m['faiss_threads']} threads), SQLite {m['sqlite']};"
        f" load average {m['load_before']} before, {m['load_after']} after; {results['runtime_s']:.0f} s in all."
    )
    return "\n".join(lines)


# ---- --nested: flat vs the nested kind (issue 20) ----------------------------------------------------------------


@dataclass(frozen=True)
class NestedConfig:
    items: int = 1_000_000
    bits: int = 64
    queries: int = 1_000  # test images
    prefix_bits: tuple[int, ...] = (16, 24)
    candidates: tuple[int, ...] = (1024, 4096, 16384, 32768)
    noise: float = 16.0  # std of the Gaussian noise on each tiled copy, in grey levels (0..255) per pixel
    reps: int = 3
    seed: int = 0
    data: str = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
    recall_goal: float = 0.95
    speedup_goal: float = 3.0  # over flat's QPS, at recall@10 >= recall_goal


def pca_codes(cfg: NestedConfig) -> tuple[np.ndarray, np.ndarray]:
    """(database uint8 (items, n_bytes), queries uint8 (queries, n_bytes)): signs of the top ``bits`` principal
    components of the training pixels, largest first; the database is the training images tiled with noise."""
    from hamdex.models import bits as packing  # benchmarks sit above models: the one bit order
    from hamdex.models.data import read_all

    root = Path(cfg.data)
    train = np.asarray(read_all(root / "train-images-idx3-ubyte.gz").inputs, np.float32)
    test = np.asarray(read_all(root / "t10k-images-idx3-ubyte.gz", limit=cfg.queries).inputs, np.float32)
    train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)  # (60000, 784), (queries, 784)
    mean = train.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(train - mean, rowvar=False))
    top = vectors[:, np.argsort(values)[::-1][: cfg.bits]]  # (784, bits), largest variance first
    base = (train - mean) @ top  # (60000, bits)
    rng = np.random.default_rng(cfg.seed)
    db = np.empty((cfg.items, cfg.bits // 8), np.uint8)
    for start in range(0, cfg.items, 100_000):
        rows = np.arange(start, min(cfg.items, start + 100_000))
        noisy = base[rows % len(base)] + cfg.noise * rng.standard_normal((len(rows), cfg.bits), np.float32)
        db[rows] = packing.pack(noisy > 0)
    return db, packing.pack((test - mean) @ top > 0)


def run_nested(cfg: NestedConfig) -> dict[str, Any]:
    from hamdex.index.kinds import make_hamming_index

    start = time.perf_counter()
    db, queries = pca_codes(cfg)
    ids = np.arange(len(db), dtype=np.int64)
    kth = exact_kth(db, queries)
    flat = make_hamming_index("flat", cfg.bits)
    flat.add(db, ids)
    rows, flat_times = [], []
    for prefix in cfg.prefix_bits:
        nested = make_hamming_index("nested", cfg.bits, {"prefix_bits": prefix})
        nested.add(db, ids)
        build_s = _seconds(nested.groups)
        groups = len(nested.groups().prefixes)
        for candidates in cfg.candidates:
            found = nested.search(queries, K, {"candidates": candidates})[1]
            sides = {
                "flat": lambda: flat.search(queries, K, {}),
                "nested": lambda c=candidates, index=nested: index.search(queries, K, {"candidates": c}),
            }
            times = _interleaved(sides, cfg.reps)
            flat_times.append(times["flat"])
            rows.append(
                {
                    "prefix_bits": prefix,
                    "groups": groups,
                    "group_build_s": build_s,
                    "candidates": candidates,
                    "qps": len(queries) / times["nested"],
                    "flat_qps": len(queries) / times["flat"],
                    "speedup": times["flat"] / times["nested"],
                    "recall@10": recall_at_k(queries, db, found, kth),
                }
            )
            LOG.info("nested %d bits, %d candidates: %.2fx flat's QPS", prefix, candidates, rows[-1]["speedup"])
        del nested
        gc.collect()
    flat_recall = recall_at_k(queries, db, flat.search(queries, K, {})[1], kth)
    good = [r for r in rows if r["recall@10"] >= cfg.recall_goal]
    best = max(good, key=lambda r: r["speedup"], default=None)
    return {
        "mode": "nested",
        "config": {**asdict(cfg), "k": K},
        "machine": {"cpus": os.cpu_count(), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads()},
        "flat": {"qps": len(queries) / float(np.median(flat_times)), "recall@10": flat_recall},
        "nested": rows,
        "goal": {
            "target": f">= {cfg.speedup_goal}x flat QPS at recall@10 >= {cfg.recall_goal}",
            "best": best,
            "met": best is not None and best["speedup"] >= cfg.speedup_goal,
        },
        "runtime_s": time.perf_counter() - start,
    }


def format_nested(results: dict[str, Any]) -> str:
    cfg, flat = results["config"], results["flat"]
    lines = [
        f"\n### flat vs nested: {cfg['items']:,} items, {cfg['bits']}-bit PCA-sign codes of Fashion-MNIST, "
        f"{cfg['queries']:,} queries, k={cfg['k']}\n",
        "| kind | prefix_bits | groups | candidates | QPS | flat QPS (same turns) | speed-up | recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| flat | - | - | - | {_num(flat['qps'])} | - | 1x | {flat['recall@10']:.4f} |",
    ]
    for r in results["nested"]:
        lines.append(
            f"| nested | {r['prefix_bits']} | {r['groups']:,} | {r['candidates']:,} | {_num(r['qps'])} | "
            f"{_num(r['flat_qps'])} | {r['speedup']:.2f}x | {r['recall@10']:.4f} |"
        )
    goal = results["goal"]
    best = goal["best"]
    reached = (
        "none reaches the recall"
        if best is None
        else (
            f"best {best['speedup']:.2f}x at recall@10 {best['recall@10']:.4f} "
            f"(prefix_bits {best['prefix_bits']}, candidates {best['candidates']})"
        )
    )
    lines.append(f"\nGoal {goal['target']}: {'met' if goal['met'] else 'missed'}; {reached}.")
    return "\n".join(lines)


def nested_config_from_args(args: argparse.Namespace) -> NestedConfig:
    if args.bits is not None and len(args.bits) != 1:
        raise SystemExit("--nested takes one --bits width")
    quick = args.quick  # a smoke run: 100k items, 200 queries, one rep
    return NestedConfig(
        items=args.items or (100_000 if quick else NestedConfig.items),
        bits=args.bits[0] if args.bits else NestedConfig.bits,
        queries=args.queries or (200 if quick else NestedConfig.queries),
        prefix_bits=tuple(args.prefix_bits or NestedConfig.prefix_bits),
        candidates=tuple(args.candidates or NestedConfig.candidates),
        noise=args.noise,
        reps=1 if quick else args.reps,
        seed=args.seed,
        data=args.fashion_dir,
    )


# ---- entry point -----------------------------------------------------------------------------------------------


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return values

    return parse


def _kind(text: str) -> str:
    if text not in ALL_KINDS:  # nested has a mode of its own: --nested
        raise ValueError(f"unknown kind {text!r}; kinds: {', '.join(ALL_KINDS)}")
    return text


def _bits(text: str) -> int:
    bits = int(text)
    if bits <= 0 or bits % 8:
        raise ValueError(f"bits must be positive multiples of 8, got {text!r}")
    return bits


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, help="items per collection (default 1,000,000; --quick 20,000)")
    parser.add_argument("--bits", type=_csv(_bits), help="code lengths (default 64,256; --quick 64)")
    parser.add_argument("--kinds", type=_csv(_kind), help="index kinds (default all; flat always runs)")
    parser.add_argument("--batch", type=int, default=Config.batch, help="items per upsert / raw add")
    parser.add_argument("--queries", type=int, help="queries (default 1,000; --quick 200)")
    parser.add_argument("--deletes", type=int, help="single-id deletes per kind (default 200; --quick 50)")
    parser.add_argument("--hnsw-items", type=int, default=Config.hnsw_items, help="hnsw builds on this prefix")
    parser.add_argument("--reps", type=int, default=Config.reps, help="search timings per side (median)")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 20k items, 64 bits, every kind")
    parser.add_argument("--json", type=Path, help="write {bits: {...}} (+ 64-bit headline keys) here")
    parser.add_argument("--md", type=Path, help="also write the markdown tables here")
    parser.add_argument("--workdir", help="parent directory of the temp collections (default: system temp)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    parser.add_argument("--probe-open", help=argparse.SUPPRESS)  # internal: the restart/RSS subprocess
    nested = parser.add_argument_group("--nested mode (flat vs the nested kind on PCA-sign codes)")
    nested.add_argument("--nested", action="store_true", help="run this mode instead (default --bits 64)")
    nested.add_argument("--prefix-bits", type=_csv(_bits), help="nested prefix_bits settings (default 16,24)")
    nested.add_argument("--candidates", type=_csv(int), help="nested candidates (default 1024,4096,16384,32768)")
    nested.add_argument("--noise", type=float, default=NestedConfig.noise, help="pixel noise std of tiled copies")
    nested.add_argument("--fashion-dir", default=NestedConfig.data, help="Fashion-MNIST IDX files")
    args = parser.parse_args(argv)
    for name in ("items", "batch", "queries", "hnsw_items", "reps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    return args


def config_from_args(args: argparse.Namespace) -> Config:
    quick = args.quick
    kinds = args.kinds or ALL_KINDS
    return Config(
        items=args.items or (20_000 if quick else Config.items),
        bits=tuple(args.bits or ([64] if quick else Config.bits)),
        kinds=tuple(dict.fromkeys(["flat", *kinds])),
        batch=args.batch,
        queries=args.queries or (200 if quick else Config.queries),
        deletes=args.deletes if args.deletes is not None else (50 if quick else Config.deletes),
        hnsw_items=args.hnsw_items,
        reps=args.reps,
        seed=args.seed,
        progress=not args.no_progress,
        workdir=args.workdir,
    )


def run(cfg: Config) -> dict[str, Any]:
    start = time.perf_counter()
    results: dict[str, Any] = {
        "config": {**asdict(cfg), "k": K, "hnsw_items_effective": min(cfg.items, cfg.hnsw_items)},
        "bits": list(cfg.bits),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
            "sqlite": sqlite3.sqlite_version,
            "load_before": [round(x, 2) for x in os.getloadavg()],
        },
    }
    with tempfile.TemporaryDirectory(prefix="hamdex-store-bench-", dir=cfg.workdir) as tmp:
        for bits in cfg.bits:
            results[str(bits)] = bench_width(cfg, bits, Path(tmp))
    headline = results[str(64 if 64 in cfg.bits else cfg.bits[0])]
    results.update({key: headline[key] for key in HEADLINE_KEYS})
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["runtime_s"] = time.perf_counter() - start
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.probe_open:
        print(json.dumps(probe_open(args.probe_open)), flush=True)
        os._exit(0)  # skip tearing down the index: only the numbers above matter
    setup_logging("hamdex.index")
    if args.nested:
        results = run_nested(nested_config_from_args(args))
        publish(results, format_nested(results), args.json, args.md)
        return results
    results = run(config_from_args(args))
    publish(results, format_tables(results), args.json, args.md)
    return results


if __name__ == "__main__":
    main()
