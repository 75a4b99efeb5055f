"""Encode through HTTP against encode in-process (issue 24): items/s of POST /v1/encode at concurrency 1 / 4 / 16 / 64
for JSON, base64 and binary bodies, each as a ratio to ``Hasher.encode`` of the same model on the same requests in
this process (the baseline, measured in the same run), with p50 / p99 request latency.

    python benchmarks/encode_bench.py --json out.json --md out.md     # 1 to 3 minutes on a shared 2-core machine
    python benchmarks/encode_bench.py --quick                         # seconds: the smoke test's run

Two models, each trained for one epoch on random inputs in seconds (encode speed does not depend on training):

- ``pixels``: 28x28 images, 64 bits (hidden 512-512), requests of 256 images as float32 784-d rows: ``json``
  (arrays of numbers), ``base64`` (``inputs_b64``), ``binary`` (application/octet-stream with X-Hamdex-Shape /
  X-Hamdex-Dtype, answered with packed codes: Accept: application/octet-stream; service.binary_body);
- ``text``: TF-IDF of synthetic texts, 64 bits, requests of 256 texts as JSON (the only body a text model takes).

The server is ``hamdex serve`` in its own process (benchmarks.servers); the load comes from bare keep-alive
HTTP/1.1 connections (the least client CPU, as benchmarks.load's RawConnection), each worker sending the next
pre-built body as soon as the last answer arrived. Every answer is checked (status, code count); before the load,
the codes of one request of each body kind must equal the in-process codes, byte for byte.

``--pythonpath DIR`` runs the server from another checkout (e.g. ``git worktree add /tmp/before <commit>``) to
measure a change in the same session: ``--bodies json`` there, since older servers take no binary bodies.
``--device cuda`` serves on a GPU (benchmarks/gpu_serve_check.py compares its codes with the CPU's).
``--workers 1,2`` measures servers of 1 and 2 worker processes (``hamdex serve --workers N --encode-only``, each
with ``--threads`` torch threads), one after the other in the same run (``1,2,1,2``: alternating runs, each kept);
every server of such a run is encode-only, so that only the number of processes differs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

if __name__ == "__main__" and not __package__:  # python benchmarks/encode_bench.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamdex.models import checkpoint  # noqa: E402
from hamdex.models.hasher import Hasher  # noqa: E402
from hamdex.models.train import TrainConfig, fit_hasher  # noqa: E402

from benchmarks.servers import CLI, REPO, Server, free_port, serve_args, service_env  # noqa: E402

BODIES = ("json", "base64", "binary")
MAX_WINDOW_S = 30.0  # the longest a level's window waits for an answer per worker
WORDS = [f"w{i}" for i in range(2000)]  # a synthetic vocabulary: TF-IDF cost depends on tokens, not meaning


@dataclass
class Config:
    batch: int = 256  # items per request
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    seconds: float = 2.0  # measured per level and body (and the in-process baseline of each body)
    warmup: float = 0.5
    models: tuple[str, ...] = ("pixels", "text")
    bodies: tuple[str, ...] = BODIES  # pixels; the text model takes JSON only
    n_bits: int = 64
    device: str = "cpu"
    pythonpath: str | None = None  # the server's code: another checkout (the "before" of a change)
    workdir: Path | None = None
    pool: int = 8  # distinct request bodies each worker cycles through
    model_cache: Path | None = None  # checkpoints kept here and reused (gpu_serve_check: one model, two devices)
    threads: int = 1  # torch (OpenMP) threads here and in the server: two spin against other jobs on 2 shared cores
    workers: tuple[int, ...] = (1,)  # servers of this many worker processes, in turn (above 1: encode-only)
    extra: dict[str, str] = field(default_factory=dict)  # HAMDEX_* settings of the server (e.g. queue_max_items)


# ---- models and requests ----------------------------------------------------------------------------------------


def random_images(n: int, seed: int) -> np.ndarray:
    """uint8 (n, 28, 28)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def random_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 120)))) for _ in range(n)]


def train(kind: str, cfg: Config, path: Path) -> Hasher:
    """A 64-bit model of ``kind`` after one epoch on random inputs, saved at ``path`` (or the one already there),
    loaded on ``cfg.device``."""
    if (path / "hamdex.json").is_file():
        return checkpoint.load(path, cfg.device)
    inputs: Any = random_images(1024, 0) if kind == "pixels" else random_texts(1024, 0)
    hasher, _ = fit_hasher(
        inputs, kind, {"n_bits": cfg.n_bits}, TrainConfig(epochs=1, progress=False, seed=0, device="cpu")
    )
    checkpoint.save(path, hasher)
    return checkpoint.load(path, cfg.device)


