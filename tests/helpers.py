"""Helpers shared by several test files: API keys and error checks of the service, Prometheus samples, a server's
port and health, and the Hamming oracle (brute-force popcount of XOR) that searches are compared with."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import numpy as np
import uvicorn
from click.testing import Result
from fastapi import FastAPI
from hamdex.service.app import wait_ready
from hamdex.service.cli import app as cli_app
from hamdex.service.errors import STATUS
from typer.testing import CliRunner

READER = "reader-key-0123456789"
WRITER = "writer-key-0123456789"
ADMIN = "admin-key-01234567890"
KEYS = f"{READER} read;{WRITER} write;{ADMIN} admin"


def short_cli_train(monkeypatch) -> list[dict]:
    """Make ``hamdex train`` (service.cli.train) keep every default but train two epochs of a 16-wide encoder (CI
    seconds); returns the list each call's options are appended to, so a test can check what a benchmark set."""
    from hamdex.service import cli

    real_train, seen = cli.train, []

    def short_train(data_spec, **options):
        seen.append(options)
        return real_train(data_spec, epochs=2, hidden="16", **options)

    monkeypatch.setattr(cli, "train", short_train)
    return seen


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(resp: httpx.Response, status: int, error_type: str) -> dict:
    """The response is the error ``error_type`` with its status from the one table, in the one error body."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "error_type"}, body
    assert body["error_type"] == error_type and STATUS[error_type] == status, body
    assert isinstance(body["error"], str) and body["error"]
    return body


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan in this event loop and yield a client whose requests may overlap."""
    async with app.router.lifespan_context(app):
        await asyncio.to_thread(wait_ready, app, 60)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


def metric_samples(text: str, name: str) -> dict[str, float]:
    """``{'<labels>': value}`` for every sample of ``name`` in Prometheus text (labels as written)."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)  # a route template holds braces too
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample of ``name`` whose labels include ``labels``; 0 when there is none."""
    for label_text, value in metric_samples(text, name).items():
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            return value
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy in time")


def random_codes(n: int, n_bits: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, n_bits // 8) with a few exact duplicates, so ties at equal distance occur."""
    codes = np.random.default_rng(seed).integers(0, 256, (n, n_bits // 8), dtype=np.uint8)
    codes[1::7] = codes[0::7][: len(codes[1::7])]
    return codes


def popcount_distances(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The oracle: uint8 (B,) x (n, B) -> int (n,) Hamming distances by popcount of XOR."""
    return np.unpackbits(np.bitwise_xor(codes, query[None, :]), axis=1).sum(axis=1)


def oracle_hits(query: np.ndarray, ids: list[str], codes: np.ndarray) -> list[tuple[int, str]]:
    """Every stored item as (distance, id), sorted the way the service must sort hits."""
    return sorted(zip(popcount_distances(query, codes).tolist(), ids, strict=True))


def pairs(hits: list[dict]) -> list[tuple[int, str]]:
    return [(h["distance"], h["id"]) for h in hits]


def run_index(*args: str) -> Result:
    """``hamdex index ARGS`` in this process."""
    return CliRunner().invoke(cli_app, ["index", *args])


@contextmanager
def server_thread(app: FastAPI, timeout: float = 60.0) -> Iterator[str]:
    """A real HTTP server (uvicorn, lifespan on) for ``app`` in a thread of this process: its base URL once
    /readyz answers 200; stopped on exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
