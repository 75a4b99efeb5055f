"""HTTP benchmark (issue 5): the real server (``hamdex serve``, uvicorn, one process) under concurrent load, each
number beside its in-process baseline measured in the same run on the same machine.

    python benchmarks/http_bench.py --json benchmarks/out/http_bench.json --md benchmarks/out/http_bench.md
    python benchmarks/http_bench.py --quick --json var/http.json          # CI smoke: 20k items, 2 s phases
    python benchmarks/http_bench.py --model var/bench-model ...            # reuse (or keep) the trained model

One run:

1. A 64-bit text model: the 20 Newsgroups preset (``models.presets.preset("text", 64)``) trained for
   ``--epochs`` (default 2) on the training split (``--quick``: 300 posts of the test split; without the corpus,
   ``--quick`` falls back to synthetic texts). A flat collection of ``--items`` structured synthetic codes (random
   centres, each bit flipped with probability 0.1; as benchmarks/store.py) written with ``Collection.upsert`` in
   batches of 50k under the model's fingerprint, then closed (snapshot). Before closing: in-process
   ``Collection.search`` QPS (the cost of the id map and the SQLite id lookup, without HTTP).
2. The server: ``python -m hamdex.service.cli serve -m MODEL -c COLLECTION --port P --device cpu`` with
   ``OMP_NUM_THREADS=--omp-threads`` (default: every CPU); ready when /readyz answers 200.
3. Search by code over HTTP, one query per request, k=10, no metadata, at each ``--concurrency``: that many
   asyncio workers, each with its own keep-alive connection, sending requests back to back for ``--phase-s``
   seconds after a short warm-up. The load generator shares this machine's cores with the server, so it should
   spend as little CPU as it can, as one on another machine would spend none of the server's: by default
   (``--client-pool raw``) each worker writes its requests on a bare asyncio stream and reads the reply's
   Content-Length body (``RawConnection``; measured ~0.07 ms of client CPU per request). ``per-worker``: an
   ``httpx.AsyncClient`` per worker (~0.75 ms per request); ``shared``: one client with a pool of that many
   connections, whose client CPU per request grows with the pool: measured 0.8 / 2.9 / 5.8 ms at 8 / 32 / 64.
   Reported: QPS, p50 / p99 latency, errors, and
   from the server the mean micro-batch size and FAISS time per batch (/metrics), the mean ``X-Queue-Ms`` and
   ``X-Search-Ms`` headers, CPU per request of the server process and of this (client) process. Baseline: raw
   ``faiss.IndexBinaryFlat`` on the same codes in this process, batches of 256 queries, k=10, the same number of
   OpenMP threads; measured before and after the HTTP phases (mean of the two). Goal: QPS at concurrency 32 at
   least half the raw batched QPS.
4. Encode over HTTP: the test texts (truncated to the server's ``max_text_chars``), 32 per request, 8 requests
   in flight, vs ``Hasher.encode`` in this process on the same texts in batches of 32 (before and after the HTTP
   phase, mean) and in one call. Goal: HTTP items/s at least 0.7x in-process batches of 32. The HTTP codes are
   compared with the in-process ones (``code_mismatches``).
5. Mixed load for ``--duration`` seconds at concurrency 32: 90% search by code, 10% upserts of 1-10 items (half
   new ids, half replacing existing ones); the server's VmRSS sampled every second. Goals: no errors; RSS growth
   (end vs start) under 10%. New items written are read back afterwards (GET /v1/items/{id}).

The machine is shared and noisy: read the ratios, not the absolute numbers. The load generator runs on the
same cores as the server (its CPU per request is reported), as a client on the same host would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/http_bench.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The server runs with OMP_WAIT_POLICY=PASSIVE (`hamdex serve` sets it); the in-process baselines get the same, set
# before FAISS and torch load their OpenMP runtime. Spin-waiting OpenMP threads on a busy 2-core machine made raw
# single-query FAISS swing between 5 and 490 QPS from one run to the next.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import torch  # noqa: E402
from hamdex.index.collection import Collection  # noqa: E402
from hamdex.models import checkpoint  # noqa: E402
from hamdex.models.data import DataNotFoundError, load_demo_corpus  # noqa: E402
from hamdex.models.presets import preset  # noqa: E402
from hamdex.models.train import TrainConfig, fit_hasher  # noqa: E402
from hamdex.service.settings import Settings  # noqa: E402

from benchmarks import data  # noqa: E402
from benchmarks.load import Request, batch_load, timed_load  # noqa: E402
from benchmarks.report import publish, setup_logging  # noqa: E402
from benchmarks.servers import CLI, Server, free_port, serve_args, service_env  # noqa: E402

LOG = logging.getLogger("benchmarks.http")
K = 10
SEARCH_GOAL = 0.5  # HTTP QPS at concurrency 32 / raw FAISS batched QPS
ENCODE_GOAL = 0.7  # HTTP items/s / in-process items/s (batches of 32)
RSS_GOAL_PCT = 10.0  # server RSS growth over the mixed load
GOAL_CONCURRENCY = 32
# server settings passed through from this process's environment (and recorded): the knobs worth trying
PASS_THROUGH = (
    "encode_max_batch",
    "search_max_batch",
    "batch_max_wait_ms",
    "queue_max_items",
    "faiss_threads",
    "search_workers",
    "fast_search",
    "max_batch",
    "max_text_chars",
    "request_timeout_s",
    "snapshot_every",
    "json_logs",
    "event_loop",
    "http_parser",
)
HEADLINE_KEYS = (
    "raw_faiss_qps",
    "http_qps",
    "http_p50_ms",
    "http_p99_ms",
    "ratio_c32",
    "encode_http_items_per_s",
    "encode_inprocess_items_per_s",
    "encode_ratio",
    "errors",
    "rss_growth_pct",
)
JSON_HEADERS = {"content-type": "application/json"}
WORDS = (  # synthetic texts when the 20 Newsgroups corpus is absent (--quick only)
    "orbit rocket planet galaxy comet launch engine driver wheel brake season goal team coach market stock bond "
    "bank price sauce flour oven garlic butter doctor patient vaccine virus window screen keyboard server disk"
).split()


@dataclass(frozen=True)
class Config:
    items: int = 1_000_000
    bits: int = 64
    insert_batch: int = 50_000
    phase_s: float = 10.0  # each HTTP search phase and each raw FAISS measurement
    warmup_s: float = 1.0  # before each HTTP phase, not counted
    duration: float = 60.0  # the mixed load
    concurrency: tuple[int, ...] = (1, 8, 32, 64)
    mixed_concurrency: int = 32
    upsert_fraction: float = 0.1
    encode_concurrency: int = 8
    encode_batch: int = 32
    encode_texts: int | None = None  # None: every test text
    train_texts: int | None = None  # None: the whole training split
    epochs: int = 2
    raw_batch: int = 256
    omp_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    # "raw": a RawConnection per worker (least client CPU); "per-worker": an httpx.AsyncClient per worker; "shared":
    # one httpx.AsyncClient with `concurrency` connections
    client_pool: str = "raw"
    log_level: str = "info"  # the server's (info: one access-log line per request, as in production)
    centres: int = 1_000
    flip: float = 0.1
    queries: int = 10_000  # pool of query codes, drawn from the same centres
    seed: int = 0
    quick: bool = False
    model: str | None = None  # checkpoint directory to reuse (or to save the trained model to)
    workdir: str | None = None  # parent of the temp dir (default: the system's)
    profile_server: str | None = None  # run the server under cProfile, write the stats here
    progress: bool = True


# ---- data -------------------------------------------------------------------------------------------------------


def make_codes(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(database uint8 (items, n_bytes), query pool uint8 (queries, n_bytes)), seeded."""
    return data.make_codes(cfg.seed, cfg.bits, cfg.items, cfg.queries, cfg.centres, cfg.flip)


