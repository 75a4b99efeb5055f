"""Label propagation over the training kNN graph (models.propagate)."""

from __future__ import annotations

import numpy as np
import pytest
from hamdex.models.neighbours import nearest_neighbours
from hamdex.models.propagate import propagate_labels
from hamdex.models.train import TrainConfig
from sklearn.datasets import load_digits


def _two_chains(n: int = 20) -> np.ndarray:
    """Two chains of n items each (0..n-1 and n..2n-1), each item's neighbours the two items on either side
    within its chain (clipped at the ends; not bipartite, as a real kNN graph)."""
    rows = []
    for start in (0, n):
        for i in range(n):
            rows.append([min(max(start + i + d, start), start + n - 1) for d in (-2, -1, 1, 2)])
    return np.array(rows, dtype=np.int64)


def test_each_chain_takes_its_seed_class():
    graph = _two_chains()
    labels = np.full(40, -1, dtype=np.int64)
    labels[0], labels[39] = 0, 1  # one seed at the far end of each chain
    out = propagate_labels(labels, graph, np.arange(40), share=1.0)
    assert (out[:20] == 0).all() and (out[20:] == 1).all()
    assert labels[5] == -1, "the input is not changed"


def test_share_takes_the_most_confident_first():
    graph = _two_chains()[:20]  # one chain of 20 items
    labels = np.full(20, -1, dtype=np.int64)
    labels[0], labels[19] = 0, 1  # a class at each end: the middle is where they meet, the least sure
    out = propagate_labels(labels, graph, np.arange(20), share=0.5)
    taken = np.flatnonzero((out >= 0) & (labels < 0))
    assert len(taken) == 9  # half of the 18 unlabelled rows
    assert (out[taken] == np.where(taken < 10, 0, 1)).all()
    assert {1, 2, 3, 16, 17, 18} <= set(taken) and not {9, 10} & set(taken)


def test_digits_labels_spread_right():
    digits = load_digits()
    x = digits.data / 16.0
    labels = np.where(np.arange(len(x)) % 20 == 0, digits.target, -1)  # 5% labelled
    out = propagate_labels(labels, nearest_neighbours(x, 10), np.arange(len(x)), share=0.5)
    taken = (out >= 0) & (labels < 0)
    assert taken.sum() == round(0.5 * (labels < 0).sum())
    assert (out[taken] == digits.target[taken]).mean() > 0.9


def test_off_unreached_and_held_out_rows_take_nothing():
    graph = _two_chains()
    labels = np.full(40, -1, dtype=np.int64)
    labels[0], labels[1] = 0, 1  # both classes in the first chain; the second chain has no seed
    assert (propagate_labels(labels, graph, np.arange(40), share=0.0) == labels).all()
    out = propagate_labels(labels, graph, np.arange(40), share=1.0)
    assert (out[20:] == -1).all(), "no path to a seed, no class"
    rows = np.setdiff1d(np.arange(40), [5, 6])  # held out: neither seed nor receiver, and they cut the chain
    out = propagate_labels(labels, graph, rows, share=1.0)
    assert (out[5:20] == -1).all() and (out[2:5] >= 0).all()


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_train_config_refuses_a_share_outside_0_1(share):
    with pytest.raises(ValueError, match="label_propagation"):
        TrainConfig(label_propagation=share)
