"""The backends benchmark (benchmarks/backends.py) in quick mode: 5k codes into FAISS and milvus-lite.

Checks the wiring, not the speed: both backends report every metric, finite and positive, exact search has
recall 1.0 on both, and the table and JSON are written. About 5 s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


@pytest.mark.milvus
def test_quick_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    from benchmarks import backends as script

    script.main(["--quick", "--json", str(tmp_path / "backends.json"), "--workdir", str(tmp_path)])
    results = json.loads((tmp_path / "backends.json").read_text())
    for backend in ("faiss", "milvus"):
        values = results[backend]
        assert set(values) == {key for key, _, _ in script.METRICS}
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values.values())
        assert values["recall@10"] == 1.0
    table = capsys.readouterr().out
    assert "| search QPS, batched, k=10 |" in table and "Milvus / FAISS" in table
    assert [p.name for p in tmp_path.iterdir()] == ["backends.json"]  # the collections were removed