def synthetic_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 200)))) for _ in range(n)]


def load_texts(cfg: Config) -> tuple[list[str], list[str], str]:
    """(training texts, texts to encode, source). --quick: both from the test split (one load)."""
    try:
        if cfg.quick:
            test = list(load_demo_corpus("test").inputs)
            n_train = cfg.train_texts or 300
            return test[:n_train], test[n_train : n_train + (cfg.encode_texts or len(test))], "20ng-test"
        train = list(load_demo_corpus("train").inputs)[: cfg.train_texts]
        return train, list(load_demo_corpus("test").inputs)[: cfg.encode_texts], "20ng"
    except DataNotFoundError:
        if not cfg.quick:
            raise
        LOG.warning("no 20 Newsgroups corpus: synthetic texts")
        return (
            synthetic_texts(cfg.train_texts or 300, cfg.seed),
            synthetic_texts(cfg.encode_texts or 512, 1),
            "synthetic",
        )


def train_model(cfg: Config, texts: list[str], path: Path) -> dict[str, Any]:
    """Train the text preset at ``cfg.bits`` for ``cfg.epochs`` and save it; reuse ``path`` if it holds one."""
    if (path / checkpoint.META).exists():
        hasher = checkpoint.load(path, "cpu")
        if hasher.n_bits != cfg.bits:
            raise SystemExit(f"{path}: the model has {hasher.n_bits} bits, the benchmark needs {cfg.bits}")
        LOG.info("reusing model %s (fingerprint %s)", path, hasher.fingerprint)
        return {"fingerprint": hasher.fingerprint, "train_s": None, "reused": True}
    model_over, train_over = preset("text", cfg.bits)
    model_over["n_bits"] = cfg.bits
    train_over["epochs"] = cfg.epochs
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads contending with other work train several times slower
    start = time.perf_counter()
    try:
        train_cfg = TrainConfig(seed=cfg.seed, device="cpu", progress=cfg.progress and not cfg.quick, **train_over)
        hasher, _ = fit_hasher(texts, "text", model_over, train_cfg)
    finally:
        torch.set_num_threads(before)
    train_s = time.perf_counter() - start
    fp = checkpoint.save(path, hasher)
    LOG.info("trained a %d-bit model on %d texts in %.1f s (fingerprint %s)", cfg.bits, len(texts), train_s, fp)
    return {"fingerprint": fp, "train_s": train_s, "reused": False, "train_texts": len(texts)}


