"""The durable-collection benchmark (benchmarks/store.py) in quick mode: 20k structured 64-bit codes, every kind.

Checks the wiring, not the speed (CI machines are too noisy for thresholds): every reported key is there and every
number is finite and positive, exact (flat) search has recall 1.0, and the restart probes ran in subprocesses.
About 15 s on a shared 2-core machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest


def _store_script():
    from benchmarks import store  # at first use, not at collection: a script may set OMP_* on import

    return store


@pytest.fixture(scope="module")
def script():
    return _store_script()


@pytest.fixture(scope="module")
def quick(script, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("store-bench")
    argv = ["--quick", "--json", str(out / "store.json"), "--md", str(out / "store.md"), "--no-progress"]
    script.main([*argv, "--workdir", str(out)])
    return json.loads((out / "store.json").read_text()), (out / "store.md").read_text(), out


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_quick_json_has_every_key(script, quick: tuple[dict, str, Path]) -> None:
    results, _, _ = quick
    kinds = ["flat", "ivf", "hnsw", "hash", "multihash"]
    assert results["bits"] == [64] and results["config"]["items"] == 20_000
    for where in (results, results["64"]):  # the 64-bit headline keys are also at top level
        for key in script.HEADLINE_KEYS:
            assert key in where, key
            values = where[key] if isinstance(where[key], dict) else {"-": where[key]}
            if isinstance(where[key], dict):
                assert list(values) == kinds, key
            assert all(_positive(v) for v in values.values()), (key, values)
    for kind, record in results["64"]["kinds"].items():
        for key in script.PER_KIND_KEYS:
            assert _positive(record[key]), (kind, key, record.get(key))
        assert record["recall@10"] <= 1.0 and record["raw_recall@10"] <= 1.0
    assert results["recall@10"]["flat"] == 1.0 and results["raw_recall@10"]["flat"] == 1.0
    assert results["64"]["kinds"]["flat"]["raw_delete_ms_p50"] > 0  # kinds that remove have a raw delete baseline


def test_quick_goals_and_tables(quick: tuple[dict, str, Path]) -> None:
    results, markdown, workdir = quick
    goals = results["64"]["goals"]
    assert [g["kind"] for g in goals] == ["flat", *["flat", "ivf", "hnsw", "hash", "multihash"] * 2, "flat"]
    for g in goals:
        assert _positive(g["measured"]) and _positive(g["raw_faiss"]) and _positive(g["ratio"]), g
        assert g["pass"] in (True, False), g  # 64 bits and no prefix: every goal applies
    assert goals[0]["pass"] == (goals[0]["measured"] >= 100_000)
    assert "| durable insert items/s" in markdown and "| flat | 20,000 |" in markdown
    assert list(workdir.iterdir()) != [] and not list(workdir.glob("hamdex-store-bench-*"))  # temp dir removed


def test_recall_counts_ties(script) -> None:
    db = np.array([[0b0000_0000], [0b0000_0001], [0b0000_0010], [0b1111_1111]], np.uint8)
    queries = np.zeros((1, 1), np.uint8)
    kth = script.exact_kth(db, queries, k=2)
    assert kth.tolist() == [1]
    assert script.recall_at_k(queries, db, np.array([[0, 2]]), kth) == 1.0  # item 2 ties item 1
    assert script.recall_at_k(queries, db, np.array([[0, 3]]), kth) == 0.5
    assert script.recall_at_k(queries, db, np.array([[0, -1]]), kth) == 0.5


def test_structured_codes_are_seeded_and_clustered(script) -> None:
    cfg = script.Config(items=2_000, queries=50, centres=10)
    db, queries = script.make_data(cfg, 64)
    again, _ = script.make_data(cfg, 64)
    assert db.dtype == np.uint8 and db.shape == (2_000, 8) and queries.shape == (50, 8)
    assert np.array_equal(db, again)
    # 10% flips: a query's nearest item is far closer than a random pair (32 bits apart on average)
    assert script.exact_kth(db, queries, k=1).mean() < 16


def test_parse_args(script) -> None:
    cfg = script.config_from_args(script.parse_args(["--quick", "--kinds", "hnsw,hash"]))
    assert cfg.kinds == ("flat", "hnsw", "hash") and cfg.bits == (64,) and cfg.items == 20_000
    cfg = script.config_from_args(script.parse_args(["--bits", "64,256", "--items", "1000"]))
    assert cfg.bits == (64, 256) and cfg.items == 1000 and cfg.queries == 1000
    for bad in (["--bits", "12"], ["--kinds", "lsh"], ["--items", "0"], ["--bits", ""]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)
