"""Crash test (issue 4): the harness in tests/crash/ against real server processes killed with SIGKILL.

Every server here is a separate process (its own process group) serving the real app with uvicorn over HTTP. To
fit 20+ kills in the CI budget on 2 cores, most are forked from a helper that has imported the service already
(start-up about 0.1-0.3 s instead of 3-6 s for a fresh ``python -m hamdex.service.cli serve``, which torch and
scikit-learn imports dominate); one test restarts the real CLI process (``--launcher exec``).

What must hold after every restart: no acknowledged write lost; the write in flight at the kill wholly applied or
wholly absent; no duplicate or stale search hit; /info's count right. The tests also check that they can fail:
that kills landed with writes in flight, and that the checker reports a write removed behind the server's back.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks import crash as crash_cli
from tests import crash


@pytest.fixture(scope="module")
def launcher():
    fork = crash.ForkLauncher()
    yield fork
    fork.close()


def _clean(summary: dict) -> None:
    problems = "\n".join(summary["details"]["problems"])
    assert summary["lost"] == 0, problems
    assert summary["corrupted"] == 0, problems


def test_random_kills_lose_nothing(dense_model_dir: Path, launcher, tmp_path: Path) -> None:
    cfg = crash.Config(kills=24, seed=0, pool=200, snapshot_every=200)
    start = time.monotonic()
    summary = crash.run_crash_test(dense_model_dir, tmp_path, cfg, launcher)
    print(json.dumps(summary, indent=2), f"{time.monotonic() - start:.1f}s")
    _clean(summary)
    assert summary["kills"] == cfg.kills
    assert summary["acknowledged"] > 10 * cfg.kills
    in_flight = summary["in_flight_applied"] + summary["in_flight_absent"]
    assert in_flight >= cfg.kills // 4, summary  # kills do land mid-request
    assert summary["details"]["snapshots_seen"] >= 2, summary  # and snapshots happen between kills


def test_big_batch_is_all_or_nothing(dense_model_dir: Path, launcher, tmp_path: Path) -> None:
    """Kills during a 5,000-item upsert: at three moments, and at two exact steps (before / after COMMIT)."""
    trials = crash.big_batch_trials(dense_model_dir, tmp_path, launcher, n=5000)
    print(json.dumps(trials, indent=2))
    assert all(t["ok"] for t in trials), trials
    timed, points = trials[:3], trials[3:]
    assert any(t["in_flight"] for t in timed), trials  # at least one timed kill landed mid-request
    assert [(t["kill"], t["in_flight"], t["outcome"]) for t in points] == [
        ("upsert_before_commit", True, "absent"),
        ("upsert_after_commit", True, "applied"),
    ]


@pytest.mark.parametrize("point", crash.CRASH_POINTS)
def test_crash_point(point: str, dense_model_dir: Path, launcher, tmp_path: Path) -> None:
    result = crash.crash_point_trial(dense_model_dir, tmp_path, point, launcher, pool=200, batch=100)
    _clean(result)
    assert result["fired"], result
    assert result["acknowledged"] > 0
    if point in crash.UPSERT_POINTS:
        assert (result["in_flight"], result["outcome"]) == ("upsert of 100", crash.UPSERT_POINTS[point])
    if point == "snapshot_temp_written":
        assert result["temp_before_restart"]
    assert not result["temp_after_restart"]  # the restart removes what a cut-short snapshot left


def test_checker_reports_a_lost_write(dense_model_dir: Path, launcher, tmp_path: Path) -> None:
    """The checker can fail: an acknowledged item deleted from the store while the server is down is lost."""
    collection = tmp_path / "collection"
    spec = crash.ServerSpec(dense_model_dir, collection, tmp_path / "server.log", snapshot_every=0)
    server = launcher.start(spec)
    server.wait_ready()
    model = crash.Model(50, 2, np.random.default_rng(0), max_items=10, delete_fraction=0.0)
    with httpx.Client(base_url=server.url) as client:
        for _ in range(5):
            w = model.next_write()
            assert crash.send(client, w).status_code == 200
            model.apply(w)
    server.kill()
    victim = sorted(model.state)[0]  # the server acknowledged it
    with sqlite3.connect(collection / "items.sqlite") as db:
        db.execute("UPDATE items SET deleted_seq = 999 WHERE id = ? AND deleted_seq IS NULL", (victim,))
    server = launcher.start(crash.ServerSpec(dense_model_dir, collection, tmp_path / "server.log", snapshot_every=0))
    try:
        server.wait_ready()
        tally = crash.Tally()
        crash.verify(server.url, model, None, tally, exact=True, range_search=True, sample=5, label="tampered")
    finally:
        server.kill()
    assert tally.lost_writes == {model.last_write[victim]}, tally.problems
    assert tally.corrupted == 0, tally.problems


def test_real_cli_server(dense_model_dir: Path, tmp_path: Path) -> None:
    """A kill and a restart of the real ``python -m hamdex.service.cli serve`` process, with no hooks (the service's own
    snapshot interval); each start costs seconds of imports, so only one (the fork-based tests cover the rest)."""
    cfg = crash.Config(kills=1, seed=1, pool=100, snapshot_every=0, final_clean_restart=False)
    summary = crash.run_crash_test(dense_model_dir, tmp_path, cfg, crash.ExecLauncher())
    print(json.dumps(summary, indent=2))
    _clean(summary)
    assert summary["kills"] == 1 and summary["acknowledged"] > 0


def test_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/crash.py wiring: flags, table, JSON, exit status; the run itself replaced by canned numbers."""
    args = crash_cli.parse_args(["--kills", "7", "--json", "x.json", "--seed", "3", "--collection", "c"])
    assert (args.kills, args.json, args.seed, args.collection, args.launcher) == (
        7,
        Path("x.json"),
        3,
        Path("c"),
        "exec",
    )
    summary = crash.Tally(kills=7, acknowledged=70).summary(1.5)
    seen = {}

    class NoLauncher:
        def close(self) -> None:
            seen["closed"] = True

    def fake_run(model_dir, work_dir, cfg, launcher, log):
        seen["cfg"] = cfg
        return json.loads(json.dumps(summary))

    monkeypatch.setattr(crash_cli, "make_launcher", lambda name: NoLauncher())
    monkeypatch.setattr(crash_cli, "run_crash_test", fake_run)
    out = tmp_path / "r.json"
    argv = ["--kills", "7", "--model", str(tmp_path), "--collection", str(tmp_path / "c"), "--json", str(out)]
    assert crash_cli.main(argv) == 0
    assert seen["closed"] and seen["cfg"].kills == 7
    report = json.loads(out.read_text())
    keys = {"kills", "acknowledged", "lost", "corrupted", "in_flight_applied", "in_flight_absent", "seconds"}
    assert keys <= set(report) and report["kills"] == 7 and report["lost"] == 0
    assert "| acknowledged" in capsys.readouterr().out
    summary["corrupted"] = 1
    assert crash_cli.main([*argv[:-1], str(tmp_path / "r2.json")]) == 1


def test_resolve_pending() -> None:
    """All-or-nothing classification of the write in flight (pure: no server)."""
    before = {"a": ("00ff", {"w": 1}), "b": ("0f0f", {"w": 1})}
    w = crash.Write(2, "upsert", items={"a": ("1111", {"w": 2}), "c": ("2222", {"w": 2})})
    assert crash.resolve_pending(w, before, {**before, **w.items}) == "applied"
    assert crash.resolve_pending(w, before, dict(before)) == "absent"
    assert crash.resolve_pending(w, before, {**before, "c": w.items["c"]}) == "torn"
    delete = crash.Write(3, "delete", id="b")
    assert crash.resolve_pending(delete, before, {"a": before["a"]}) == "applied"
    assert crash.resolve_pending(delete, before, dict(before)) == "absent"
    assert crash.resolve_pending(delete, before, {**before, "b": ("0000", {"w": 9})}) == "torn"
