"""``hamdex serve`` in a subprocess, the leader of its own process group: a free port, the server's environment,
readiness (/readyz), a graceful stop (SIGTERM) or a kill (SIGKILL) of the whole group, and its RSS and CPU time
from /proc. Used by the HTTP benchmarks and by the crash harness (tests/crash/), whose forked servers are not
this process's children (``popen`` None)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "hamdex.service.cli"]


class ServerDied(RuntimeError):
    """The server exited or never became ready."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_args(model: Path, collection: Path, port: int, device: str = "cpu") -> list[str]:
    """The ``hamdex`` arguments that serve ``collection`` with ``model`` on ``port`` (after ``CLI``, or a wrapper)."""
    return ["serve", "-m", str(model), "-c", str(collection), "--port", str(port), "--device", device]


def service_env(workdir: Path, keep: Iterable[str] = (), **settings: str) -> dict[str, str]:
    """This process's environment without its HAMDEX_* variables (but those in ``keep``), plus ``settings``; the
    named collections and models under ``workdir``, never the repository's var/."""
    keep = set(keep)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMDEX_") or k in keep}
    env.update(HAMDEX_COLLECTIONS_DIR=str(workdir / "collections"), HAMDEX_MODELS_DIR=str(workdir / "models"))
    env.update(settings)
    return env


class Server:
    """One started server process, the leader of its own process group."""

    def __init__(self, pid: int, port: int, log: Path, popen: subprocess.Popen | None = None) -> None:
        self.pid, self.port, self.log, self.popen = pid, port, Path(log), popen
        self.url = f"http://127.0.0.1:{port}"
        self.started = time.monotonic()
        self.startup_s = float("nan")

    @classmethod
    def spawn(cls, command: list[str], env: dict[str, str], log: Path, port: int) -> Server:
        """Start ``command`` (which serves on ``port``) in a new session, its output appended to ``log``."""
        started = time.monotonic()
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(popen.pid, port, log, popen)
        server.started = started
        return server

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:  # a forked server is the fork helper's child; the helper ignores SIGCHLD, so the kernel reaps it
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Poll /readyz until 200 (503: still loading); ``startup_s`` counts from the start of the process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerDied(f"the server exited during start-up:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    self.startup_s = time.monotonic() - self.started
                    return
            time.sleep(0.02)
        self.kill()
        raise ServerDied(f"the server was not ready after {timeout} s:\n{self.log_tail()}")

    def wait_dead(self, timeout: float = 30.0) -> None:
        """Raises TimeoutError (or subprocess.TimeoutExpired) if the process outlives ``timeout``."""
        if self.popen is not None:
            self.popen.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {self.pid} still alive after {timeout}s")
            time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL the whole process group and wait until the process is gone (its LOCK released)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait_dead()

    def stop(self, timeout: float = 120.0) -> int | None:
        """SIGTERM: uvicorn shuts down gracefully and the lifespan closes (snapshots) the collection. The exit
        code (0 for a forked server, whose code this process cannot see); None if it hung and was SIGKILLed."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.wait_dead(timeout)
            except (TimeoutError, subprocess.TimeoutExpired):
                self.kill()
                return None
        return self.popen.returncode if self.popen is not None else 0

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text("utf-8", errors="replace")[-n:]
        except OSError:
            return ""

    def rss(self) -> int:
        """VmRSS in bytes (/proc/PID/status)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process, all its threads (/proc/PID/stat)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
