"""Crash test (issue 4): SIGKILL a real server at random moments while a client streams writes, restart it, and
check over HTTP that every acknowledged write survived and every write in flight at the kill is all-or-nothing.

One run: start the server on a fresh collection; a client thread streams random upserts (batches of 1..50 items
with random hex codes and small metadata, ids from a bounded pool so most are replacements) and single-id deletes;
0.05..0.5 s after the client starts the server's process group gets SIGKILL (so kills land mid-request and, with a
small snapshot interval, now and then mid-snapshot). After each restart the client checks the server against its
model of the expected state:

(a) every acknowledged write is reflected exactly (GET /v1/items/{id} for every id in the pool: the latest
    acknowledged upsert's code and metadata, acknowledged deletes absent);
(b) the write in flight at the kill (at most one: the client writes one request at a time) is wholly applied or
    wholly absent;
(c) no search returns an id twice; on exact index kinds a search with k >= the live count returns exactly the
    live ids with their metadata and true distances, and a radius-0 search by each of a sample of codes returns
    exactly the ids holding that code; /info's count equals the number of live ids expected.

``lost`` counts acknowledged writes not reflected; ``corrupted`` any other inconsistency (half-applied batch,
duplicate or stale hit, wrong count, an unexpected HTTP error, a server that fails to restart or dies unkilled).
Exit status 1 when either is non-zero.

    python benchmarks/crash.py --kills 100 --json var/crash.json
    python benchmarks/crash.py --kills 20 --launcher fork -v       # fast restarts (forked from a warm process)

Launchers. ``exec`` (default) starts every server as a new ``hamdex serve`` process (``python -m hamdex.service.cli
serve``), the way production does; start-up (imports of torch, scikit-learn, FAISS) takes 3-6 s on a busy 2-core
machine. ``fork`` imports all that once in a helper process and forks each server from it: the same
``create_app`` + ``uvicorn.run`` as ``hamdex serve``, in its own process and process group, on the same files,
starting in well under a second; tests/test_crash.py uses it to fit 20+ kills in its time budget.

``--snapshot-every N`` (default 200) sets the server's ``HAMDEX_SNAPSHOT_EVERY`` (the service's default, 100,000
changed items, is never reached in a crash test), so snapshots, and kills during them, happen; ``0`` keeps the
service's default.

Crash points (``--crash-point``, and tests/test_crash.py) make the server SIGKILL itself at one exact step instead:
inside an upsert's SQLite transaction before COMMIT, right after the COMMIT, or in a background snapshot (temp file
written; snapshot renamed but manifest not yet replaced; manifest replaced but store not yet pruned).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
UPSERT_POINTS = {"upsert_before_commit": "absent", "upsert_after_commit": "applied"}  # point -> required outcome
SNAPSHOT_POINTS = ("snapshot_temp_written", "snapshot_before_manifest", "snapshot_before_prune")
CRASH_POINTS = (*UPSERT_POINTS, *SNAPSHOT_POINTS)
TAGS = ("a", "b", "ü", "日本", "")  # metadata strings, some non-ASCII to check the JSON round trip


# ----------------------------------------------------------------------------------------------------
# Servers: specs, launchers (exec / fork), readiness, kill
# ----------------------------------------------------------------------------------------------------


@dataclass
class ServerSpec:
    model: Path
    collection: Path
    log: Path
    port: int = 0  # 0: a free port is picked at start
    snapshot_every: int = 200  # 0: the service's default
    index_kind: str = "flat"
    max_batch: int | None = None  # None: the service's default (1024)
    max_k: int | None = None  # None: the service's default (1000)
    crash_point: str | None = None  # see CRASH_POINTS
    crash_at: int = 1  # upsert points: fire on the first upsert of at least this many items; snapshot: the n-th

    def __post_init__(self) -> None:  # paths come back from JSON as strings
        self.model, self.collection, self.log = Path(self.model), Path(self.collection), Path(self.log)


class ServerDied(RuntimeError):
    """The server exited or never became ready."""


class Server:
    """One started server process, the leader of its own process group."""

    def __init__(self, pid: int, spec: ServerSpec, popen: subprocess.Popen | None = None) -> None:
        self.pid, self.spec, self._popen = pid, spec, popen
        self.url = f"http://127.0.0.1:{spec.port}"
        self.ready_path = "/readyz"
        self.startup_s = float("nan")

    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        try:  # a forked server is the fork helper's child; the helper ignores SIGCHLD, so the kernel reaps it
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_dead(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        if self._popen is not None:
            self._popen.wait(timeout)
            return
        while self.alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {self.pid} still alive {timeout}s after SIGKILL")
            time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL the whole process group and wait until the process is gone (its LOCK released)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait_dead()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: uvicorn shuts down gracefully and the lifespan closes (snapshots) the collection."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.wait_dead(timeout)
        except (TimeoutError, subprocess.TimeoutExpired):
            self.kill()
            raise

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.spec.log.read_text("utf-8", errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Poll /readyz (200 = ready, 503 = still loading); on 404 (no such route yet) fall back to /health."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.alive():
                raise ServerDied(f"server exited during start-up:\n{self.log_tail()}")
            try:
                status = httpx.get(self.url + self.ready_path, timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                self.startup_s = time.monotonic() - start
                return
            if status == 404 and self.ready_path == "/readyz":
                self.ready_path = "/health"
                continue
            time.sleep(0.02)
        raise ServerDied(f"server not ready after {timeout}s:\n{self.log_tail()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec_args(spec: ServerSpec) -> list[str]:
    """The helper flags that _serve and the fork child both understand."""
    args = []
    if spec.crash_point:
        args += ["--crash-point", spec.crash_point, "--crash-at", str(spec.crash_at)]
    return args


def _service_env(spec: ServerSpec) -> dict[str, str]:
    """The server's environment: no HAMDEX_* of the caller's; the spec's settings; named collections and models
    (which the crash test does not use) under the work directory, never the repository's var/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMDEX_")}
    env.update(SINGLE_THREAD_ENV, HAMDEX_INDEX_KIND=spec.index_kind, HAMDEX_LOG_LEVEL="warning")
    env.update(
        HAMDEX_COLLECTIONS_DIR=str(spec.log.parent / "collections"), HAMDEX_MODELS_DIR=str(spec.log.parent / "models")
    )
    if spec.snapshot_every:
        env["HAMDEX_SNAPSHOT_EVERY"] = str(spec.snapshot_every)
    if spec.max_batch is not None:
        env["HAMDEX_MAX_BATCH"] = str(spec.max_batch)
    if spec.max_k is not None:
        env["HAMDEX_MAX_K"] = str(spec.max_k)
    return env


