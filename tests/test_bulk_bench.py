"""The bulk benchmark (benchmarks/bulk.py) in quick mode: 20k structured vectors, the real ``hamdex index``.

Checks the wiring, not the speed (CI machines are too noisy for thresholds): every JSON key the issue names is
there, the counts are exact, nothing was skipped, and the numbers are finite and positive. About 20 s.
"""

from __future__ import annotations

import json
import math

import numpy as np


def test_quick_bulk_benchmark_reports_every_key(tmp_path):
    from benchmarks import bulk as script

    out = tmp_path / "bulk.json"
    result = script.main(["--quick", "--json", str(out), "--workdir", str(tmp_path / "work"), "--no-progress"])
    saved = json.loads(out.read_text())
    assert saved["items"] == result["items"] == 20_000 and saved["items_small"] == 2_000
    assert saved["skipped"] == 0
    for key in ("seconds", "items_per_s", "encode_only_items_per_s", "peak_rss_bytes", "peak_rss_bytes_100k"):
        value = saved[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    assert saved["items_per_s"] == saved["items"] / saved["seconds"]
    assert set(saved["goals"]) and all(isinstance(ok, bool) for ok in saved["goals"].values())
    # the data file the issue names: 784-d float32 in [0, 1]
    data = np.load(next((tmp_path / "work").glob("vectors-*.npy")), mmap_mode="r")
    assert data.shape == (20_000, 784) and data.dtype == np.float32 and 0 <= data.min() and data.max() <= 1
