"""The HTTP benchmark (benchmarks/http_bench.py) in quick mode: a real server subprocess (``hamdex serve``) over a
20k-item collection and a 64-bit text model trained on 300 posts (synthetic texts without the 20 Newsgroups
corpus); 2 s per phase, concurrency 1 and 8, a 3 s mixed load.

Checks the wiring, not the speed (CI machines are too noisy for thresholds): every reported key is there, every
number is finite, no request failed, HTTP encoding gives the in-process codes, and the server shut down cleanly.
About 30 s on a shared 2-core machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


def _http_script():
    from benchmarks import http_bench  # at first use, not at collection: a script may set OMP_* on import

    return http_bench


@pytest.fixture(scope="module")
def script():
    return _http_script()


@pytest.fixture(scope="module")
def quick(script, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("http-bench")
    # one OpenMP thread, as everywhere in the tests (conftest.py): two contend badly on a shared 2-core machine
    argv = ["--quick", "--omp-threads", "1", "--json", str(out / "http.json"), "--md", str(out / "http.md")]
    script.main([*argv, "--workdir", str(out), "--no-progress"])
    return json.loads((out / "http.json").read_text()), (out / "http.md").read_text(), out


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_json_has_every_key(script, quick: tuple[dict, str, Path]) -> None:
    results, _, _ = quick
    for key in script.HEADLINE_KEYS:
        assert key in results, key
        values = results[key] if isinstance(results[key], dict) else {"-": results[key]}
        assert values and all(_finite(v) for v in values.values()), (key, values)
    assert list(results["http_qps"]) == ["1", "8"] and results["ratio_concurrency"] == 8
    assert all(v > 0 for v in results["http_qps"].values())
    assert results["raw_faiss_qps"] > 0 and results["encode_http_items_per_s"] > 0
    assert results["encode_inprocess_items_per_s"] > 0 and results["encode_ratio"] > 0
    config = results["config"]
    assert config["items"] == 20_000 and config["bits"] == 64 and config["omp_num_threads"] == 1
    assert {"search_max_batch", "batch_max_wait_ms", "encode_max_batch"} <= set(results["server_settings"])


def test_quick_run_has_no_errors(quick: tuple[dict, str, Path]) -> None:
    results, _, _ = quick
    assert results["errors"] == 0, (results["errors_by_phase"], results["server"].get("log_tail"))
    assert results["encode"]["code_mismatches"] == 0  # the server encodes as the model does in-process
    mixed = results["mixed"]
    assert mixed["kinds"]["search"]["requests"] > 0 and mixed["kinds"]["upsert"]["requests"] > 0
    assert mixed["read_back"]["checked"] > 0 and mixed["read_back"]["errors"] == 0
    assert len(mixed["rss"]) >= 2 and mixed["rss_max_bytes"] >= mixed["rss_start_bytes"] > 0
    assert results["server"]["clean_shutdown"]


def test_quick_tables(quick: tuple[dict, str, Path]) -> None:
    results, markdown, workdir = quick
    goals = results["goals"]
    assert len(goals) == 4 and all(isinstance(g["pass"], bool) and _finite(g["measured"]) for g in goals), goals
    assert "| HTTP search QPS at concurrency 8 / raw FAISS batched QPS | >= 0.5 |" in markdown
    assert "| 8 |" in markdown and "| upsert |" in markdown and "OMP_NUM_THREADS=1" in markdown
    assert not list(workdir.glob("hamdex-http-bench-*"))  # temp dir removed


def test_parse_args(script) -> None:
    cfg = script.config_from_args(script.parse_args(["--quick"]))
    assert cfg.items == 20_000 and cfg.concurrency == (1, 8) and cfg.duration == 3.0 and cfg.train_texts == 300
    cfg = script.config_from_args(script.parse_args(["--items", "5000", "--concurrency", "4,16", "--omp-threads", "2"]))
    assert cfg.items == 5000 and cfg.concurrency == (4, 16) and cfg.omp_threads == 2 and cfg.duration == 60.0
    for bad in (["--items", "0"], ["--concurrency", "0"], ["--concurrency", "x"], ["--duration", "-1"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)