# ---- in-process baselines ------------------------------------------------------------------------------------


def timed_qps(search: Callable[[np.ndarray], object], pool: np.ndarray, batch: int, seconds: float) -> float:
    """Queries per second of ``search(batch of query codes)`` run back to back for ``seconds`` (after one call)."""
    return timed_search(search, pool, batch, seconds)[0]


def timed_search(
    search: Callable[[np.ndarray], object], pool: np.ndarray, batch: int, seconds: float
) -> tuple[float, float]:
    """(queries per second, CPU ms of this process per query) of back-to-back ``search`` calls."""
    search(pool[:batch])
    done, i, cpu, start = 0, 0, time.process_time(), time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or done == 0:
        if i + batch > len(pool):
            i = 0
        search(pool[i : i + batch])
        done, i = done + batch, i + batch
    return done / elapsed, (time.process_time() - cpu) * 1000 / done


def build_collection(cfg: Config, path: Path, fingerprint: str, db: np.ndarray, pool: np.ndarray) -> dict[str, Any]:
    """Write the collection (durable upserts, batches of ``insert_batch``), time in-process search, close it."""
    start = time.perf_counter()
    coll = Collection.create(path, cfg.bits, fingerprint)
    try:
        for s in range(0, len(db), cfg.insert_batch):
            e = min(s + cfg.insert_batch, len(db))
            coll.upsert([data.item_id(i) for i in range(s, e)], db[s:e])
        insert_s = time.perf_counter() - start
        seconds = min(cfg.phase_s, 3.0)
        search = lambda q: coll.search(q, K, include_metadata=False)  # noqa: E731
        qps = {str(b): timed_qps(search, pool, b, seconds) for b in (cfg.raw_batch, 1)}
    finally:
        close_start = time.perf_counter()
        coll.close()
    close_s = time.perf_counter() - close_start
    LOG.info("collection: %d items in %.1f s; in-process search QPS %s", len(db), insert_s, qps)
    return {"insert_s": insert_s, "insert_items_per_s": len(db) / insert_s, "close_s": close_s, "search_qps": qps}


def raw_faiss(cfg: Config, db: np.ndarray) -> faiss.IndexBinaryFlat:
    index = faiss.IndexBinaryFlat(cfg.bits)
    index.add(db)
    return index


def inprocess_encode(hasher: Any, texts: list[str], batch: int | None) -> float:
    """Items/s of ``hasher.encode`` over ``texts``: batches of ``batch``, or one call (None). One warm-up call."""
    hasher.encode(texts[: batch or 32])
    start = time.perf_counter()
    if batch is None:
        hasher.encode(texts)
    else:
        for s in range(0, len(texts), batch):
            hasher.encode(texts[s : s + batch])
    return len(texts) / (time.perf_counter() - start)


# ---- the server -------------------------------------------------------------------------------------------------


def server_settings() -> dict[str, Any]:
    """The pass-through settings as the server will read them (the same environment variables as here)."""
    settings = Settings()
    return {name: getattr(settings, name) for name in PASS_THROUGH}


def start_server(cfg: Config, model: Path, collection: Path, workdir: Path) -> Server:
    """``hamdex serve`` in a subprocess, ready; the pass-through settings come from this process's environment."""
    port = free_port()
    keep = {f"HAMDEX_{name.upper()}" for name in PASS_THROUGH}
    env = service_env(workdir, keep, OMP_NUM_THREADS=str(cfg.omp_threads), HAMDEX_LOG_LEVEL=cfg.log_level)
    args = serve_args(model, collection, port)
    command = [*CLI, *args]
    if cfg.profile_server:  # the same CLI under cProfile (the event-loop thread only)
        command = [sys.executable, "-c", PROFILE_LAUNCHER, str(Path(cfg.profile_server).resolve()), *args]
    server = Server.spawn(command, env, workdir / "server.log", port)
    server.wait_ready()
    return server


PROFILE_LAUNCHER = """
import cProfile, signal, sys
signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises SIGTERM after its graceful shutdown
from hamdex.service.cli import app
profile = cProfile.Profile()
profile.enable()
try:
    app(args=sys.argv[2:], prog_name="hamdex", standalone_mode=False)
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
"""