@dataclass
class Body:
    """One request: its bytes and headers, and the inputs it holds (for the in-process baseline)."""

    content: bytes
    headers: dict[str, str]
    inputs: Any
    n: int
    packed: bool  # answered with packed codes


def make_body(kind: str, inputs: Any) -> Body:
    if kind == "text":
        return Body(json.dumps({"inputs": inputs}).encode(), {"content-type": "application/json"}, inputs, len(inputs),
                    False)  # fmt: skip
    rows = np.ascontiguousarray(inputs, dtype="<f4")  # (n, 784) float32
    n = len(rows)
    if kind == "json":
        content = json.dumps({"inputs": rows.tolist()}).encode()
        return Body(content, {"content-type": "application/json"}, rows, n, False)
    if kind == "base64":
        packed = {"data": base64.b64encode(rows.tobytes()).decode(), "shape": list(rows.shape)}
        return Body(json.dumps({"inputs_b64": packed}).encode(), {"content-type": "application/json"}, rows, n, False)
    headers = {
        "content-type": "application/octet-stream",
        "x-hamdex-shape": ",".join(map(str, rows.shape)),
        "x-hamdex-dtype": "float32",
        "accept": "application/octet-stream",
    }
    return Body(rows.tobytes(), headers, rows, n, True)


def request_pool(model: str, body: str, cfg: Config) -> list[Body]:
    out = []
    for i in range(cfg.pool):
        if model == "text":
            out.append(make_body("text", random_texts(cfg.batch, 100 + i)))
        else:
            out.append(make_body(body, random_images(cfg.batch, 100 + i).reshape(cfg.batch, -1)))
    return out


# ---- in process -------------------------------------------------------------------------------------------------


def inprocess(hasher: Hasher, bodies: list[Body], seconds: float) -> dict[str, float]:
    """Items/s of ``hasher.encode`` on the bodies' inputs, one call per request's batch, for ``seconds``."""
    hasher.encode(bodies[0].inputs)
    items, calls, start = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        body = bodies[calls % len(bodies)]
        hasher.encode(body.inputs)
        items += body.n
        calls += 1
    return {"items_per_s": items / elapsed, "ms_per_request": elapsed * 1000 / calls}


# ---- HTTP -------------------------------------------------------------------------------------------------------


