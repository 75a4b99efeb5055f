"""hamdex.progress: a tqdm bar on a terminal; plain log lines, never carriage-return redraws, elsewhere."""

from __future__ import annotations

import io
import logging
import re

import pytest
from tqdm import tqdm

from hamdex import progress as progress_mod
from hamdex.progress import LogProgress, progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HAMDEX_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", FakeTerminal())
    with progress(total=3, desc="x") as bar:
        assert isinstance(bar, tqdm)
    assert not isinstance(progress(total=3, enabled=False), LogProgress)


def test_elsewhere_log_lines(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("HAMDEX_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # Docker logs, CI, a file
    monkeypatch.setattr(progress_mod, "LOG_EVERY_S", 0.0)  # a line per update
    caplog.set_level(logging.INFO, logger="hamdex.progress")
    with progress(total=4, desc="indexing", initial=1) as bar:
        assert isinstance(bar, LogProgress)
        bar.update(1)
        bar.set_postfix(loss="0.5")
        bar.update(2)
    lines = [r.getMessage() for r in caplog.records if r.name == "hamdex.progress"]
    assert lines[0].startswith("indexing: 2/4 (50%) in ")
    assert lines[-1].startswith("indexing: 4/4 done in ") and lines[-1].endswith("; loss=0.5")
    assert len(lines) == 3 and not any("\r" in line for line in lines)


def test_iteration_logs_once_at_the_end(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HAMDEX_PROGRESS", "log")
    caplog.set_level(logging.INFO, logger="hamdex.progress")
    assert list(progress(range(5), desc="scattering", unit="batch")) == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records if r.name == "hamdex.progress"]
    assert len(lines) == 1 and lines[0].startswith("scattering: 5/5 done")


@pytest.mark.parametrize(("forced", "kind"), [("bar", tqdm), ("log", LogProgress)])
def test_forced_mode(monkeypatch: pytest.MonkeyPatch, forced: str, kind: type) -> None:
    monkeypatch.setenv("HAMDEX_PROGRESS", forced)
    bar = progress(total=1, desc="x")
    assert isinstance(bar, kind)
    bar.close()


def test_off_is_silent(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HAMDEX_PROGRESS", "off")
    caplog.set_level(logging.INFO, logger="hamdex.progress")
    with progress(total=2, desc="x") as bar:
        bar.update(2)
    assert not [r for r in caplog.records if r.name == "hamdex.progress"]


def test_hamdex_index_into_a_pipe_logs_plain_lines(dense_model_dir, tmp_path) -> None:
    """As in Docker logs: stderr is a pipe, so no redrawn bar, and the job's progress as a log line."""
    import json
    import subprocess
    import sys

    from tests.conftest import dense_vectors

    data = tmp_path / "items.jsonl"
    rows = (json.dumps({"id": str(i), "vector": v}) for i, v in enumerate(dense_vectors(50).tolist()))
    data.write_text("\n".join(rows) + "\n")
    args = ["index", str(data), "--model", str(dense_model_dir), "--collection", str(tmp_path / "c"), "--device", "cpu"]
    env = {k: v for k, v in __import__("os").environ.items() if k != "HAMDEX_PROGRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "hamdex.service.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    assert re.search(r"hamdex\.progress: indexing: 50(/50)? done in ", proc.stderr)  # a file's total is unknown
    assert "Loading faiss" not in proc.stderr  # the loader's INFO lines are quiet without --verbose
