"""The abuse benchmark (benchmarks/abuse.py) on a tiny collection: 2,000 items, 1 s phases, one copy of each request.

Checks the wiring, not the speed (CI machines are too noisy for thresholds): every abusive request is answered with
the status its fix gives, every reported number is there, and the goals are listed with a verdict. About 20 s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def script():
    from benchmarks import abuse  # at first use, not at collection: a script may set OMP_* on import

    return abuse


@pytest.fixture(scope="module")
def tiny(script, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("abuse-bench")
    argv = ["--n", "2000", "--phase-s", "1", "--copies", "1", "--oversized", "20000", "--slow-bulk-s", "0.5"]
    script.main([*argv, "--timeout-s", "10", "--json", str(out / "abuse.json"), "--workdir", str(out)])
    return json.loads((out / "abuse.json").read_text()), out


def test_every_abusive_request_is_answered(tiny: tuple[dict, Path]) -> None:
    results, workdir = tiny
    abusive = results["abusive"]
    assert list(abusive) == [
        "radius_all_k1",
        "filter_missing_null",
        "filter_huge_int",
        "oversized_batch",
        "deep_metadata",
        "slow_bulk",
    ]
    for name in ("radius_all_k1", "filter_missing_null", "filter_huge_int", "slow_bulk"):
        assert abusive[name]["statuses"] == ["200"], (name, abusive[name])
    assert abusive["oversized_batch"]["statuses"] == ["422"] and abusive["oversized_batch"]["queries"] == 20_000
    assert abusive["oversized_batch"]["error_types"] == ["batch_too_large"]
    assert abusive["deep_metadata"]["statuses"][0].startswith("4")  # refused, never a 500
    for rec in abusive.values():
        assert rec["max_s"] > 0 and rec["probe_ms"] is not None and rec["probe_ms"] > 0 and rec["cpu_after_cores"] >= 0
    assert not list(workdir.glob("hamdex-abuse-*"))  # the temporary model, collection and log are removed


def test_summary_numbers_and_goals(script, tiny: tuple[dict, Path]) -> None:
    results, _ = tiny
    for key in script.HEADLINE_KEYS:
        assert isinstance(results[key], float) and math.isfinite(results[key]), key
    assert results["steady"]["alone"]["requests"] > 0 and results["steady"]["abuse"]["requests"] > 0
    assert results["livez_probes"] > 0 and results["rss_start_mb"] > 0
    names = [g["name"] for g in results["goals"]]
    assert names == [*results["abusive"], "rss_growth_mb", "p99_ratio", "livez_max_ms"]
    assert all(g["pass"] in (True, False) for g in results["goals"])
    table = script.format_table(results)
    assert "| radius_all_k1 | 200 |" in table and "| /livez max ms |" in table


def test_parse_args(script) -> None:
    args = script.parse_args(["--n", "500", "--copies", "2"])
    assert args.n == 500 and args.copies == 2 and args.timeout_s == 30.0
    for bad in (["--n", "3"], ["--copies", "0"], ["--phase-s", "0"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)
