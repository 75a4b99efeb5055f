"""benchmarks/label_readout.py on the CI-sized Fashion-MNIST subset: every read-out of one model's weights scored."""

from __future__ import annotations

import pytest
from hamdex.evaluation.harness import FASHION_DIR

from benchmarks import label_readout


@pytest.mark.skipif(
    not FASHION_DIR.exists(), reason="Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
)
def test_label_readout_bench_scores_every_readout(capsys, tmp_path):
    results = label_readout.main(["--quick", "--bits", "16", "--json", str(tmp_path / "r.json")])
    fisher = [f"fisher {s} shrink {k}" for k in label_readout.SHRINKS for s in label_readout.SCALINGS]
    assert set(results) == {"plain itq", *fisher}  # 300 labelled items, 10 classes: enough for every Fisher fit
    for m in results.values():
        assert 0.1 < m["map"] < 1 and 0.1 < m["p@100"] <= 1 and 0 < m["distinct_code_fraction"] <= 1
    assert len({round(m["map"], 6) for m in results.values()}) > 1  # the read-outs differ
    out = capsys.readouterr().out
    assert "| plain itq |" in out and "fashion-mnist, 16 bits, 10% of the labels" in out
    assert (tmp_path / "r.json").exists()
