"""Abuse benchmark (issue 17): the worst-case requests against a real ``hamdex serve`` beside a steady search load.

    python benchmarks/abuse.py --json benchmarks/out/abuse.json             # 1M items
    python benchmarks/abuse.py --n 200000 --json var/abuse.json             # a few minutes on 2 cores

One run:

1. A small 32-bit dense model (seeded, trained in seconds) and a flat collection of ``--n`` structured codes (random
   centres, each bit flipped with probability 0.1, as benchmarks/http_bench.py) with metadata ``{"g": i % 10}``,
   written in this process and closed.
2. The server: ``python -m hamdex.service.cli serve`` with ``HAMDEX_REQUEST_TIMEOUT_S=--timeout-s`` and one heavy-search
   worker (``HAMDEX_HEAVY_SEARCH_WORKERS=1``), so that a filtered or radius search still running after its answer
   delays the probe that follows it.
3. Steady load: ``--clients`` workers sending plain top-k searches (one query by code, k=10) back to back, for
   ``--phase-s`` seconds alone, then on through the abuse phase. ``/livez`` is probed every 50 ms from a thread
   with its own connection, and the server's RSS sampled every 50 ms.
4. The abuse phase: each worst-case request, ``--copies`` at once, one kind after the other: radius = n_bits with
   k = 1 (8 queries each); filters matching nothing that SQLite's pre-selection used to pass whole: a missing
   field (``{"zzz": null}``) and an integer beyond 64 bits (``{"g": 2**70}``); a batch of ``--oversized``
   queries (fitted under the body-size limit); an item whose metadata nests 2,000 deep; a bulk upload trickled
   over ``--slow-bulk-s`` seconds. After each kind, a probe: one radius search (radius 0, k = 1) whose time is
   what heavy work was still running (``probe_ms``: the work stopped when it is small), then a second of the
   steady load alone, in which the server's CPU (``cpu_after_cores``, beside ``cpu_alone_cores``) shows work that
   goes on after its answer whatever queue it sits in.

Goals (issue 17): every abusive request answered within the timeout and its work stopped (probe under 1 s); RSS
growth (peak in the abuse phase minus its start) under 200 MB; the steady load's p99 under abuse at most 3x its p99
alone; ``/livez`` always under 100 ms. The load generator shares the machine's cores with the server.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/abuse.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import numpy as np
import orjson
from hamdex.index.collection import Collection
from hamdex.models import checkpoint
from hamdex.models.train import TrainConfig, fit_hasher

from benchmarks.data import item_id, make_codes
from benchmarks.servers import CLI, Server, free_port, serve_args, service_env

REPO = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("benchmarks.abuse")
BITS = 32
DEEP = 2_000  # nesting of the deep metadata
GOAL_RSS_MB = 200.0
GOAL_P99_RATIO = 3.0
GOAL_LIVEZ_MS = 100.0
GOAL_PROBE_MS = 1_000.0
HEADLINE_KEYS = ("steady_p99_alone_ms", "steady_p99_abuse_ms", "p99_ratio", "rss_growth_mb", "livez_max_ms")


@dataclass(frozen=True)
class Config:
    n: int = 1_000_000  # items in the collection
    clients: int = 4  # steady-load workers
    phase_s: float = 10.0  # steady load alone, and again after the abusive requests
    copies: int = 4  # concurrent copies of each abusive request
    oversized: int = 830_000  # queries in the oversized batch (fewer if the body would pass max_body_bytes)
    slow_bulk_s: float = 6.0  # how long the slow bulk upload trickles
    timeout_s: float = 30.0  # the server's request timeout
    max_body_bytes: int = 16 * 1024 * 1024  # the server's default body limit
    seed: int = 0


# ---- data and model ---------------------------------------------------------------------------------------------


def build(cfg: Config, workdir: Path) -> tuple[Path, Path, np.ndarray]:
    """(model dir, collection dir, query pool uint8 (1000, 4)): a tiny dense model and the collection."""
    vectors = np.random.default_rng(cfg.seed).standard_normal((256, 8)).astype(np.float32)
    train = TrainConfig(epochs=1, progress=False, seed=cfg.seed, device="cpu")
    hasher, _ = fit_hasher(vectors, "dense", {"n_bits": BITS, "hidden": (16,)}, train)
    model = workdir / "model"
    fingerprint = checkpoint.save(model, hasher)
    db, pool = make_codes(cfg.seed, BITS, cfg.n, 1000)
    path, start = workdir / "collection", time.perf_counter()
    with Collection.create(path, BITS, fingerprint) as coll:
        for s in range(0, cfg.n, 50_000):
            e = min(s + 50_000, cfg.n)
            coll.upsert([item_id(i) for i in range(s, e)], db[s:e], [{"g": i % 10} for i in range(s, e)])
    LOG.info("collection of %d items in %.1f s", cfg.n, time.perf_counter() - start)
    return model, path, pool


# ---- the server -------------------------------------------------------------------------------------------------


def start_server(cfg: Config, model: Path, collection: Path, workdir: Path) -> Server:
    """``hamdex serve`` in a subprocess, ready, with the limits under test."""
    port = free_port()
    env = service_env(
        workdir,
        HAMDEX_LOG_LEVEL="warning",
        HAMDEX_REQUEST_TIMEOUT_S=str(cfg.timeout_s),
        HAMDEX_MAX_BODY_BYTES=str(cfg.max_body_bytes),
        HAMDEX_HEAVY_SEARCH_WORKERS="1",
    )
    server = Server.spawn([*CLI, *serve_args(model, collection, port)], env, workdir / "server.log", port)
    server.wait_ready()
    return server


class Sampler(threading.Thread):
    """The server's RSS every 50 ms, and ``/livez`` round trips from a process of its own (``LIVEZ_PROBER``: this
    process's event loop, busy with the load, would delay its own probes), each with its time."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.stopped = server, threading.Event()
        self.rss: list[tuple[float, int]] = []
        self.livez: list[tuple[float, float]] = []
        self.prober = subprocess.Popen(
            [sys.executable, "-c", LIVEZ_PROBER, str(server.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            self.rss.append((time.monotonic(), self.server.rss()))

    def stop(self) -> None:
        self.stopped.set()
        out, _ = self.prober.communicate(timeout=60)  # closing its stdin ends it; it then prints its samples
        if self.prober.returncode:
            raise RuntimeError(f"the /livez prober failed (exit status {self.prober.returncode})")
        self.livez = [(float(t), float(ms)) for t, ms in (line.split() for line in out.splitlines())]
        self.join(5)


LIVEZ_PROBER = r"""
import http.client, sys, threading, time
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
conn, samples = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=120), []
while not done.wait(0.05):
    start = time.perf_counter()
    conn.request("GET", "/livez")
    conn.getresponse().read()
    samples.append((time.monotonic(), (time.perf_counter() - start) * 1000))  # CLOCK_MONOTONIC: one for all
print("\n".join(f"{t} {ms}" for t, ms in samples))
"""


# ---- load -------------------------------------------------------------------------------------------------------


class Steady:
    """``clients`` workers sending one-query top-k searches back to back; (end time, ms, ok) of each."""

    def __init__(self, url: str, pool: np.ndarray, clients: int) -> None:
        self.bodies = [orjson.dumps({"queries": [{"code": c.tobytes().hex()}], "k": 10}) for c in pool]
        self.url, self.clients = url, clients
        self.done: list[tuple[float, float, bool]] = []
        self.stopped = asyncio.Event()
        self.cpu_alone_cores = 0.0  # the server's CPU while this load ran alone

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=120, limits=httpx.Limits(max_connections=64)) as c:
            await asyncio.gather(*(self._worker(c, i) for i in range(self.clients)))

    async def _worker(self, client: httpx.AsyncClient, i: int) -> None:
        headers = {"content-type": "application/json"}
        while not self.stopped.is_set():
            body = self.bodies[i % len(self.bodies)]
            i += self.clients
            start = time.perf_counter()
            try:
                ok = (await client.post("/v1/search", content=body, headers=headers)).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.done.append((time.monotonic(), (time.perf_counter() - start) * 1000, ok))

    def window(self, lo: float, hi: float) -> dict[str, Any]:
        ms = np.array([m for t, m, _ in self.done if lo <= t < hi])
        errors = sum(1 for t, _, ok in self.done if lo <= t < hi and not ok)
        if not len(ms):
            return {"requests": 0, "errors": errors, "p50_ms": None, "p99_ms": None}
        return {"requests": len(ms), "errors": errors, "p50_ms": np.percentile(ms, 50), "p99_ms": np.percentile(ms, 99)}


def abusive_requests(cfg: Config, pool: np.ndarray) -> dict[str, dict[str, Any]]:
    """name -> {method, path, body or stream, what}: the worst-case requests of issue 17."""
    eight = [{"code": c.tobytes().hex()} for c in pool[:8]]
    query = {"code": "0" * (BITS // 4)}
    per_query = len(orjson.dumps(query)) + 1
    oversized = min(cfg.oversized, (cfg.max_body_bytes - 64) // per_query)
    deep = '{"a":' * DEEP + "1" + "}" * DEEP
    return {
        "radius_all_k1": _json({"queries": eight, "k": 1, "radius": BITS}),
        "filter_missing_null": _json({"queries": eight, "k": 10, "filter": {"zzz": None}}),
        "filter_huge_int": _json({"queries": eight, "k": 10, "filter": {"g": 2**70}}),
        "oversized_batch": {**_json({"queries": [query] * oversized, "k": 1}), "queries": oversized},
        "deep_metadata": {
            "path": "/v1/items",
            "body": f'{{"items":[{{"id":"deep","code":"{query["code"]}","metadata":{deep}}}]}}'.encode(),
        },
        "slow_bulk": {"path": "/v1/items:bulk", "stream": cfg.slow_bulk_s},
    }


def _json(body: dict[str, Any]) -> dict[str, Any]:
    return {"path": "/v1/search", "body": json.dumps(body, separators=(",", ":")).encode()}  # json: ints > 64 bits


async def _trickle(seconds: float) -> AsyncIterator[bytes]:
    """NDJSON rows, ten every 0.25 s for ``seconds``."""
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        yield b"".join(b'{"id":"slow-%d","input":[%d,0,0,0,0,0,0,1]}\n' % (i + j, i + j) for j in range(10))
        i += 10
        await asyncio.sleep(0.25)


async def send(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        if "stream" in request:
            headers = {"content-type": "application/x-ndjson"}
            resp = await client.post(request["path"], content=_trickle(request["stream"]), headers=headers)
        else:
            headers = {"content-type": "application/json"}
            resp = await client.post(request["path"], content=request["body"], headers=headers)
        status, kind = resp.status_code, (resp.json().get("error_type") if resp.status_code >= 400 else None)
    except (httpx.HTTPError, ValueError) as exc:
        status, kind = None, type(exc).__name__
    return {"status": status, "error_type": kind, "seconds": time.perf_counter() - start}


async def abuse(server: Server, cfg: Config, pool: np.ndarray) -> dict[str, Any]:
    """Each abusive request ``copies`` times at once, then a probe, then a second of the steady load alone; per
    kind: statuses, times, probe_ms, and the server's CPU (cores) in that second (work left running shows)."""
    out: dict[str, Any] = {}
    probe = orjson.dumps({"queries": [{"code": pool[0].tobytes().hex()}], "k": 1, "radius": 0})
    async with httpx.AsyncClient(base_url=server.url, timeout=cfg.timeout_s * 4 + cfg.slow_bulk_s) as client:
        for name, request in abusive_requests(cfg, pool).items():
            LOG.info("abusive request: %s x %d", name, cfg.copies)
            start = time.monotonic()
            answers = await asyncio.gather(*(send(client, request) for _ in range(cfg.copies)))
            probed = await send(client, {"path": "/v1/search", "body": probe})
            end, cpu = time.monotonic(), server.cpu_s()
            await asyncio.sleep(1.0)
            out[name] = {
                "window": (start, end),
                "cpu_after_cores": (server.cpu_s() - cpu) / (time.monotonic() - end),
                "statuses": sorted({str(a["status"]) for a in answers}),
                "error_types": sorted({a["error_type"] for a in answers if a["error_type"]}),
                "max_s": max(a["seconds"] for a in answers),
                "probe_ms": probed["seconds"] * 1000 if probed["status"] == 200 else None,
                **({"queries": request["queries"]} if "queries" in request else {}),
            }
    return out


async def warm_up(url: str, pool: np.ndarray) -> None:
    """One benign request to each route the abusive ones use: FastAPI builds a route's state at its first request
    (about 80 ms of the event loop here), a cost of starting up, not of abuse."""
    code = pool[0].tobytes().hex()
    search = {"queries": [{"code": code}], "k": 1}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for body in ({**search, "radius": 0}, {**search, "filter": {"g": 0}}):
            (await client.post("/v1/search", json=body)).raise_for_status()
        (await client.post("/v1/items", json={"items": [{"id": "warm-up", "code": code}]})).raise_for_status()
        row = orjson.dumps({"id": "warm-up", "input": [0.0] * 8}) + b"\n"  # a bulk row takes inputs, not codes
        headers = {"content-type": "application/x-ndjson"}
        (await client.post("/v1/items:bulk", content=row, headers=headers)).raise_for_status()


async def phases(server: Server, cfg: Config, pool: np.ndarray) -> tuple[dict[str, Any], Steady, list[float]]:
    """The steady load alone, then beside the abusive requests: (per-kind results, the load, [t0, t1, t2])."""
    await warm_up(server.url, pool)
    steady = Steady(server.url, pool, cfg.clients)
    load = asyncio.create_task(steady.run())
    await asyncio.sleep(1.0)  # warm-up
    t0, cpu0 = time.monotonic(), server.cpu_s()
    await asyncio.sleep(cfg.phase_s)
    t1 = time.monotonic()
    steady.cpu_alone_cores = (server.cpu_s() - cpu0) / (t1 - t0)
    abusive = await abuse(server, cfg, pool)
    await asyncio.sleep(cfg.phase_s)
    t2 = time.monotonic()
    steady.stopped.set()
    await load
    return abusive, steady, [t0, t1, t2]


def summarize(abusive: dict[str, Any], steady: Steady, times: list[float], sampler: Sampler) -> dict[str, Any]:
    t0, t1, t2 = times
    rss_start = max((r for t, r in sampler.rss if t <= t1), default=0)
    rss_peak = max((r for t, r in sampler.rss if t1 <= t <= t2), default=rss_start)
    livez = {name: [ms for t, ms in sampler.livez if lo <= t < hi] for name, (lo, hi) in
             {"alone": (t0, t1), "abuse": (t1, t2)}.items()}  # fmt: skip
    alone, under = steady.window(t0, t1), steady.window(t1, t2)
    for rec in abusive.values():  # /livez while each kind ran (and its probe)
        lo, hi = rec.pop("window")
        rec["livez_max_ms"] = max((ms for t, ms in sampler.livez if lo <= t <= hi), default=None)
    return {
        "abusive": abusive,
        "steady": {"alone": alone, "abuse": under},
        "steady_p99_alone_ms": alone["p99_ms"],
        "steady_p99_abuse_ms": under["p99_ms"],
        "p99_ratio": under["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] and under["p99_ms"] else None,
        "rss_start_mb": rss_start / 2**20,
        "rss_peak_mb": rss_peak / 2**20,
        "rss_growth_mb": (rss_peak - rss_start) / 2**20,
        "livez_max_alone_ms": max(livez["alone"], default=None),
        "livez_max_ms": max(livez["abuse"], default=None),
        "livez_probes": len(livez["alone"]) + len(livez["abuse"]),
        "abuse_phase_s": t2 - t1,
        "cpu_alone_cores": steady.cpu_alone_cores,
    }


# ---- goals and output -------------------------------------------------------------------------------------------


def goals(results: dict[str, Any], cfg: Config) -> list[dict[str, Any]]:
    out = []
    for name, rec in results["abusive"].items():
        streaming = name == "slow_bulk"  # exempt from the timeout by design: it must finish, and not hurt the rest
        answered = "None" not in rec["statuses"] and (streaming or rec["max_s"] <= cfg.timeout_s + 1)
        stopped = rec["probe_ms"] is not None and rec["probe_ms"] < GOAL_PROBE_MS
        target = "answered" if streaming else f"answered <= {cfg.timeout_s:g} s"
        out.append(_goal(name, f"{target}, probe < {GOAL_PROBE_MS:g} ms", rec["max_s"], answered and stopped))
    for key, op, limit in (("rss_growth_mb", "<", GOAL_RSS_MB), ("p99_ratio", "<=", GOAL_P99_RATIO),
                           ("livez_max_ms", "<", GOAL_LIVEZ_MS)):  # fmt: skip
        value = results[key]
        ok = value is not None and (value <= limit if op == "<=" else value < limit)
        out.append(_goal(key, f"{op} {limit:g}", value, ok))
    return out


def _goal(name: str, target: str, measured: float | None, ok: bool) -> dict[str, Any]:
    return {"name": name, "target": target, "measured": measured, "pass": ok}


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_table(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [
        f"abuse benchmark: {cfg['n']:,} items of {BITS} bits, {cfg['copies']} copies of each request, "
        f"timeout {cfg['timeout_s']:g} s, {cfg['clients']} steady clients",
        "",
        "| abusive request | statuses | error types | max time s | probe ms | CPU after (cores) | /livez max ms | goal "
        "| pass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_name = {g["name"]: g for g in results["goals"]}
    for name, rec in results["abusive"].items():
        g = by_name[name]
        lines.append(
            f"| {name} | {', '.join(rec['statuses'])} | {', '.join(rec['error_types']) or '-'} | "
            f"{_num(rec['max_s'], 2)} | {_num(rec['probe_ms'])} | {_num(rec['cpu_after_cores'], 2)} | "
            f"{_num(rec['livez_max_ms'])} | {g['target']} | "
            f"{'yes' if g['pass'] else 'NO'} |"
        )
    lines += ["", "| measure | alone | under abuse | goal | pass |", "|---|---|---|---|---|"]
    rows = [
        ("steady p99 ms (ratio)", results["steady_p99_alone_ms"], results["steady_p99_abuse_ms"], "p99_ratio"),
        ("server RSS MB (peak growth)", results["rss_start_mb"], results["rss_peak_mb"], "rss_growth_mb"),
        ("/livez max ms", results["livez_max_alone_ms"], results["livez_max_ms"], "livez_max_ms"),
    ]
    for label, alone, under, key in rows:
        g = by_name[key]
        lines.append(
            f"| {label} | {_num(alone)} | {_num(under)} ({key}: {_num(g['measured'], 2)}) | {g['target']} | "
            f"{'yes' if g['pass'] else 'NO'} |"
        )
    s = results["steady"]
    lines.append(
        f"\nsteady requests: {s['alone']['requests']} alone ({s['alone']['errors']} errors), "
        f"{s['abuse']['requests']} under abuse ({s['abuse']['errors']} errors); "
        f"abuse phase {results['abuse_phase_s']:.1f} s; server CPU under the steady load alone "
        f"{results['cpu_alone_cores']:.2f} cores"
    )
    return "\n".join(lines)


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    model, collection, pool = build(cfg, workdir)
    server = start_server(cfg, model, collection, workdir)
    sampler = Sampler(server)
    try:
        sampler.start()
        abusive, steady, times = asyncio.run(phases(server, cfg, pool))
    finally:
        sampler.stop()
        server.stop()
    results = summarize(abusive, steady, times, sampler)
    results["config"] = asdict(cfg)
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    results["goals"] = goals(results, cfg)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Config()
    parser.add_argument("--n", type=int, default=d.n, help="items in the collection")
    parser.add_argument("--clients", type=int, default=d.clients, help="steady-load workers")
    parser.add_argument("--phase-s", type=float, default=d.phase_s, help="steady load alone, and after the abuse")
    parser.add_argument("--copies", type=int, default=d.copies, help="concurrent copies of each abusive request")
    parser.add_argument("--oversized", type=int, default=d.oversized, help="queries in the oversized batch")
    parser.add_argument("--slow-bulk-s", type=float, default=d.slow_bulk_s, help="duration of the slow upload")
    parser.add_argument("--timeout-s", type=float, default=d.timeout_s, help="the server's request timeout")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="where the temporary model, collection and log go")
    args = parser.parse_args(argv)
    if args.n < 16 or args.clients < 1 or args.copies < 1 or args.phase_s <= 0:
        parser.error("--n must be >= 16; --clients and --copies >= 1; --phase-s > 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    args = parse_args(argv)
    cfg = Config(args.n, args.clients, args.phase_s, args.copies, args.oversized, args.slow_bulk_s, args.timeout_s)
    with tempfile.TemporaryDirectory(prefix="hamdex-abuse-", dir=args.workdir) as tmp:
        results = run(cfg, Path(tmp))
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