_METRIC = re.compile(
    r'^hamdex_(batch_items|batch_duration_seconds|queue_wait_seconds)_(sum|count)\{batcher="(\w+)"\} (\S+)$'
)


def scrape(url: str) -> dict[str, float]:
    """The micro-batcher sums and counts from /metrics, e.g. ``search.batch_items_sum``."""
    out: dict[str, float] = {}
    text = httpx.get(url + "/metrics", timeout=30).text
    for line in text.splitlines():
        if m := _METRIC.match(line):
            out[f"{m[3]}.{m[1]}_{m[2]}"] = float(m[4])
    return out


def batch_stats(before: dict[str, float], after: dict[str, float], batcher: str, wall_s: float) -> dict[str, float]:
    d = {k.split(".", 1)[1]: after.get(k, 0.0) - before.get(k, 0.0) for k in after if k.startswith(batcher + ".")}
    batches = d.get("batch_items_count", 0.0)
    if not batches:
        return {"batches": 0}
    return {
        "batches": int(batches),
        "mean_batch_items": d["batch_items_sum"] / batches,
        "mean_batch_ms": d["batch_duration_seconds_sum"] / batches * 1000,
        "batcher_busy": d["batch_duration_seconds_sum"] / wall_s,  # fraction of the phase the batch thread was running
    }


def search_request_maker(pool_hex: list[bytes], rng: np.random.Generator) -> Callable[[], Request]:
    head, tail = b'{"queries":[{"code":"', f'"}}],"k":{K},"include_metadata":false}}'.encode()
    n = len(pool_hex)

    def check(response: httpx.Response) -> str | None:
        return None if len(response.json()["results"][0]) == K else "fewer than k hits"

    def make() -> Request:
        return Request("search", "/v1/search", head + pool_hex[int(rng.integers(n))] + tail, check)

    return make


class MixedLoad:
    """90% searches by code, 10% upserts of 1-10 items (half new ids, half replacing ``doc-*`` ones)."""

    def __init__(self, cfg: Config, pool: np.ndarray, rng: np.random.Generator) -> None:
        self.cfg, self.pool, self.rng = cfg, pool, rng
        self.search = search_request_maker([c.tobytes().hex().encode() for c in pool], rng)
        self.next_new = 0
        self.new_items: dict[str, str] = {}  # new id -> hex code, for the read-back

    def __call__(self) -> Request:
        if self.rng.random() >= self.cfg.upsert_fraction:
            return self.search()
        items = []
        for _ in range(int(self.rng.integers(1, 11))):
            code = self.pool[int(self.rng.integers(len(self.pool)))].tobytes().hex()
            if self.rng.random() < 0.5:
                item = f"new-{self.next_new:08d}"
                self.next_new += 1
                self.new_items[item] = code
            else:
                item = data.item_id(int(self.rng.integers(self.cfg.items)))
            items.append({"id": item, "code": code, "metadata": {"source": "http-bench"}})
        expected = len(items)

        def check(response: httpx.Response) -> str | None:
            return None if response.json().get("upserted") == expected else "wrong upserted count"

        return Request("upsert", "/v1/items", orjson.dumps({"items": items}), check)


def read_back(server: Server, items: dict[str, str], n: int, rng: np.random.Generator) -> dict[str, Any]:
    """GET up to ``n`` of the new items written (each written once) and compare their codes."""
    chosen = rng.choice(sorted(items), size=min(n, len(items)), replace=False) if items else []
    problems = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for item in chosen:
            r = client.get(f"/v1/items/{item}")
            if r.status_code != 200 or r.json().get("code") != items[item]:
                problems.append(f"{item}: {r.status_code} {r.text[:100]}")
    return {"checked": len(chosen), "errors": len(problems), "problems": problems[:5]}