class Connection:
    """A bare keep-alive HTTP/1.1 connection (asyncio streams): Content-Length bodies, any headers."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    async def post(self, path: str, body: Body) -> tuple[int, dict[str, str], bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in body.headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body.content)}\r\n\r\n".encode()
        )
        self.writer.write(body.content)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
        content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split(" ", 2)[1]), headers, content


def takes_binary(server: Server) -> bool:
    """Whether the server's API document lists binary encode bodies: a pixel model served by a checkout before
    issue 24 does not (a check that ``--pythonpath`` served the other checkout)."""
    document = httpx.get(server.url + "/openapi.json", timeout=30).json()
    return "application/octet-stream" in document["paths"]["/v1/encode"]["post"]["requestBody"]["content"]


def n_codes(status: int, body: Body, content: bytes, n_bytes: int) -> int:
    """Codes in a 200 answer (0 for any other status)."""
    if status != 200:
        return 0
    return len(content) // n_bytes if body.packed else len(json.loads(content)["codes"])


async def drive(port: int, bodies: list[Body], concurrency: int, seconds: float, warmup: float, n_bytes: int) -> dict:
    """``concurrency`` workers post bodies back to back; the answers that arrive in the window after ``warmup``
    count. The window lasts ``seconds``, and longer until ``concurrency`` answers arrived in it (at c=64, 256 images
    as JSON take seconds each: a short window would see none), at most MAX_WINDOW_S."""
    latencies: list[float] = []
    counts = {"items": 0, "errors": 0}
    statuses: Counter[int] = Counter()
    start = time.perf_counter()
    window = start + warmup
    closed = {"at": float("inf")}

    def close_if_done(now: float) -> None:
        enough = len(latencies) >= concurrency or now - window >= MAX_WINDOW_S
        if now - window >= seconds and enough:
            closed["at"] = min(closed["at"], now)

    async def worker(w: int) -> None:
        async with Connection(port) as conn:
            i = w
            while time.perf_counter() < closed["at"]:
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                status, _, content = await conn.post("/v1/encode", body)
                t1 = time.perf_counter()
                got = n_codes(status, body, content, n_bytes)
                if window <= t1 <= closed["at"]:
                    latencies.append(t1 - t0)
                    counts["items"] += got
                    counts["errors"] += got != body.n
                    statuses[status] += 1
                close_if_done(t1)
                i += concurrency

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    lat = np.asarray(latencies) * 1000
    return {
        "items_per_s": counts["items"] / (closed["at"] - window),
        "window_s": closed["at"] - window,
        "requests": len(latencies),
        "errors": counts["errors"],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


async def http_codes(port: int, body: Body, n_bytes: int) -> np.ndarray:
    """uint8 (n, n_bytes): the codes the server answers for ``body``."""
    async with Connection(port) as conn:
        status, _, content = await conn.post("/v1/encode", body)
    if status != 200:
        raise RuntimeError(f"encode answered {status}: {content[:300]!r}")
    if body.packed:
        return np.frombuffer(content, np.uint8).reshape(-1, n_bytes)
    return np.array([np.frombuffer(bytes.fromhex(c), np.uint8) for c in json.loads(content)["codes"]])


LAUNCHER = """
import sys
sys.path.insert(0, sys.argv[1])
from hamdex.service.cli import app
app(args=sys.argv[2:], prog_name="hamdex")
"""


def start_server(model: Path, workdir: Path, cfg: Config, workers: int = 1) -> Server:
    port = free_port()
    env = service_env(workdir, HAMDEX_LOG_LEVEL="warning", HAMDEX_JSON_LOGS="false", **cfg.extra)
    env["OMP_NUM_THREADS"] = str(cfg.threads)  # torch's intra-op threads, as torch.set_num_threads here
    # every worker's request may wait at once: 64 x 256 items would pass the default 8192 and be refused (429)
    env.setdefault("HAMDEX_QUEUE_MAX_ITEMS", str(2 * max(cfg.concurrency) * cfg.batch))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [cfg.pythonpath or str(REPO), os.environ.get("PYTHONPATH")]))
    args = serve_args(model, workdir / f"collection-{model.name}", port, cfg.device)
    if cfg.workers != (1,):  # several processes serve no collection (one writer): 1 is measured the same way
        args += ["--workers", str(workers), "--encode-only"]
    # ``-m`` would put the working directory (this checkout) first on sys.path, before PYTHONPATH: the launcher puts
    # the other checkout first, so that its ``hamdex`` package, and so its service, is the one served
    command = [sys.executable, "-c", LAUNCHER, cfg.pythonpath, *args] if cfg.pythonpath else [*CLI, *args]
    server = Server.spawn(command, env, workdir / f"server-{model.name}.log", port)
    server.wait_ready(180)
    return server


# ---- the run ----------------------------------------------------------------------------------------------------


def run_model(name: str, cfg: Config, workdir: Path) -> dict[str, Any]:
    model = (cfg.model_cache or workdir) / name
    hasher = train(name, cfg, model)
    bodies = ("text",) if name == "text" else cfg.bodies
    pools = {body: request_pool(name, body, cfg) for body in bodies}
    out: dict[str, Any] = {"workers": {}}
    for i, workers in enumerate(cfg.workers):  # a count given twice (1,2,1,2: alternating runs) is kept twice
        seen = str(workers) in out["workers"]
        key = f"{workers} (run {i // len(set(cfg.workers)) + 1})" if seen else str(workers)
        out["workers"][key] = run_server(name, hasher, model, pools, cfg, workdir, workers)
    # the first server's numbers at the top level, as before --workers (gpu_serve_check reads them there)
    out.update(out["workers"][str(cfg.workers[0])])
    return out


def run_server(
    name: str, hasher: Hasher, model: Path, pools: dict[str, list[Body]], cfg: Config, workdir: Path, workers: int
) -> dict[str, Any]:
    """Every body's levels against one server of ``workers`` processes."""
    n_bytes = cfg.n_bits // 8
    out: dict[str, Any] = {"inprocess": {}, "http": {}, "codes_match": {}}
    server = start_server(model, workdir, cfg, workers)
    tag = f"{name} ({workers} worker{'s' if workers > 1 else ''})"
    try:
        out["binary_bodies"] = takes_binary(server)
        for body, pool in pools.items():
            # the baseline just before each body's levels: on a shared machine the CPU left to us drifts by 2x
            out["inprocess"][body] = inprocess(hasher, pool, cfg.seconds)
            base = out["inprocess"][body]["items_per_s"]
            print(f"{tag}: in-process {base:,.0f} items/s", flush=True)
            got = asyncio.run(http_codes(server.port, pool[0], n_bytes))
            out["codes_match"][body] = bool(np.array_equal(got, hasher.encode(pool[0].inputs).codes))
            asyncio.run(drive(server.port, pool, 2 * workers, 0.5, 0.0, n_bytes))  # warm-up: every worker
            for c in cfg.concurrency:
                r = asyncio.run(drive(server.port, pool, c, cfg.seconds, cfg.warmup, n_bytes))
                r["ratio"] = r["items_per_s"] / base if base else float("nan")
                out["http"].setdefault(body, {})[str(c)] = r
                rate = f"{r['items_per_s']:,.0f} items/s ({r['ratio']:.2f}x)"
                lat = f"p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms"
                print(f"{tag} {body} c={c}: {rate} {lat}, {r['errors']} errors", flush=True)
        # every request of the first body kind once: what gpu_serve_check compares across devices
        codes = [asyncio.run(http_codes(server.port, b, n_bytes)) for b in next(iter(pools.values()))]
        out["codes"] = [c.tobytes().hex() for c in np.concatenate(codes)]
    finally:
        code = server.stop(60)
        out["clean_shutdown"] = code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutting down
    return out


