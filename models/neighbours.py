"""Neighbour targets: weak supervision from the training set's own nearest neighbours.

Instead of reconstructing an item's own features, the decoder reconstructs the mean of the item and its ``k``
nearest training neighbours by cosine similarity of the features. Codes then have to agree with what an item's
neighbourhood has in common rather than with its idiosyncratic words, which raises retrieval precision (on 20
Newsgroups at 32 bits, precision@100 0.485 -> 0.513; see the README). The idea follows NbrReg (Chaidaroon, Ebesu &
Fang, SIGIR 2018, "Deep Semantic Text Hashing with Weak Supervision"); the code is ours.

Cost: a blocked (n x n) similarity pass, O(n^2 d) for dense and far less for sparse text features.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from models.featurizers import Features

LOG = logging.getLogger(__name__)


def _unit_rows(x: Features) -> Features:
    if sp.issparse(x):
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
        return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(x: Features, k: int, block_size: int = 1024) -> np.ndarray:
    """int64 (n, k): each row's k nearest other rows by cosine similarity (in no particular order)."""
    t0 = time.perf_counter()
    unit = _unit_rows(x)
    n, k = x.shape[0], min(k, x.shape[0] - 1)
    out = np.empty((n, k), np.int64)
    for start in range(0, n, block_size):
        sim = unit[start : start + block_size] @ unit.T  # (b, n)
        sim = sim.toarray() if sp.issparse(sim) else np.asarray(sim)
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf  # never one's own neighbour
        out[start : start + block_size] = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    LOG.info("%d nearest neighbours of %d items in %.1fs", k, n, time.perf_counter() - t0)
    return out


def neighbour_targets(x: Features, neighbours: np.ndarray) -> Features:
    """(n, d): the mean of each row and its neighbours (n, k), same sparsity kind as ``x``."""
    n = x.shape[0]
    idx = np.concatenate([np.arange(n)[:, None], neighbours], axis=1)  # (n, k + 1) self first
    weights = np.full(idx.size, 1.0 / idx.shape[1], np.float32)
    mean = sp.csr_matrix((weights, (np.repeat(np.arange(n), idx.shape[1]), idx.ravel())), shape=(n, n))
    targets = mean @ x  # (n, d)
    return sp.csr_matrix(targets, dtype=np.float32) if sp.issparse(x) else np.asarray(targets, np.float32)
