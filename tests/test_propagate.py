"""Label propagation over the training kNN graph (models.propagate)."""

from __future__ import annotations

import numpy as np
import pytest
from hamdex.models.neighbours import nearest_neighbours
from hamdex.models.propagate import propagate_labels
from hamdex.models.train import TrainConfig
from sklearn.datasets import load_digits


def _chains(n: int = 100, chains: int = 2) -> np.ndarray:
    """``chains`` chains of n items each (chain c holds rows c*n..c*n+n-1), each item's neighbours the two items
    on either side within its chain (clipped at the ends; not bipartite, as a real kNN graph)."""
    rows = []
    for start in range(0, chains * n, n):
        for i in range(n):
            rows.append([min(max(start + i + d, start), start + n - 1) for d in (-2, -1, 1, 2)])
    return np.array(rows, dtype=np.int64)


def _seeded(n: int = 100, every: int = 2) -> np.ndarray:
    """Labels of two chains of n: every ``every``-th item labelled with its chain's class (0, then 1)."""
    labels = np.full(2 * n, -1, dtype=np.int64)
    labels[0:n:every], labels[n : 2 * n : every] = 0, 1
    return labels


def test_each_chain_takes_its_class():
    labels = _seeded()
    out = propagate_labels(labels, _chains(), np.arange(200), share=1.0)
    assert (out[:100] == 0).all() and (out[100:] == 1).all()
    assert labels[1] == -1, "the input is not changed"


def test_share_caps_what_is_taken():
    labels = _seeded()
    out = propagate_labels(labels, _chains(), np.arange(200), share=0.5)
    taken = np.flatnonzero((out >= 0) & (labels < 0))
    assert len(taken) == 50  # half of the 100 unlabelled rows
    assert (out[taken] == (taken >= 100)).all()


def test_the_check_keeps_a_class_from_where_classes_meet():
    # one chain: its first 120 items labelled 0 and its last 120 labelled 1 (every other one), and between them a
    # stretch where labelled items alternate 0, 1: nothing there can be known
    labels = np.full(300, -1, dtype=np.int64)
    labels[0:120:2], labels[180:300:2] = 0, 1
    labels[120:180:2] = np.arange(30) % 2
    out = propagate_labels(labels, _chains(300, 1), np.arange(300), share=1.0)
    taken = (out >= 0) & (labels < 0)
    assert taken[:100].any() and taken[200:].any()
    assert not taken[130:170].any(), "where the classes alternate, a spread class is no better than a coin"
    assert (out[:100][taken[:100]] == 0).all() and (out[200:][taken[200:]] == 1).all()


def test_off_too_few_labels_and_held_out_rows_take_nothing():
    labels = _seeded()
    assert (propagate_labels(labels, _chains(), np.arange(200), share=0.0) == labels).all()
    two = np.full(200, -1, dtype=np.int64)
    two[0], two[100] = 0, 1  # two labels: too few to check the propagation against, so none is spread
    assert (propagate_labels(two, _chains(), np.arange(200), share=1.0) == two).all()
    labels = _seeded(200)
    rows = np.setdiff1d(np.arange(400), np.arange(100, 200))  # chain 0's last 100 held out: neither give nor take
    out = propagate_labels(labels, _chains(200), rows, share=1.0)
    assert (out[100:200] == labels[100:200]).all() and (out[:100] == 0).all()


def test_digits_labels_spread_right():
    digits = load_digits()
    x = digits.data / 16.0
    labels = np.where(np.arange(len(x)) % 10 == 0, digits.target, -1)  # 10% labelled
    out = propagate_labels(labels, nearest_neighbours(x, 10), np.arange(len(x)), share=0.5)
    taken = (out >= 0) & (labels < 0)
    assert 0 < taken.sum() <= round(0.5 * (labels < 0).sum())
    assert (out[taken] == digits.target[taken]).mean() > 0.9


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_train_config_refuses_a_share_outside_0_1(share):
    with pytest.raises(ValueError, match="label_propagation"):
        TrainConfig(label_propagation=share)