class ExecLauncher:
    """Each server is a fresh ``hamdex serve`` process (``python -m hamdex.service.cli serve``) in a new session."""

    name = "exec"

    def start(self, spec: ServerSpec) -> Server:
        spec.port = spec.port or free_port()
        serve = ["serve", "-m", str(spec.model), "-c", str(spec.collection), "--port", str(spec.port)]
        serve += ["--device", "cpu"]
        if spec.crash_point:  # the same CLI, after the crash hook is set
            cmd = [sys.executable, str(SCRIPT), "_serve", *_spec_args(spec), "--", *serve]
        else:
            cmd = [sys.executable, "-m", "hamdex.service.cli", *serve]
        with open(spec.log, "ab") as log:
            popen = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=_service_env(spec),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Server(popen.pid, spec, popen)

    def close(self) -> None:
        pass


class ForkLauncher:
    """Servers forked from one helper process that has imported the service (and torch, FAISS, ...) already.

    The helper is single-threaded (OMP/BLAS pools of one thread), so forking it is safe; each child puts itself
    in its own process group, applies the spec's hooks and settings, and runs ``uvicorn.run(create_app(...))``.
    """

    name = "fork"

    def __init__(self) -> None:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HAMDEX_")}, **SINGLE_THREAD_ENV}
        self._helper = subprocess.Popen(
            [sys.executable, str(SCRIPT), "_fork_helper"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        self._lock = threading.Lock()
        reply = self._helper.stdout.readline()
        if json.loads(reply or "{}").get("ready") is not True:
            raise ServerDied(f"fork helper failed to start: {reply!r}")

    def start(self, spec: ServerSpec) -> Server:
        spec.port = spec.port or free_port()
        with self._lock:
            self._helper.stdin.write(json.dumps(_jsonable(asdict(spec))) + "\n")
            self._helper.stdin.flush()
            reply = json.loads(self._helper.stdout.readline() or "{}")
        if "pid" not in reply:
            raise ServerDied(f"fork helper: {reply}")
        return Server(int(reply["pid"]), spec)

    def close(self) -> None:
        if self._helper.poll() is None:
            self._helper.stdin.close()
            try:
                self._helper.wait(10)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()


def make_launcher(name: str) -> ExecLauncher | ForkLauncher:
    return {"exec": ExecLauncher, "fork": ForkLauncher}[name]()


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


# ---- inside the server process -----------------------------------------------------------------------------


def _die(point: str) -> None:
    sys.stderr.write(f"crash point {point}: SIGKILL\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install_crash_point(point: str, at: int) -> None:
    """Wrap one step of index/ so that the process SIGKILLs itself there: in the first upsert of at least ``at``
    items (upsert points), or in the ``at``-th snapshot (snapshot points; at >= 2 leaves an older snapshot)."""
    from hamdex.index import snapshot
    from hamdex.index.store import Store

    seen = {"snapshots": 0}

    def nth_snapshot() -> bool:
        seen["snapshots"] += 1
        return seen["snapshots"] >= at

    if point == "upsert_before_commit":  # counters are the last statement of the transaction, before COMMIT
        upsert, set_counters, armed = Store.upsert, Store._set_counters, threading.local()

        def arming_upsert(self, ids, codes, metadata, **kwargs):
            armed.on = len(ids) >= at
            return upsert(self, ids, codes, metadata, **kwargs)

        def dying_set_counters(conn, seq, next_internal):
            set_counters(conn, seq, next_internal)
            if getattr(armed, "on", False):
                _die(point)

        Store.upsert, Store._set_counters = arming_upsert, staticmethod(dying_set_counters)
    elif point == "upsert_after_commit":  # committed, not yet applied to the index, no reply sent
        upsert = Store.upsert

        def dying_upsert(self, ids, codes, metadata, **kwargs):
            written = upsert(self, ids, codes, metadata, **kwargs)
            if len(ids) >= at:
                _die(point)
            return written

        Store.upsert = dying_upsert
    elif point == "snapshot_temp_written":  # the .npz temp file is written and fsynced, not renamed
        fsync_path = snapshot.fsync_path

        def dying_fsync(path, directory=False):
            fsync_path(path, directory)
            name = Path(path).name
            if not directory and name.startswith(".snapshot-") and name.endswith(".tmp") and nth_snapshot():
                _die(point)

        snapshot.fsync_path = dying_fsync
    elif point == "snapshot_before_manifest":  # the new snapshot file is in place, the manifest still the old one
        write_manifest = snapshot.write_manifest

        def dying_write_manifest(directory, manifest):
            if "snapshot" in manifest and nth_snapshot():  # not the manifest written at creation
                _die(point)
            write_manifest(directory, manifest)

        snapshot.write_manifest = dying_write_manifest
    elif point == "snapshot_before_prune":  # manifest points at the new snapshot; removed rows not yet pruned
        prune = Store.prune

        def dying_prune(self, upto_seq):
            if nth_snapshot():
                _die(point)
            return prune(self, upto_seq)

        Store.prune = dying_prune
    else:
        raise ValueError(f"unknown crash point {point!r}; one of {CRASH_POINTS}")


def _hook_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="crash.py _serve")
    parser.add_argument("--crash-point", choices=CRASH_POINTS)
    parser.add_argument("--crash-at", type=int, default=1)
    return parser.parse_known_args(argv)


def _apply_hooks(crash_point: str | None, crash_at: int) -> None:
    if crash_point:
        _install_crash_point(crash_point, crash_at)


def _serve_main(argv: list[str]) -> None:
    """``crash.py _serve [hooks] -- serve ...``: the hooks, then the ``hamdex serve`` CLI in this process."""
    hooks, rest = _hook_args(argv)
    _apply_hooks(hooks.crash_point, hooks.crash_at)
    from hamdex.service.cli import app

    app(args=[a for a in rest if a != "--"], prog_name="hamdex")


def _fork_helper_main() -> None:
    """Import everything a server needs, then fork one server per JSON spec read from stdin; reply with its pid."""
    import logging

    import hamdex.index.collection  # noqa: F401
    import uvicorn
    import uvicorn.lifespan.on  # noqa: F401  (imported lazily by uvicorn.run otherwise)
    import uvicorn.protocols.http.h11_impl  # noqa: F401
    from hamdex.service.app import create_app
    from hamdex.service.settings import Settings

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel: no zombies
    threads = len(os.listdir("/proc/self/task")) if Path("/proc/self/task").exists() else 1
    print(json.dumps({"ready": True, "threads": threads}), flush=True)
    for line in sys.stdin:
        spec = ServerSpec(**json.loads(line))
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the server
            code = 1
            try:
                os.setpgid(0, 0)
                os.close(read_end)
                os.write(write_end, b"x")
                os.close(write_end)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                log = os.open(spec.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
                _apply_hooks(spec.crash_point, spec.crash_at)
                os.environ.clear()
                os.environ.update(_service_env(spec))
                settings = Settings(
                    model_path=spec.model, collection_path=spec.collection, port=spec.port, device="cpu"
                )
                uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(write_end)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done by the child; whichever runs first wins, so killpg never races
        os.read(read_end, 1)
        os.close(read_end)
        print(json.dumps({"pid": pid}), flush=True)


# ----------------------------------------------------------------------------------------------------
# The client's model of the expected state
# ----------------------------------------------------------------------------------------------------

State = dict[str, tuple[str, dict]]  # id -> (code hex, metadata) of every live item


@dataclass
class Write:
    n: int  # write number; every upserted item's metadata carries it as "w"
    kind: str  # "upsert" or "delete"
    items: State = field(default_factory=dict)  # upsert: id -> (code, metadata)
    id: str = ""  # delete: the id

    def describe(self) -> str:
        return f"upsert of {len(self.items)}" if self.kind == "upsert" else "delete"


@dataclass
class Tally:
    kills: int = 0
    acknowledged: int = 0  # write requests answered 2xx
    acknowledged_items: int = 0
    lost_writes: set[int] = field(default_factory=set)  # numbers of acknowledged writes found not reflected
    corrupted: int = 0
    in_flight_applied: int = 0
    in_flight_absent: int = 0
    kills_between_writes: int = 0  # no write in flight when the kill landed
    kills_mid_snapshot: int = 0  # a snapshot temp file was left behind
    snapshots: set[int] = field(default_factory=set)  # sequence numbers of snapshots seen on disk after a kill
    startup_s: list[float] = field(default_factory=list)
    verify_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, message: str) -> None:
        if kind == "lost":
            pass  # counted by write number in lost_writes
        else:
            self.corrupted += 1
        if len(self.problems) < 50:
            self.problems.append(f"{kind}: {message}")

    def summary(self, seconds: float) -> dict[str, Any]:
        startup = self.startup_s or [float("nan")]
        return {
            "kills": self.kills,
            "acknowledged": self.acknowledged,
            "lost": len(self.lost_writes),
            "corrupted": self.corrupted,
            "in_flight_applied": self.in_flight_applied,
            "in_flight_absent": self.in_flight_absent,
            "seconds": round(seconds, 2),
            "details": {
                "acknowledged_items": self.acknowledged_items,
                "kills_between_writes": self.kills_between_writes,
                "kills_mid_snapshot": self.kills_mid_snapshot,
                "snapshots_seen": len(self.snapshots),
                "startup_s_mean": round(float(np.mean(startup)), 3),
                "startup_s_max": round(float(np.max(startup)), 3),
                "verify_s_mean": round(float(np.mean(self.verify_s or [0.0])), 3),
                "problems": self.problems,
            },
        }


class Model:
    """The state the server must hold, from acknowledged writes; plus the write generator."""

    def __init__(self, pool: int, n_bytes: int, rng: np.random.Generator, max_items: int, delete_fraction: float):
        self.pool = [f"item-{i:05d}" for i in range(pool)]
        self.n_bytes, self.rng = n_bytes, rng
        self.max_items, self.delete_fraction = max_items, delete_fraction
        self.state: State = {}
        self.last_write: dict[str, int] = {}  # id -> number of the acknowledged write that set its state
        self.n = 0

    def next_write(self, size: int | None = None) -> Write:
        self.n += 1
        rng = self.rng
        if size is None and self.state and rng.random() < self.delete_fraction:
            live = sorted(self.state)
            return Write(self.n, "delete", id=live[int(rng.integers(len(live)))])
        size = size or int(rng.integers(1, self.max_items + 1))
        ids = rng.choice(len(self.pool), size=min(size, len(self.pool)), replace=False)
        items = {
            self.pool[i]: (rng.bytes(self.n_bytes).hex(), {"w": self.n, "i": j, "tag": TAGS[int(rng.integers(5))]})
            for j, i in enumerate(ids.tolist())
        }
        return Write(self.n, "upsert", items=items)

    def apply(self, w: Write) -> None:
        if w.kind == "upsert":
            self.state.update(w.items)
            self.last_write.update(dict.fromkeys(w.items, w.n))
        else:
            self.state.pop(w.id, None)
            self.last_write[w.id] = w.n


def send(client: httpx.Client, w: Write) -> httpx.Response:
    if w.kind == "upsert":
        body = {"items": [{"id": i, "code": c, "metadata": m} for i, (c, m) in w.items.items()]}
        return client.post("/v1/items", json=body)
    return client.delete(f"/v1/items/{w.id}")


class Writer(threading.Thread):
    """Streams writes, one request at a time, until ``stop`` is set or a request fails.

    ``stop`` is set before the kill, so a request started is started before the kill: the one that fails with
    a transport error is the write in flight at the kill (``pending``).
    """

    def __init__(self, url: str, model: Model, tally: Tally, stop: threading.Event, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.tally, self.stop, self.lock = url, model, tally, stop, lock
        self.pending: Write | None = None
        self.died_unkilled = False
        self.requests = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                with self.lock:
                    w = self.model.next_write()
                try:
                    resp = send(client, w)
                except httpx.TransportError:
                    self.pending = w
                    self.died_unkilled = not self.stop.is_set()
                    return
                self.requests += 1
                with self.lock:
                    if not self._acknowledge(w, resp):
                        return

    def _acknowledge(self, w: Write, resp: httpx.Response) -> bool:
        model, tally = self.model, self.tally
        if resp.is_success:
            tally.acknowledged += 1
            tally.acknowledged_items += len(w.items) or 1
            model.apply(w)
            return True
        if w.kind == "delete" and resp.status_code == 404:  # the id is expected live: its upsert was lost
            tally.lost_writes.add(model.last_write[w.id])
            tally.problem("lost", f"delete of {w.id} (expected live since write {model.last_write[w.id]}): 404")
            tally.acknowledged += 1
            model.apply(w)
            return True
        tally.problem("corrupted", f"write {w.n} ({w.describe()}): HTTP {resp.status_code} {resp.text[:200]}")
        self.pending = w  # its effect is unknown: resolved like a write in flight
        return False


# ----------------------------------------------------------------------------------------------------
# Verification after a restart
# ----------------------------------------------------------------------------------------------------


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def fetch_items(client: httpx.Client, ids: list[str], tally: Tally) -> tuple[State, set[str]]:
    """GET each id: ({id: (code, metadata)} of those present, ids whose GET failed (counted as corrupted))."""
    found: State = {}
    failed: set[str] = set()
    for item_id in ids:
        resp = client.get(f"/v1/items/{item_id}")
        if resp.status_code == 200:
            body = resp.json()
            found[item_id] = (body["code"], body["metadata"])
        elif resp.status_code != 404:
            failed.add(item_id)
            tally.problem("corrupted", f"GET {item_id}: HTTP {resp.status_code} {resp.text[:200]}")
    return found, failed


def resolve_pending(w: Write, before: State, server: State) -> str:
    """'applied', 'absent' or 'torn' for the write in flight at the kill, given the expected state before it."""
    if w.kind == "delete":
        new = {w.id: None}
    else:
        new = dict(w.items)
    matches_new = [server.get(i) == v for i, v in new.items()]
    matches_old = [server.get(i) == before.get(i) for i in new]
    if all(matches_new):
        return "applied"
    if all(matches_old):
        return "absent"
    return "torn"


def verify(
    url: str,
    model: Model,
    pending: Write | None,
    tally: Tally,
    *,
    exact: bool,
    range_search: bool,
    sample: int,
    label: str,
) -> str | None:
    """Check the restarted server against the model (resolving ``pending`` first); adopt what the server holds
    so that one inconsistency is counted once. Returns the pending write's outcome, if there was one."""
    outcome = None
    with httpx.Client(base_url=url, timeout=60) as client:
        server, unknown = fetch_items(client, model.pool, tally)  # unknown: GET failed (already counted)
        torn: set[str] = set()
        if pending is not None:
            outcome = resolve_pending(pending, model.state, server)
            if outcome == "applied":
                tally.in_flight_applied += 1
                model.apply(pending)
            elif outcome == "absent":
                tally.in_flight_absent += 1
            else:
                tally.problem("corrupted", f"{label}: write {pending.n} ({pending.describe()}) half applied")
                torn = set(pending.items) | {pending.id}
        for item_id in model.pool:
            want, got = model.state.get(item_id), server.get(item_id)
            if want == got or item_id in unknown:
                continue
            if item_id in torn:
                pass  # counted above
            elif _is_older_state(model, item_id, got):
                tally.lost_writes.add(model.last_write[item_id])
                tally.problem("lost", f"{label}: {item_id} expected {want}, server has {got}")
            else:
                tally.problem("corrupted", f"{label}: {item_id} expected {want}, server has {got} (unknown state)")
            if got is None:  # adopt the server's state: each inconsistency is counted once
                model.state.pop(item_id, None)
            else:
                model.state[item_id] = got
        count = client.get("/info").json()["count"]
        if count != len(model.state):
            tally.problem("corrupted", f"{label}: /info count {count}, expected {len(model.state)} live ids")
        check_searches(client, model, tally, exact=exact, range_search=range_search, sample=sample, label=label)
    return outcome


def _is_older_state(model: Model, item_id: str, got: tuple[str, dict] | None) -> bool:
    """Whether what the server holds for ``item_id`` is a state an earlier write gave it (so a newer one is lost)."""
    if item_id not in model.last_write:
        return False  # never acknowledged-written: nothing can be lost there
    if got is None:
        return True  # the item's first upsert (or a later one) is gone
    w = got[1].get("w") if isinstance(got[1], dict) else None
    return isinstance(w, int) and w < model.last_write[item_id]


def check_searches(
    client: httpx.Client, model: Model, tally: Tally, *, exact: bool, range_search: bool, sample: int, label: str
) -> None:
    """No duplicate hits anywhere; on exact kinds a full top-k and radius-0 searches by a sample of codes."""
    live = model.state
    max_k = 1000
    rng = model.rng
    live_ids = sorted(live)
    sample_ids = [live_ids[i] for i in rng.permutation(len(live_ids))[:sample]]
    queries = [live[i][0] for i in sample_ids]
    if exact and 0 < len(live) <= max_k:
        q = rng.bytes(model.n_bytes).hex()
        hits = _search(client, {"queries": [{"code": q}], "k": max_k}, tally, label)
        if hits is not None:
            _check_hits(hits[0], live, tally, label, f"k={max_k}", q)
            if {h["id"] for h in hits[0]} != set(live):
                missing, extra = set(live) - {h["id"] for h in hits[0]}, {h["id"] for h in hits[0]} - set(live)
                tally.problem(
                    "corrupted", f"{label}: full search misses {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
                )
    if not queries:
        return
    if exact and range_search:
        body = {"queries": [{"code": c} for c in queries], "k": max_k, "radius": 0}
        results = _search(client, body, tally, label)
        for c, hits in zip(queries, results or [], strict=True):
            _check_hits(hits, live, tally, label, "radius 0", c)
            want = {i for i, (code, _) in live.items() if code == c}
            if {h["id"] for h in hits} != want:
                tally.problem(
                    "corrupted", f"{label}: radius-0 search for {c} gave {[h['id'] for h in hits]}, want {want}"
                )
    else:
        results = _search(client, {"queries": [{"code": c} for c in queries], "k": 10}, tally, label)
        for c, hits in zip(queries, results or [], strict=True):
            _check_hits(hits, live, tally, label, "k=10", c)


def _search(client: httpx.Client, body: dict, tally: Tally, label: str) -> list[list[dict]] | None:
    resp = client.post("/v1/search", json=body)
    if resp.status_code != 200:
        tally.problem("corrupted", f"{label}: search HTTP {resp.status_code} {resp.text[:200]}")
        return None
    return resp.json()["results"]


def _check_hits(hits: list[dict], live: State, tally: Tally, label: str, what: str, query: str) -> None:
    ids = [h["id"] for h in hits]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        tally.problem("corrupted", f"{label}: {what} search returned {dup[:5]} twice")
    for h in hits:
        want = live.get(h["id"])
        if want is None:
            tally.problem("corrupted", f"{label}: {what} search returned {h['id']}, which is not live")
        elif h["metadata"] != want[1] or h["distance"] != hamming(query, want[0]):
            tally.problem("corrupted", f"{label}: {what} hit {h} does not match {want}")


# ----------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------


@dataclass
class Config:
    kills: int = 20
    seed: int = 0
    pool: int = 300  # ids the writes draw from
    max_items: int = 50  # items per upsert: 1..max_items
    delete_fraction: float = 0.2
    min_delay: float = 0.05  # seconds of writes before a kill
    max_delay: float = 0.5
    snapshot_every: int = 200  # 0: the service's default
    index_kind: str = "flat"
    search_sample: int = 10  # codes searched at radius 0 after each restart
    final_clean_restart: bool = True  # after the last kill: SIGTERM, restart, verify again


def _snapshot_on_disk(collection: Path) -> tuple[int | None, bool]:
    """(sequence number the manifest's snapshot reflects, whether a temp file of a write cut short is present)."""
    temp = any(collection.glob(".*.tmp"))
    try:
        entry = json.loads((collection / "manifest.json").read_text("utf-8")).get("snapshot")
        return (int(entry["seq"]) if entry else None), temp
    except (OSError, ValueError, TypeError, KeyError):
        return None, temp


def run_crash_test(
    model_dir: Path,
    work_dir: Path,
    cfg: Config,
    launcher: ExecLauncher | ForkLauncher,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Kill the server ``cfg.kills`` times under a stream of writes; the summary of :class:`Tally`."""
    start = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    collection = work_dir / "collection"
    tally, lock = Tally(), threading.Lock()
    kill_rng = np.random.default_rng([cfg.seed, 1])
    exact = cfg.index_kind == "flat"
    range_ok = cfg.index_kind != "hnsw"
    model: Model | None = None
    pending: Write | None = None
    server: Server | None = None
    try:
        for round_no in range(cfg.kills + 1):
            spec = ServerSpec(
                model_dir,
                collection,
                work_dir / "server.log",
                snapshot_every=cfg.snapshot_every,
                index_kind=cfg.index_kind,
            )
            server = launcher.start(spec)
            try:
                server.wait_ready()
            except ServerDied as exc:
                tally.problem("corrupted", f"restart {round_no}: {exc}")
                server.kill()
                break
            tally.startup_s.append(server.startup_s)
            if model is None:
                n_bits = httpx.get(server.url + "/info", timeout=30).json()["n_bits"]
                model = Model(
                    cfg.pool, n_bits // 8, np.random.default_rng([cfg.seed, 0]), cfg.max_items, cfg.delete_fraction
                )
            else:
                t = time.monotonic()
                outcome = verify(
                    server.url,
                    model,
                    pending,
                    tally,
                    exact=exact,
                    range_search=range_ok,
                    sample=cfg.search_sample,
                    label=f"restart {round_no}",
                )
                tally.verify_s.append(time.monotonic() - t)
                log(
                    f"restart {round_no:3d}: up in {server.startup_s:5.2f}s; in flight: "
                    f"{pending.describe() if pending else '-'} -> {outcome or '-'}; live {len(model.state)}"
                )
            if round_no == cfg.kills:
                break
            stop = threading.Event()
            writer = Writer(server.url, model, tally, stop, lock)
            writer.start()
            time.sleep(float(kill_rng.uniform(cfg.min_delay, cfg.max_delay)))
            stop.set()
            if not server.alive() or writer.died_unkilled:
                tally.problem("corrupted", f"round {round_no}: server died before the kill:\n{server.log_tail()}")
            server.kill()
            writer.join(60)
            tally.kills += 1
            pending = writer.pending
            if pending is None:
                tally.kills_between_writes += 1
            seq, temp = _snapshot_on_disk(collection)
            if seq is not None:
                tally.snapshots.add(seq)
            tally.kills_mid_snapshot += temp
        if cfg.final_clean_restart and server is not None and server.alive() and model is not None:
            server.stop()
            server = launcher.start(
                ServerSpec(
                    model_dir,
                    collection,
                    work_dir / "server.log",
                    snapshot_every=cfg.snapshot_every,
                    index_kind=cfg.index_kind,
                )
            )
            server.wait_ready()
            verify(
                server.url,
                model,
                None,
                tally,
                exact=exact,
                range_search=range_ok,
                sample=cfg.search_sample,
                label="clean restart",
            )
            log(f"clean restart: up in {server.startup_s:5.2f}s; live {len(model.state)}")
    finally:
        if server is not None and server.alive():
            server.kill()
    return tally.summary(time.monotonic() - start)


def crash_point_trial(
    model_dir: Path,
    work_dir: Path,
    point: str,
    launcher: ExecLauncher | ForkLauncher,
    *,
    pool: int = 300,
    batch: int = 200,
    snapshot_every: int = 100,
    nth_snapshot: int = 2,
    seed: int = 0,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Arm one crash point, stream writes until the server kills itself there, restart clean and verify.

    Upsert points fire on the first upsert of ``batch`` items (which replaces some live ones): its outcome must
    be the point's (absent before COMMIT, applied after). Snapshot points fire in the ``nth_snapshot``-th
    background snapshot (the second by default, so that an older snapshot is on disk). The result adds: ``fired``
    (the server logged the crash point), ``outcome`` of the write in flight, ``temp_before_restart`` /
    ``temp_after_restart`` (a snapshot temp file on disk).
    """
    start = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    collection, tally = work_dir / "collection", Tally()
    spec = ServerSpec(
        model_dir,
        collection,
        work_dir / "server.log",
        snapshot_every=snapshot_every,
        crash_point=point,
        crash_at=batch if point in UPSERT_POINTS else nth_snapshot,
    )
    server = launcher.start(spec)
    server.wait_ready()
    n_bits = httpx.get(server.url + "/info", timeout=30).json()["n_bits"]
    model = Model(pool, n_bits // 8, np.random.default_rng(seed), min(50, batch - 1), delete_fraction=0.2)
    pending = None
    with httpx.Client(base_url=server.url, timeout=60) as client:
        deadline = time.monotonic() + timeout
        while pending is None and time.monotonic() < deadline:
            big = point in UPSERT_POINTS and len(model.state) >= pool // 2
            w = model.next_write(size=batch if big else None)
            try:
                resp = send(client, w)
            except httpx.TransportError:
                pending = w
                break
            if not resp.is_success:
                tally.problem("corrupted", f"write {w.n}: HTTP {resp.status_code} {resp.text[:200]}")
                break
            tally.acknowledged += 1
            model.apply(w)
    fired = pending is not None
    server.kill()  # a no-op when it killed itself
    tally.kills += fired
    temp_before = _snapshot_on_disk(collection)[1]
    server = launcher.start(ServerSpec(model_dir, collection, work_dir / "server.log", snapshot_every=snapshot_every))
    try:
        server.wait_ready()
        outcome = verify(server.url, model, pending, tally, exact=True, range_search=True, sample=10, label=point)
        temp_after = _snapshot_on_disk(collection)[1]
    finally:
        server.kill()
    result = tally.summary(time.monotonic() - start)
    crash_log = (work_dir / "server.log").read_text("utf-8", errors="replace")
    result.update(
        point=point,
        fired=fired and f"crash point {point}" in crash_log,
        in_flight=pending.describe() if pending else None,
        outcome=outcome,
        temp_before_restart=temp_before,
        temp_after_restart=temp_after,
    )
    return result


def big_batch_trials(
    model_dir: Path,
    work_dir: Path,
    launcher: ExecLauncher | ForkLauncher,
    *,
    n: int = 5000,
    kills: tuple[float | str, ...] = (0.25, 0.5, 0.75, *UPSERT_POINTS),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Kill the server while it handles an upsert of ``n`` items (about half of them replacements: ids drawn from
    a pool of 2n); after each restart the batch must be wholly applied or wholly absent.

    Each kill is either a fraction ``f``: SIGKILL ``f`` x (the time an unkilled such upsert took) after sending
    (the reply may come first: ``in_flight`` False, and then the batch must be applied); or an upsert crash point
    (deterministic: the server kills itself before or after the COMMIT, and the outcome must be the point's).
    State is read back in one search with k = 2n (every item, the metadata naming the write of each), /info's
    count and GETs of a sample (codes).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    collection, tally = work_dir / "collection", Tally()
    rng = np.random.default_rng(seed)

    def start(crash_point: str | None = None) -> Server:
        spec = ServerSpec(
            model_dir,
            collection,
            work_dir / "server.log",
            max_batch=n,
            max_k=2 * n,
            snapshot_every=0,
            crash_point=crash_point,
            crash_at=n,
        )
        server = launcher.start(spec)
        server.wait_ready()
        return server

    def post(url: str, w: Write, reply: dict[str, Any]) -> None:
        try:
            with httpx.Client(base_url=url, timeout=120) as c:
                reply["status"] = send(c, w).status_code
        except httpx.TransportError as exc:
            reply["error"] = type(exc).__name__

    server = start()
    n_bits = httpx.get(server.url + "/info", timeout=30).json()["n_bits"]
    model = Model(2 * n, n_bits // 8, rng, max_items=n, delete_fraction=0.0)
    trials = []
    try:
        for _ in range(2):  # the first only inserts; the second (timed) replaces about half
            w, reply = model.next_write(size=n), {}
            t = time.monotonic()
            post(server.url, w, reply)
            upsert_s = time.monotonic() - t
            if reply.get("status") != 200:
                raise RuntimeError(f"unkilled upsert of {n} items: {reply}")
            model.apply(w)
        for kill in kills:
            point = kill if isinstance(kill, str) else None
            if point:
                server.kill()
                server = start(point)
            w, reply = model.next_write(size=n), {}
            thread = threading.Thread(target=post, args=(server.url, w, reply), daemon=True)
            thread.start()
            if point:
                thread.join(120)  # the server kills itself
            else:
                time.sleep(kill * upsert_s)
            server.kill()
            thread.join(120)
            tally.kills += 1
            server = start()
            outcome = _big_batch_outcome(server.url, model, w, tally, rng)
            in_flight = "status" not in reply
            if point:
                ok = in_flight and outcome == UPSERT_POINTS[point]
            else:
                ok = outcome in ("applied", "absent") if in_flight else outcome == "applied"
            trials.append(
                {
                    "kill": kill if point else f"{kill:.2f} x {upsert_s:.3f}s",
                    "in_flight": in_flight,
                    "outcome": outcome,
                    "ok": ok and not tally.problems,
                    "problems": list(tally.problems),
                }
            )
            tally.problems.clear()
    finally:
        server.kill()
    return trials


def _big_batch_outcome(url: str, model: Model, w: Write, tally: Tally, rng: np.random.Generator) -> str:
    """Read every item with one search (k = all), resolve ``w`` all-or-nothing, check a sample of codes by GET."""
    before = model.state
    with httpx.Client(base_url=url, timeout=120) as client:
        k = len(model.pool)
        hits = _search(client, {"queries": [{"code": "00" * model.n_bytes}], "k": k}, tally, "big batch")
        if hits is None:
            return "torn"
        ids = [h["id"] for h in hits[0]]
        if len(ids) != len(set(ids)):
            tally.problem("corrupted", "big batch: duplicate hits")
        meta = {h["id"]: h["metadata"] for h in hits[0]}
        new_w = [meta.get(i, {}).get("w") == w.n and meta[i] == w.items[i][1] for i in w.items]
        old = [meta.get(i) == (before[i][1] if i in before else None) for i in w.items]
        outcome = "applied" if all(new_w) else "absent" if all(old) else "torn"
        if outcome == "applied":
            model.apply(w)
        want = {i: m for i, (_, m) in model.state.items()}
        if meta != want:
            tally.problem("corrupted", f"big batch ({outcome}): search holds {len(meta)} items, expected {len(want)}")
        sample = rng.choice(sorted(model.state), size=min(100, len(model.state)), replace=False).tolist()
        got, failed = fetch_items(client, sample, tally)
        bad = [i for i in sample if got.get(i) != model.state[i] and i not in failed]
        if bad:
            tally.problem("corrupted", f"big batch ({outcome}): GET disagrees for {bad[:5]}")
        count = client.get("/info").json()["count"]
        if count != len(model.state):
            tally.problem("corrupted", f"big batch: /info count {count}, expected {len(model.state)}")
    return outcome


def make_model(path: Path, n_bits: int = 64) -> Path:
    """A tiny dense checkpoint (random vectors, one epoch, about a second): the server needs one, not its quality."""
    import torch
    from hamdex.models import checkpoint
    from hamdex.models.train import TrainConfig, fit_hasher

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        hasher, _ = fit_hasher(x, "dense", {"n_bits": n_bits, "hidden": (16,)}, TrainConfig(epochs=1, progress=False))
    finally:
        torch.set_num_threads(threads)
    checkpoint.save(path, hasher)
    return path


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs (default 100)")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collection", type=Path, help="work directory for the collection (must not exist)")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: train a tiny 64-bit one)")
    parser.add_argument("--launcher", choices=["exec", "fork"], default="exec", help="see above (default exec)")
    parser.add_argument("--pool", type=int, default=500, help="ids writes draw from (default 500)")
    parser.add_argument("--snapshot-every", type=int, default=200, help="0: the service's default (100,000)")
    parser.add_argument("--index-kind", default="flat", help="flat, ivf, hnsw, hash or multihash")
    parser.add_argument("--crash-point", choices=CRASH_POINTS, help="instead of random kills: one crash-point trial")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per restart")
    return parser.parse_args(argv)


def format_table(summary: dict[str, Any]) -> str:
    rows = [(k, summary[k]) for k in ("kills", "acknowledged", "lost", "corrupted")]
    rows += [(k, summary[k]) for k in ("in_flight_applied", "in_flight_absent", "seconds")]
    rows += [(k, v) for k, v in summary["details"].items() if k != "problems"]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def _work_dir(collection: Path | None) -> Iterator[Path]:
    if collection is not None:
        if collection.exists() and any(collection.iterdir()):
            raise SystemExit(f"{collection} exists and is not empty: the crash test needs a fresh collection")
        collection.mkdir(parents=True, exist_ok=True)
        yield collection
        return
    path = Path(tempfile.mkdtemp(prefix="hamdex-crash-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = print if args.verbose else (lambda _: None)
    with _work_dir(args.collection) as work:
        model_dir = args.model or make_model(work / "model")
        launcher = make_launcher(args.launcher)
        try:
            if args.crash_point:
                summary = crash_point_trial(model_dir, work / "run", args.crash_point, launcher, seed=args.seed)
            else:
                cfg = Config(
                    kills=args.kills,
                    seed=args.seed,
                    pool=args.pool,
                    snapshot_every=args.snapshot_every,
                    index_kind=args.index_kind,
                )
                summary = run_crash_test(model_dir, work / "run", cfg, launcher, log)
        finally:
            launcher.close()
        summary["details"]["launcher"] = args.launcher
        print(format_table(summary))
        for problem in summary["details"]["problems"]:
            print("  " + problem.replace("\n", "\n    "))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        failed = summary["lost"] > 0 or summary["corrupted"] > 0
        if failed and args.collection is None:
            kept = Path(tempfile.mkdtemp(prefix="hamdex-crash-failed-"))
            shutil.copytree(work, kept, dirs_exist_ok=True)
            print(f"work directory kept in {kept}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        _serve_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_fork_helper":
        _fork_helper_main()
    else:
        sys.exit(main())