def run(cfg: Config) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    results: dict[str, Any] = {
        "config": {
            **{k: getattr(cfg, k) for k in ("batch", "seconds", "device", "n_bits", "threads")},
            "concurrency": list(cfg.concurrency),
            "workers": list(cfg.workers),
            "cpus": os.cpu_count(),
            "server_code": cfg.pythonpath or str(REPO),
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as tmp:
        for name in cfg.models:
            results["models"][name] = run_model(name, cfg, Path(tmp))
    return results


def markdown(results: dict[str, Any]) -> str:
    levels = results["config"]["concurrency"]
    several = len(results["config"].get("workers", [1])) > 1  # a workers column only where they differ
    lines = [
        "| model | body |" + (" workers |" if several else "") + " in-process items/s | "
        + " | ".join(f"c={c} items/s (ratio)" for c in levels) + f" | p50 / p99 ms at c={levels[-1]} |",
        "|---|---|" + ("---:|" if several else "") + "---:|" + "---:|" * len(levels) + "---:|",
    ]  # fmt: skip
    for name, model in results["models"].items():
        runs = model.get("workers") or {"1": model}
        for body in model["http"]:
            for workers, run in runs.items():
                base = run["inprocess"][body]["items_per_s"]
                row = run["http"][body]
                cells = " | ".join(f"{row[str(c)]['items_per_s']:,.0f} ({row[str(c)]['ratio']:.2f}x)" for c in levels)
                last = row[str(levels[-1])]
                lead = f"| {name} | {body} |" + (f" {workers} |" if several else "")
                lines.append(f"{lead} {base:,.0f} | {cells} | {last['p50_ms']:.0f} / {last['p99_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--md", type=Path, help="write the markdown table here")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny batches, 1 and 4, 1 s each")
    parser.add_argument("--concurrency", default=None, help="e.g. 1,4,16,64")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--models", default="pixels,text")
    parser.add_argument("--bodies", default=",".join(BODIES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pythonpath", default=None, help="serve the code of this checkout")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in each server process")
    parser.add_argument("--workers", default="1", help="server processes, e.g. 1,2: a server of each, in turn")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config(device=args.device, pythonpath=args.pythonpath, workdir=args.workdir, threads=args.threads)
    cfg.models = tuple(args.models.split(","))
    cfg.workers = tuple(int(w) for w in args.workers.split(","))
    cfg.bodies = tuple(args.bodies.split(","))
    if unknown := set(cfg.bodies) - set(BODIES):
        raise SystemExit(f"unknown bodies {sorted(unknown)}; choose from {', '.join(BODIES)}")
    if args.quick:
        cfg.batch, cfg.concurrency, cfg.seconds, cfg.warmup, cfg.pool = 16, (1, 4), 1.0, 0.2, 2
    if args.concurrency:
        cfg.concurrency = tuple(int(c) for c in args.concurrency.split(","))
    cfg.seconds = args.seconds if args.seconds is not None else cfg.seconds
    cfg.batch = args.batch or cfg.batch
    return cfg


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = run(config_from_args(args))
    table = markdown(results)
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.md:
        args.md.write_text(table)
    return results


if __name__ == "__main__":
    main()
