"""The churn benchmark (benchmarks/churn.py) on 400 items: every tombstoned kind, with the no-rebuild comparison.

Checks the wiring and the headline claim on small data: every reported key is there and finite, hnsw meets the
recall goal after 10x churn, no kind loses recall against a fresh build of the same codes, and rebuilds ran.
A few seconds on a shared 2-core machine.
"""

from __future__ import annotations

import json
import math

import pytest


@pytest.fixture(scope="module")
def script():
    from benchmarks import churn  # at first use, not at collection: a script may set OMP_* on import

    return churn


@pytest.fixture(scope="module")
def results(script, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("churn-bench")
    script.main(["--quick", "--items", "400", "--without-rebuild", "--json", str(out / "churn.json")])
    return json.loads((out / "churn.json").read_text())


def test_every_kind_reports_every_key(script, results: dict) -> None:
    assert list(results["kinds"]) == ["hnsw", "hash", "multihash"]
    assert results["config"]["items"] == 400 and results["config"]["churn"] == 10
    for kind, record in results["kinds"].items():
        for key in script.KIND_KEYS:
            value = record[key]
            assert isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)), (kind, key)
        assert record["updates"] == 4_000 and record["rebuilds"] > 0, kind
        assert 0 <= record["recall@10_after"] <= 1 and record["kept"], (kind, record)
        assert set(record["without_rebuild"]) == {"recall@10_after", "hits_per_query_after", "updates_per_s"}


def test_hnsw_meets_the_goal(results: dict) -> None:
    hnsw = results["kinds"]["hnsw"]
    assert hnsw["goal_met"] and hnsw["recall@10_after"] >= 0.95 and hnsw["hits_per_query_after"] == 10


def test_table_and_args(script, results: dict) -> None:
    table = script.format_table(results)
    assert "| hnsw |" in table and "recall@10 after, no rebuild" in table
    cfg = script.config_from_args(script.parse_args(["--kinds", "hnsw", "--items", "50"]))
    assert cfg.kinds == ("hnsw",) and cfg.items == 50 and cfg.churn == 10
    for bad in (["--kinds", "flat"], ["--bits", "12"], ["--churn", "0"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)