# ---- the run ------------------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def run(cfg: Config) -> dict[str, Any]:
    start = time.perf_counter()
    faiss.omp_set_num_threads(cfg.omp_threads)
    results: dict[str, Any] = {
        "config": {**asdict(cfg), "k": K, "omp_num_threads": cfg.omp_threads},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "torch": torch.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_before": [round(x, 2) for x in os.getloadavg()],
        },
        "server_settings": server_settings(),
    }
    with tempfile.TemporaryDirectory(prefix="hamdex-http-bench-", dir=cfg.workdir) as tmp:
        work = Path(tmp)
        train_texts, texts, source = load_texts(cfg)
        max_chars = results["server_settings"]["max_text_chars"]
        texts = [t[:max_chars] for t in texts]
        model_dir = Path(cfg.model) if cfg.model else work / "model"
        results["model"] = {**train_model(cfg, train_texts, model_dir), "corpus": source}
        db, pool = make_codes(cfg)
        collection_dir = work / "collection"
        results["collection"] = build_collection(cfg, collection_dir, results["model"]["fingerprint"], db, pool)
        index = raw_faiss(cfg, db)
        raw_search = lambda q: index.search(q, K)  # noqa: E731
        raw_qps, raw_cpu = timed_search(raw_search, pool, cfg.raw_batch, cfg.phase_s)
        raw_runs, results["raw_faiss_cpu_ms_per_query"] = [raw_qps], raw_cpu
        results["raw_faiss_qps_by_batch"] = {
            str(b): timed_qps(raw_search, pool, b, cfg.phase_s / 2) for b in sorted({1, *cfg.concurrency})
        }
        LOG.info(
            "raw FAISS QPS (batch %d) %.0f; by batch %s", cfg.raw_batch, raw_runs[0], results["raw_faiss_qps_by_batch"]
        )

        server = start_server(cfg, model_dir, collection_dir, work)
        try:
            results["server"] = {"startup_s": server.startup_s, "rss_ready_bytes": server.rss()}
            run_phases(cfg, server, results, pool, texts, model_dir, raw_search)
            raw_runs.append(results.pop("_raw_after"))
        except BaseException:
            LOG.error("server log tail:\n%s", server.log_tail())
            raise
        finally:
            stop_start = time.perf_counter()
            code = server.stop()
            results.setdefault("server", {}).update(exit_code=code, shutdown_s=time.perf_counter() - stop_start)
            results["server"]["clean_shutdown"] = code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
        if not results["server"]["clean_shutdown"] or any(
            p["errors"] for p in [*results["search"].values(), results["encode"]["http"], results["mixed"]]
        ):
            results["server"]["log_tail"] = server.log_tail(3000)
        results["raw_faiss_qps_runs"] = raw_runs
        results["raw_faiss_qps"] = float(np.mean(raw_runs))
    finish(cfg, results)
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["runtime_s"] = time.perf_counter() - start
    return results


def run_phases(
    cfg: Config,
    server: Server,
    results: dict[str, Any],
    pool: np.ndarray,
    texts: list[str],
    model_dir: Path,
    raw_search: Callable[[np.ndarray], object],
) -> None:
    rng = np.random.default_rng([cfg.seed, 1])
    pool_hex = [c.tobytes().hex().encode() for c in pool]
    # 1. search by code at each concurrency
    search: dict[str, Any] = {}
    for c in cfg.concurrency:
        before = scrape(server.url)
        phase_start = time.perf_counter()
        make = search_request_maker(pool_hex, rng)
        phase = asyncio.run(timed_load(server, c, make, cfg.phase_s, cfg.warmup_s, pool=cfg.client_pool))
        phase["batcher"] = batch_stats(before, scrape(server.url), "search", time.perf_counter() - phase_start)
        search[str(c)] = phase
        s = phase["kinds"].get("search", {})
        LOG.info(
            "HTTP search c=%d: %.0f QPS, p50 %.2f ms, p99 %.2f ms, %d errors, batch %s",
            c,
            phase["per_s"],
            s.get("p50_ms", float("nan")),
            s.get("p99_ms", float("nan")),
            phase["errors"],
            phase["batcher"],
        )
    results["search"] = search
    results["_raw_after"] = timed_qps(raw_search, pool, cfg.raw_batch, cfg.phase_s)

    # 2. encode: in-process batches of 32 (before and after), one call; HTTP 32 per request
    hasher = checkpoint.load(model_dir, "cpu")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.omp_threads)
    try:
        b32 = [inprocess_encode(hasher, texts, cfg.encode_batch)]
        one_call = inprocess_encode(hasher, texts, None)
        expected = hasher.encode(texts).codes
        bodies = [
            Request("encode", "/v1/encode", orjson.dumps({"inputs": texts[s : s + cfg.encode_batch]}))
            for s in range(0, len(texts), cfg.encode_batch)
        ]
        before = scrape(server.url)
        phase_start = time.perf_counter()
        http = asyncio.run(batch_load(server, cfg.encode_concurrency, bodies, cfg.client_pool))
        http["batcher"] = batch_stats(before, scrape(server.url), "encode", time.perf_counter() - phase_start)
        b32.append(inprocess_encode(hasher, texts, cfg.encode_batch))
    finally:
        torch.set_num_threads(torch_threads)
    mismatches, missing = 0, 0
    for i, response in enumerate(http.pop("responses")):
        if response is None:
            missing += 1
            continue
        got = response.json()["codes"]
        want = expected[i * cfg.encode_batch : i * cfg.encode_batch + len(got)]
        mismatches += sum(g != w.tobytes().hex() for g, w in zip(got, want, strict=True))
    http["items_per_s"] = len(texts) / http["wall_s"]
    results["encode"] = {
        "texts": len(texts),
        "mean_chars": float(np.mean([len(t) for t in texts])),
        "http": http,
        "inprocess_b32_runs": b32,
        "inprocess_b32_items_per_s": float(np.mean(b32)),
        "inprocess_one_call_items_per_s": one_call,
        "code_mismatches": mismatches,
    }
    LOG.info("encode: HTTP %.0f items/s, in-process b32 %s, one call %.0f", http["items_per_s"], b32, one_call)

    # 3. mixed load, RSS sampled every second
    mixed_rng = np.random.default_rng([cfg.seed, 2])
    load = MixedLoad(cfg, pool, mixed_rng)
    before = scrape(server.url)
    phase_start = time.perf_counter()
    mixed = asyncio.run(
        timed_load(server, cfg.mixed_concurrency, load, cfg.duration, cfg.warmup_s, rss_every=1.0, pool=cfg.client_pool)
    )
    mixed["batcher"] = batch_stats(before, scrape(server.url), "search", time.perf_counter() - phase_start)
    mixed["read_back"] = read_back(server, load.new_items, 50, mixed_rng)
    rss = mixed["rss"]
    mixed.update(
        rss_start_bytes=rss[0],
        rss_end_bytes=rss[-1],
        rss_max_bytes=max(rss),
        rss_growth_pct=(rss[-1] - rss[0]) / rss[0] * 100,
        new_items=load.next_new,
    )
    results["mixed"] = mixed
    LOG.info(
        "mixed: %.0f req/s, %d errors, RSS %.0f -> %.0f MB (max %.0f)",
        mixed["per_s"],
        mixed["errors"],
        rss[0] / 2**20,
        rss[-1] / 2**20,
        max(rss) / 2**20,
    )


