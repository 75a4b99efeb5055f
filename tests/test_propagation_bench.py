"""benchmarks/propagation.py on the CI-sized Fashion-MNIST subset: the numbers it reports are what they say."""

from __future__ import annotations

import pytest
from hamdex.evaluation.harness import FASHION_DIR

from benchmarks import propagation


@pytest.mark.skipif(
    not FASHION_DIR.exists(), reason="Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
)
def test_propagation_bench_reports_checked_classes(capsys):
    result = propagation.main(["--dataset", "fashion-mnist", "--quick", "--fractions", "0.01,0.1"])
    few, some = result[0.01], result[0.1]
    assert (few["labelled"], some["labelled"]) == (30, 300)
    assert few["confidence_bar"] is None and few["taken"] == 0, "30 labels: 6 hidden, too few to check against"
    assert some["confidence_bar"] is not None and 0 < some["taken"] <= some["labelled"] * 9 * 0.5 + 1
    # what training takes is righter than the plain propagation to every item, and than chance (10 classes)
    assert some["taken_accuracy"] > some["propagation_accuracy"] > 0.1
    # the classes in the neighbour space: checked on hidden labelled items, and where used the unlabelled items'
    # neighbours share their class more often than without them
    assert few["space_check"] is None and not few["space_used"], "6 hidden labelled items: too few to check"
    assert some["space_check"] is not None and some["classifier_accuracy"] > 0.5
    assert some["space_used"] == (some["space_check"]["with"] > some["space_check"]["without"])
    if some["space_used"]:
        assert some["purity_with_classes"] > some["purity"]
    assert "| 10% | 300 |" in capsys.readouterr().out
