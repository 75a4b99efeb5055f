"""Starting the crash test's servers: a spec per start, and two launchers.

``exec`` starts every server as a new ``hamdex serve`` process (``python -m hamdex.service.cli serve``), the way
production does; start-up (imports of torch, scikit-learn, FAISS) takes 3-6 s on a busy 2-core machine. ``fork``
imports all that once in a helper process (``python -m tests.crash fork-helper``) and forks each server from it: the
same ``create_app`` + ``uvicorn.run`` as ``hamdex serve``, in its own process and process group, on the same files,
starting in well under a second. A spec with a crash point runs ``python -m tests.crash serve`` (exec), or applies it
in the forked child, before the app starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.servers import CLI, REPO, Server, ServerDied, free_port, serve_args, service_env
from tests.crash.points import CRASH_POINTS, install_crash_point

SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
HARNESS = [sys.executable, "-m", "tests.crash"]


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


def spec_env(spec: ServerSpec) -> dict[str, str]:
    """The server's environment: no HAMDEX_* of the caller's; the spec's settings; single-threaded BLAS; named
    collections and models (which the crash test does not use) beside the log."""
    env = service_env(
        spec.log.parent, **SINGLE_THREAD_ENV, HAMDEX_INDEX_KIND=spec.index_kind, HAMDEX_LOG_LEVEL="warning"
    )
    if spec.snapshot_every:
        env["HAMDEX_SNAPSHOT_EVERY"] = str(spec.snapshot_every)
    if spec.max_batch is not None:
        env["HAMDEX_MAX_BATCH"] = str(spec.max_batch)
    if spec.max_k is not None:
        env["HAMDEX_MAX_K"] = str(spec.max_k)
    return env


def _hook_args(spec: ServerSpec) -> list[str]:
    """The flags ``python -m tests.crash serve`` reads before the ``hamdex serve`` arguments."""
    return ["--crash-point", spec.crash_point, "--crash-at", str(spec.crash_at)] if spec.crash_point else []


class ExecLauncher:
    """Each server is a fresh ``hamdex serve`` process (``python -m hamdex.service.cli serve``) in a new session."""

    name = "exec"

    def start(self, spec: ServerSpec) -> Server:
        spec.port = spec.port or free_port()
        serve = serve_args(spec.model, spec.collection, spec.port)
        if spec.crash_point:  # the same CLI, after the crash hook is set
            cmd = [*HARNESS, "serve", *_hook_args(spec), "--", *serve]
        else:
            cmd = [*CLI, *serve]
        return Server.spawn(cmd, spec_env(spec), spec.log, spec.port)

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
            [*HARNESS, "fork-helper"],
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
        return Server(int(reply["pid"]), spec.port, spec.log)

    def close(self) -> None:
        if self._helper.poll() is None:
            self._helper.stdin.close()
            try:
                self._helper.wait(10)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()


Launcher = ExecLauncher | ForkLauncher


def make_launcher(name: str) -> Launcher:
    return {"exec": ExecLauncher, "fork": ForkLauncher}[name]()


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


# ---- in the helper and server processes (python -m tests.crash ...) ---------------------------------------------


def serve_main(argv: list[str]) -> None:
    """``serve [hooks] -- serve ...``: the crash point, then the ``hamdex serve`` CLI in this process."""
    parser = argparse.ArgumentParser(prog="python -m tests.crash serve")
    parser.add_argument("--crash-point", choices=CRASH_POINTS)
    parser.add_argument("--crash-at", type=int, default=1)
    hooks, rest = parser.parse_known_args(argv)
    if hooks.crash_point:
        install_crash_point(hooks.crash_point, hooks.crash_at)
    from hamdex.service.cli import app

    app(args=[a for a in rest if a != "--"], prog_name="hamdex")


def fork_helper_main() -> None:
    """Import everything a server needs, then fork one server per JSON spec read from stdin; reply with its pid."""
    import hamdex.index.collection  # noqa: F401
    import uvicorn
    import uvicorn.lifespan.on  # noqa: F401  (imported lazily by uvicorn.run otherwise)
    import uvicorn.protocols.http.h11_impl  # noqa: F401
    from hamdex.service.app import create_app  # noqa: F401  (imported once, before the forks)
    from hamdex.service.settings import Settings  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel: no zombies
    threads = len(os.listdir("/proc/self/task")) if Path("/proc/self/task").exists() else 1
    print(json.dumps({"ready": True, "threads": threads}), flush=True)
    for line in sys.stdin:
        spec = ServerSpec(**json.loads(line))
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the server
            _forked_server(spec, read_end, write_end)
        os.close(write_end)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done by the child; whichever runs first wins, so killpg never races
        os.read(read_end, 1)
        os.close(read_end)
        print(json.dumps({"pid": pid}), flush=True)


def _forked_server(spec: ServerSpec, read_end: int, write_end: int) -> None:
    """In the forked child: its own process group, the log as stdout and stderr, the hooks, then the app."""
    import logging

    import uvicorn
    from hamdex.service.app import create_app
    from hamdex.service.settings import Settings

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
        if spec.crash_point:
            install_crash_point(spec.crash_point, spec.crash_at)
        os.environ.clear()
        os.environ.update(spec_env(spec))
        settings = Settings(model_path=spec.model, collection_path=spec.collection, port=spec.port, device="cpu")
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)