def finish(cfg: Config, results: dict[str, Any]) -> None:
    """The headline keys and the goals."""
    search = results["search"]
    kinds = {c: p["kinds"].get("search", {}) for c, p in search.items()}
    results["http_qps"] = {c: p["per_s"] for c, p in search.items()}
    results["http_p50_ms"] = {c: k.get("p50_ms", float("nan")) for c, k in kinds.items()}
    results["http_p99_ms"] = {c: k.get("p99_ms", float("nan")) for c, k in kinds.items()}
    results["http_server_cpu_ms_per_req"] = {c: p["server_cpu_ms_per_req"] for c, p in search.items()}
    results["http_client_cpu_ms_per_req"] = {c: p["client_cpu_ms_per_req"] for c, p in search.items()}
    goal_c = GOAL_CONCURRENCY if str(GOAL_CONCURRENCY) in search else max(cfg.concurrency)
    results["ratio_concurrency"] = goal_c
    results["ratio_c32"] = _ratio(results["http_qps"][str(goal_c)], results["raw_faiss_qps"])
    enc = results["encode"]
    results["encode_http_items_per_s"] = enc["http"]["items_per_s"]
    results["encode_inprocess_items_per_s"] = enc["inprocess_b32_items_per_s"]
    results["encode_inprocess_one_call_items_per_s"] = enc["inprocess_one_call_items_per_s"]
    results["encode_ratio"] = _ratio(results["encode_http_items_per_s"], results["encode_inprocess_items_per_s"])
    mixed = results["mixed"]
    results["errors_by_phase"] = {
        **{f"search_c{c}": p["errors"] for c, p in search.items()},
        "encode": enc["http"]["errors"],
        "mixed": mixed["errors"],
        "read_back": mixed["read_back"]["errors"],
    }
    results["errors"] = sum(results["errors_by_phase"].values())
    results["rss_growth_pct"] = mixed["rss_growth_pct"]
    results["goals"] = [
        _goal(
            f"HTTP search QPS at concurrency {goal_c} / raw FAISS batched QPS",
            f">= {SEARCH_GOAL}",
            results["ratio_c32"],
            results["ratio_c32"] >= SEARCH_GOAL,
        ),
        _goal(
            "encode HTTP items/s / in-process items/s (batches of 32)",
            f">= {ENCODE_GOAL}",
            results["encode_ratio"],
            results["encode_ratio"] >= ENCODE_GOAL,
        ),
        _goal("errors (all phases)", "0", results["errors"], results["errors"] == 0),
        _goal(
            "server RSS growth over the mixed load, %",
            f"< {RSS_GOAL_PCT:g}",
            results["rss_growth_pct"],
            results["rss_growth_pct"] < RSS_GOAL_PCT,
        ),
    ]


def _goal(name: str, target: str, measured: float, ok: bool) -> dict[str, Any]:
    return {"goal": name, "target": target, "measured": measured, "pass": bool(ok)}


# ---- output -------------------------------------------------------------------------------------------------


def _num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:,.{digits}f}"


