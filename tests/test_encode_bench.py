"""The encode benchmark (benchmarks/encode_bench.py) in quick mode: a real server process per model, tiny batches,
concurrency 1 and 2 for half a second each, JSON, base64 and binary bodies and a text model.

Checks the wiring, not the speed (CI machines are too noisy for thresholds): every number is there and finite, no
request failed, each body kind's HTTP codes equal the in-process ones, and each server shut down cleanly. About
40 s on a shared 2-core machine.
"""

from __future__ import annotations

import json
import math

import pytest


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    from benchmarks import encode_bench  # at first use, not at collection: it sets torch's threads when run

    out = tmp_path_factory.mktemp("encode-bench")
    argv = ["--quick", "--seconds", "0.5", "--concurrency", "1,2", "--json", str(out / "e.json"), "--md"]
    encode_bench.main([*argv, str(out / "e.md"), "--workdir", str(out)])
    return json.loads((out / "e.json").read_text()), (out / "e.md").read_text()


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_every_body_and_level_is_measured(quick: tuple[dict, str]) -> None:
    results, table = quick
    assert list(results["models"]) == ["pixels", "text"]
    assert list(results["models"]["pixels"]["http"]) == ["json", "base64", "binary"]
    assert list(results["models"]["text"]["http"]) == ["text"]
    for name, model in results["models"].items():
        assert model["clean_shutdown"], name
        for body, levels in model["http"].items():
            assert _finite(model["inprocess"][body]["items_per_s"]) and model["inprocess"][body]["items_per_s"] > 0
            assert list(levels) == ["1", "2"]
            for level in levels.values():
                assert level["errors"] == 0 and level["requests"] > 0, (name, body, level)
                for key in ("items_per_s", "ratio", "p50_ms", "p99_ms"):
                    assert _finite(level[key]) and level[key] > 0, (name, body, key, level)
            assert f"| {name} | {body} |" in table


def test_http_codes_equal_in_process_codes(quick: tuple[dict, str]) -> None:
    results, _ = quick
    for name, model in results["models"].items():
        assert model["codes_match"] and all(model["codes_match"].values()), (name, model["codes_match"])
        assert len(model["codes"]) == 2 * 16 and all(len(c) == 16 for c in model["codes"])  # 2 bodies of 16, 64 bits


def test_workers_table_has_a_row_per_server() -> None:
    from benchmarks import encode_bench

    level = {"items_per_s": 100.0, "ratio": 0.5, "p50_ms": 10.0, "p99_ms": 20.0}
    run = {"inprocess": {"json": {"items_per_s": 200.0}}, "http": {"json": {"1": level}}}
    model = {"workers": {"1": run, "2": run}, **run}
    results = {"config": {"concurrency": [1], "workers": [1, 2]}, "models": {"pixels": model}}
    table = encode_bench.markdown(results)
    assert "| workers |" in table
    assert "| pixels | json | 1 | 200 | 100 (0.50x) | 10 / 20 |" in table
    assert "| pixels | json | 2 | 200 | 100 (0.50x) | 10 / 20 |" in table
    assert encode_bench.config_from_args(encode_bench.parse_args(["--workers", "1,2"])).workers == (1, 2)


def test_code_agreement_counts_equal_codes_and_flipped_bits() -> None:
    import numpy as np

    from benchmarks.gpu_serve_check import code_agreement

    a = np.zeros((4, 8), np.uint8)  # 4 codes of 64 bits
    b = a.copy()
    b[1, 0] = 0b1  # one bit
    b[2, 3] = 0b1011  # three bits
    agree = code_agreement(a, b)
    assert agree == {"equal": 0.5, "mean_hamming": 1.0, "flip_share": 1.0 / 64, "max_hamming": 3}
