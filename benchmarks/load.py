"""The HTTP load generator of the benchmarks: workers that send requests back to back (``timed_load``) or a fixed
list once (``batch_load``), each on its own connection or a shared httpx pool; latency per request kind, errors,
the X-*-Ms headers, and the CPU of the server and of this process over the window.

``RawConnection`` is the cheapest client: a bare keep-alive HTTP/1.1 connection on asyncio streams (~0.07 ms of
client CPU per request, against ~0.75 ms for an httpx client), a stand-in for a load generator on another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from benchmarks.servers import Server

JSON_HEADERS = {"content-type": "application/json"}


@dataclass
class Request:
    kind: str  # "search", "upsert", "encode"
    path: str
    body: bytes
    check: Callable[[httpx.Response], str | None] | None = None  # an error message, or None


@dataclass
class KindStats:
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    headers: Counter = field(default_factory=Counter)  # sums of X-Queue-Ms, X-Search-Ms, X-Encode-Ms

    def record(self, seconds: float, error: str | None, response: httpx.Response | None) -> None:
        self.latencies.append(seconds)
        if error is not None:
            self.errors[error] += 1
        elif response is not None:
            for name in ("x-queue-ms", "x-search-ms", "x-encode-ms"):
                self.headers[name] += float(response.headers.get(name, 0.0))

    def summary(self, window_s: float) -> dict[str, Any]:
        n = len(self.latencies)
        ok = n - sum(self.errors.values())
        lat = np.asarray(self.latencies) * 1000
        return {
            "requests": n,
            "per_s": n / window_s,
            "p50_ms": float(np.percentile(lat, 50)) if n else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if n else float("nan"),
            "mean_ms": float(lat.mean()) if n else float("nan"),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "queue_ms": self.headers["x-queue-ms"] / ok if ok else float("nan"),
            "search_ms": self.headers["x-search-ms"] / ok if ok else float("nan"),
            "encode_ms": self.headers["x-encode-ms"] / ok if ok else float("nan"),
        }


async def _send(client: httpx.AsyncClient, req: Request) -> tuple[httpx.Response | None, str | None]:
    try:
        response = await client.post(req.path, content=req.body, headers=JSON_HEADERS)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}"
    if response.status_code != 200:
        return response, f"HTTP {response.status_code}: {response.text[:200]}"
    if req.check is not None and (problem := req.check(response)) is not None:
        return response, problem
    return response, None


class RawResponse:
    """What the checks read of a response: status, headers (lower-case names), body."""

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams, for ``--client-pool raw``: the least client CPU per
    request this process can spend, a stand-in for a load generator on another machine (httpx spends ~0.7 ms of
    this machine's CPU per request, on the cores the server needs). Enough HTTP for this server's replies:
    Content-Length bodies, no chunking."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawConnection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    async def post(self, path: str, content: bytes, headers: dict[str, str] | None = None) -> RawResponse:
        assert self.reader is not None and self.writer is not None
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(content)}\r\n\r\n".encode() + content)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            hdrs = {k.lower(): v for k, v in fields.items()}
            body = await self.reader.readexactly(int(hdrs.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise httpx.ReadError(f"raw connection: {exc!r}") from exc
        return RawResponse(int(lines[0].split(" ", 2)[1]), hdrs, body)


def _client(url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(60.0))


async def _clients(stack: contextlib.AsyncExitStack, url: str, concurrency: int, pool: str) -> list[httpx.AsyncClient]:
    """One client per worker: one of its own with one connection ("per-worker"), or one shared with a pool of
    ``concurrency`` connections ("shared"; httpx's pool costs client CPU per request growing with its size)."""
    if pool == "shared":
        return [await stack.enter_async_context(_client(url, concurrency))] * concurrency
    if pool == "raw":
        return [await stack.enter_async_context(RawConnection(url)) for _ in range(concurrency)]
    return [await stack.enter_async_context(_client(url, 1)) for _ in range(concurrency)]


async def timed_load(
    server: Server,
    concurrency: int,
    make: Callable[[], Request],
    seconds: float,
    warmup: float,
    rss_every: float | None = None,
    pool: str = "per-worker",
) -> dict[str, Any]:
    """``concurrency`` workers send ``make()`` requests back to back; requests completed in the ``seconds`` after
    ``warmup`` count. Also: CPU of the server and of this process over the window, RSS samples if asked."""
    stats: dict[str, KindStats] = {}
    rss: list[int] = []
    async with contextlib.AsyncExitStack() as stack:
        clients = await _clients(stack, server.url, concurrency, pool)
        loop_start = time.perf_counter()
        window_start, end = loop_start + warmup, loop_start + warmup + seconds
        marks: dict[str, float] = {}

        async def worker(client: httpx.AsyncClient) -> None:
            while time.perf_counter() < end:
                req = make()
                t0 = time.perf_counter()
                response, error = await _send(client, req)
                t1 = time.perf_counter()
                if window_start <= t0 and t1 <= end:
                    stats.setdefault(req.kind, KindStats()).record(t1 - t0, error, response)

        async def meter() -> None:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            marks.update(server_cpu=server.cpu_s(), client_cpu=time.process_time(), at=time.perf_counter())
            if rss_every is None:
                return
            while time.perf_counter() < end:
                rss.append(server.rss())
                await asyncio.sleep(min(rss_every, max(0.0, end - time.perf_counter())))

        tasks = [asyncio.create_task(worker(client)) for client in clients]
        meter_task = asyncio.create_task(meter())
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        server_cpu, client_cpu, at_end = server.cpu_s(), time.process_time(), time.perf_counter()
        await asyncio.gather(*tasks)
        await meter_task
        if rss_every is not None:
            rss.append(server.rss())
    window = at_end - marks["at"]
    kinds = {kind: s.summary(window) for kind, s in sorted(stats.items())}
    total = sum(k["requests"] for k in kinds.values())
    out = {
        "concurrency": concurrency,
        "window_s": window,
        "requests": total,
        "per_s": total / window,
        "errors": sum(k["errors"] for k in kinds.values()),
        "server_cpu_ms_per_req": (server_cpu - marks["server_cpu"]) * 1000 / max(total, 1),
        "client_cpu_ms_per_req": (client_cpu - marks["client_cpu"]) * 1000 / max(total, 1),
        "server_cpu_cores": (server_cpu - marks["server_cpu"]) / window,
        "client_cpu_cores": (client_cpu - marks["client_cpu"]) / window,
        "kinds": kinds,
    }
    if rss_every is not None:
        out["rss"] = rss
    return out


async def batch_load(server: Server, concurrency: int, requests: list[Request], pool: str) -> dict[str, Any]:
    """Send every request once, ``concurrency`` in flight; wall time from the first send to the last reply."""
    stats = KindStats()
    responses: list[httpx.Response | None] = [None] * len(requests)
    async with contextlib.AsyncExitStack() as stack:
        clients = await _clients(stack, server.url, concurrency, pool)
        await asyncio.gather(*(_send(client, requests[0]) for client in dict.fromkeys(clients)))  # warm-up
        next_index = iter(range(len(requests)))
        cpu0, client0, start = server.cpu_s(), time.process_time(), time.perf_counter()

        async def worker(client: httpx.AsyncClient) -> None:
            for i in next_index:
                t0 = time.perf_counter()
                response, error = await _send(client, requests[i])
                stats.record(time.perf_counter() - t0, error, response)
                responses[i] = response if error is None else None

        await asyncio.gather(*(worker(client) for client in clients))
        wall = time.perf_counter() - start
        server_cpu, client_cpu = server.cpu_s() - cpu0, time.process_time() - client0
    out = stats.summary(wall)
    out.update(
        wall_s=wall,
        server_cpu_cores=server_cpu / wall,
        client_cpu_cores=client_cpu / wall,
        server_cpu_ms_per_req=server_cpu * 1000 / len(requests),
        client_cpu_ms_per_req=client_cpu * 1000 / len(requests),
    )
    return out | {"responses": responses}