def format_tables(results: dict[str, Any]) -> str:
    cfg, st = results["config"], results["server_settings"]
    raw = results["raw_faiss_qps"]
    lines = [
        f"## HTTP benchmark: {cfg['items']:,} items, {cfg['bits']} bits, flat\n",
        "| goal | target | measured | result |",
        "|---|---|---|---|",
    ]
    for g in results["goals"]:
        digits = 0 if g["goal"].startswith("errors") else 2
        lines.append(
            f"| {g['goal']} | {g['target']} | {_num(g['measured'], digits)} | {'PASS' if g['pass'] else 'FAIL'} |"
        )
    lines += [
        f"\n### Search by code over HTTP (1 query per request, k={cfg['k']}, {cfg['phase_s']:g} s per concurrency)\n",
        "| concurrency | QPS | x raw batched | p50 ms | p99 ms | errors | mean batch | FAISS ms/batch | batcher busy"
        " | X-Queue-Ms | X-Search-Ms | server CPU ms/req | client CPU ms/req | server cores | client cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, p in results["search"].items():
        k, b = p["kinds"].get("search", {}), p["batcher"]
        lines.append(
            f"| {c} | {_num(p['per_s'])} | {_num(p['per_s'] / raw, 2)} | {_num(k.get('p50_ms'), 2)}"
            f" | {_num(k.get('p99_ms'), 2)} | {p['errors']} | {_num(b.get('mean_batch_items'), 1)}"
            f" | {_num(b.get('mean_batch_ms'), 2)} | {_num(b.get('batcher_busy'), 2)} | {_num(k.get('queue_ms'), 2)}"
            f" | {_num(k.get('search_ms'), 2)} | {_num(p['server_cpu_ms_per_req'], 2)}"
            f" | {_num(p['client_cpu_ms_per_req'], 2)} | {_num(p['server_cpu_cores'], 2)}"
            f" | {_num(p['client_cpu_cores'], 2)} |"
        )
    by_batch = ", ".join(f"{b}: {_num(q)}" for b, q in results["raw_faiss_qps_by_batch"].items())
    coll = results["collection"]["search_qps"]
    lines += [
        f"\nBaselines in this process, same codes, {cfg['omp_num_threads']} OpenMP threads: raw FAISS"
        f" IndexBinaryFlat, batches of {cfg['raw_batch']}: **{_num(raw)} QPS** (runs:"
        f" {', '.join(_num(r) for r in results['raw_faiss_qps_runs'])}); raw by batch size: {by_batch};"
        f" Collection.search (id map + SQLite ids): {', '.join(f'batch {b}: {_num(q)}' for b, q in coll.items())}.",
        f"CPU per query: raw FAISS (batches of {cfg['raw_batch']}) {results['raw_faiss_cpu_ms_per_query']:.3f} ms;"
        " over HTTP, server process / client process per request: "
        + ", ".join(
            f"c{c}: {p['server_cpu_ms_per_req']:.2f} / {p['client_cpu_ms_per_req']:.2f} ms"
            for c, p in results["search"].items()
        )
        + ".",
    ]
    enc = results["encode"]
    h, runs = enc["http"], ", ".join(_num(r) for r in enc["inprocess_b32_runs"])
    lines += [
        f"\n### Encode ({enc['texts']:,} texts, mean {enc['mean_chars']:,.0f} chars, {cfg['encode_batch']} per"
        f" request, {cfg['encode_concurrency']} in flight)\n",
        "| path | items/s | x in-process b32 | p50 ms/request | p99 ms/request | mean batch | server cores"
        " | client cores |",
        "|---|---|---|---|---|---|---|---|",
        f"| HTTP | {_num(h['items_per_s'])} | {_num(results['encode_ratio'], 2)} | {_num(h['p50_ms'], 1)}"
        f" | {_num(h['p99_ms'], 1)} | {_num(h['batcher'].get('mean_batch_items'), 1)}"
        f" | {_num(h['server_cpu_cores'], 2)} | {_num(h['client_cpu_cores'], 2)} |",
        f"| in-process, batches of {cfg['encode_batch']} (runs: {runs})"
        f" | {_num(enc['inprocess_b32_items_per_s'])} | 1.00 | | | | | |",
        f"| in-process, one call | {_num(enc['inprocess_one_call_items_per_s'])}"
        f" | {_num(enc['inprocess_one_call_items_per_s'] / enc['inprocess_b32_items_per_s'], 2)} | | | | | |",
        f"\nHTTP codes that differ from the in-process ones: {enc['code_mismatches']}.",
    ]
    m = results["mixed"]
    lines += [
        f"\n### Mixed load ({cfg['duration']:g} s, concurrency {cfg['mixed_concurrency']},"
        f" {cfg['upsert_fraction']:.0%} upserts of 1-10 items)\n",
        "| op | requests | per s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for kind, k in m["kinds"].items():
        lines.append(
            f"| {kind} | {k['requests']:,} | {_num(k['per_s'])} | {_num(k['p50_ms'], 2)} | {_num(k['p99_ms'], 2)}"
            f" | {k['errors']} |"
        )
    mb = 2**20
    lines += [
        f"\nServer RSS: start {m['rss_start_bytes'] / mb:,.1f} MB, end {m['rss_end_bytes'] / mb:,.1f} MB, max"
        f" {m['rss_max_bytes'] / mb:,.1f} MB, growth {m['rss_growth_pct']:+.2f}% ({len(m['rss'])} samples);"
        f" {m['new_items']:,} new items; read back {m['read_back']['checked']}, {m['read_back']['errors']} wrong.",
    ]
    mc, srv, model = results["machine"], results["server"], results["model"]
    settings = ", ".join(f"{k}={v}" for k, v in st.items())
    train = "reused" if model["reused"] else f"trained in {model['train_s']:.0f} s on {model.get('train_texts')} texts"
    lines += [
        f"\nConfig: OMP_NUM_THREADS={cfg['omp_num_threads']} (server and baselines), OMP_WAIT_POLICY="
        f"{mc['omp_wait_policy'] or 'unset'}, server log level {cfg['log_level']}, client {cfg['client_pool']};"
        f" {settings}. Model: {model['corpus']}"
        f" ({train}). Server start-up {srv['startup_s']:.1f} s, RSS when ready {srv['rss_ready_bytes'] / mb:,.0f} MB,"
        f" SIGTERM: {'clean' if srv['clean_shutdown'] else 'NOT clean'} shutdown (exit code {srv['exit_code']})"
        f" in {srv['shutdown_s']:.1f} s. Collection written at"
        f" {_num(results['collection']['insert_items_per_s'])} items/s.",
        f"{mc['cpus']} CPUs, Python {mc['python']}, FAISS {mc['faiss']}, torch {mc['torch']}; load average"
        f" {mc['load_before']} before, {mc['load_after']} after; {results['runtime_s']:.0f} s in all.",
    ]
    return "\n".join(lines)


# ---- entry point ----------------------------------------------------------------------------------------------


def _concurrency(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive comma-separated integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, help="items in the collection (default 1,000,000; --quick 20,000)")
    parser.add_argument("--duration", type=float, help="seconds of mixed load (default 60; --quick 3)")
    parser.add_argument("--phase-s", type=float, help="seconds per search phase (default 10; --quick 2)")
    parser.add_argument("--concurrency", type=_concurrency, help="search phases (default 1,8,32,64; --quick 1,8)")
    parser.add_argument("--encode-texts", type=int, help="texts to encode (default all 7,532; --quick 512)")
    parser.add_argument("--epochs", type=int, default=Config.epochs, help="training epochs of the text model")
    parser.add_argument("--omp-threads", type=int, help="OMP_NUM_THREADS of the server and the baselines (all CPUs)")
    parser.add_argument(
        "--client-pool",
        choices=("per-worker", "shared", "raw"),
        default=Config.client_pool,
        help="one httpx client (one connection) per worker, one client with a shared pool of all connections, or "
        "one minimal HTTP/1.1 connection per worker (raw: least client CPU, as a load generator elsewhere would)",
    )
    parser.add_argument("--log-level", default=Config.log_level, help="the server's log level")
    parser.add_argument("--model", help="checkpoint directory: reused if it holds a model, else the trained one saved")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 20k items, 2 s phases, a 300-text model")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--md", type=Path, help="also write the markdown tables here")
    parser.add_argument("--workdir", help="parent directory of the temp model and collection (default: system temp)")
    parser.add_argument("--profile-server", help="run the server under cProfile; write its stats to this file")
    parser.add_argument("--no-progress", action="store_true", help="no training progress bar")
    args = parser.parse_args(argv)
    for name in ("items", "duration", "phase_s", "encode_texts", "epochs", "omp_threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    return args


def config_from_args(args: argparse.Namespace) -> Config:
    quick = args.quick
    return Config(
        items=args.items or (20_000 if quick else Config.items),
        phase_s=args.phase_s or (2.0 if quick else Config.phase_s),
        warmup_s=0.3 if quick else Config.warmup_s,
        duration=args.duration or (3.0 if quick else Config.duration),
        concurrency=args.concurrency or ((1, 8) if quick else Config.concurrency),
        encode_texts=args.encode_texts or (512 if quick else None),
        train_texts=300 if quick else None,
        epochs=args.epochs,
        omp_threads=args.omp_threads or os.cpu_count() or 1,
        client_pool=args.client_pool,
        log_level=args.log_level,
        seed=args.seed,
        quick=quick,
        model=args.model,
        workdir=args.workdir,
        profile_server=args.profile_server,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging("hamdex.index", "httpx")
    results = run(config_from_args(args))
    publish(results, format_tables(results), args.json, args.md)
    return results


if __name__ == "__main__":
    main()
