"""Label propagation: the few labels a user has reach the unlabelled items near them (issue 20, part 3).

Training with labels (``fit_hasher(labels=...)``) pulls items of one class together, but with 10% of the items
labelled the other 90% train as if there were no labels. Spreading the known classes over the training kNN graph,
as in Zhou et al., "Learning with local and global consistency" (NIPS 2003): ``F <- alpha * S @ F + (1 - alpha) *
Y`` with ``S = D^-1/2 W D^-1/2`` the symmetrically normalised graph, gives every unlabelled item a class and a
confidence. How far to trust it depends on the data, so it is checked on the data: a fifth of the labelled items
are hidden, the classes spread from the rest, and the confidence at which the hidden items got their own class
back 90% of the time is the bar; the most confident unlabelled items above it, up to a share, then train as
labelled.

Hand-written (a sparse power iteration) rather than scikit-learn's ``LabelSpreading`` because the graph is the one
training has already built (``TrainData.neighbours``: BM25 + LSA neighbours for text, whitened ones for pixels),
which ``LabelSpreading`` would rebuild from raw features by Euclidean kNN (140 s for 20 Newsgroups here) and in a
space whose neighbours agree less with labels. Measured on 20 Newsgroups (the text preset's graph, k 10, seeded 10% /
1% of the training labels): 0.80 / 0.63 of the unlabelled items get their true class, and the more confident half
of them 0.96 / 0.90 (docs/quality.md, "Labels").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

ALPHA = 0.99  # the weight of the neighbours against an item's own label, as in Zhou et al.
ITERATIONS = 30  # F converges geometrically (alpha^t); 30 steps leave under 0.74 of the start's weight
# a propagated class is taken only where labelled items hidden from the propagation got their own class back this
# often at that confidence: on Fashion-MNIST's pixel graph the confident half of 1% labels was right 0.48 of the time
MIN_ACCURACY = 0.9
CHECK_SHARE = 0.2  # of the labelled training items hidden to check the propagation
MIN_CHECKS = 20  # hidden labelled items needed to trust the check; fewer labels propagate nothing


def propagate_labels(
    labels: np.ndarray, neighbours: np.ndarray, rows: np.ndarray, share: float, seed: int = 0
) -> np.ndarray:
    """``labels`` int64 (n,) with -1 for unlabelled, ``neighbours`` int (n, k) the kNN graph, ``rows`` the
    training rows (seeds and receivers; held-out rows neither give nor take a class). Returns a copy of ``labels``
    where at most ``share`` (0..1) of the unlabelled training rows, the most confident first, took the class
    propagated to them, and only those at a confidence where the check (:func:`min_confidence`) found
    ``MIN_ACCURACY``."""
    out = labels.copy()
    if share <= 0:
        return out
    inside = np.zeros(len(labels), dtype=bool)
    inside[rows] = True
    seeds = np.flatnonzero(inside & (labels >= 0))
    threshold = min_confidence(labels, neighbours, inside, seeds, seed)
    if threshold is None:
        return out
    classes, confidence = spread(labels, neighbours, inside, seeds)
    unlabelled = np.flatnonzero(inside & (labels < 0))
    sure = unlabelled[confidence[unlabelled] >= threshold]
    take = int(round(share * len(unlabelled)))
    chosen = sure[np.argsort(-confidence[sure], kind="stable")[:take]]
    out[chosen] = classes[chosen]
    return out


def min_confidence(
    labels: np.ndarray, neighbours: np.ndarray, inside: np.ndarray, seeds: np.ndarray, seed: int = 0
) -> float | None:
    """The lowest confidence at which classes propagated from the other labelled items give a hidden
    ``CHECK_SHARE`` of them back their own class at least ``MIN_ACCURACY`` of the time; None (propagate nothing)
    with fewer than ``MIN_CHECKS`` hidden items or where even the most confident miss too often."""
    rng = np.random.default_rng(seed)
    hidden = rng.choice(seeds, int(round(CHECK_SHARE * len(seeds))), replace=False)
    if len(hidden) < MIN_CHECKS:
        return None
    classes, confidence = spread(labels, neighbours, inside, np.setdiff1d(seeds, hidden))
    order = np.argsort(-confidence[hidden], kind="stable")
    right = np.cumsum(classes[hidden][order] == labels[hidden][order]) / np.arange(1, len(hidden) + 1)
    ok = np.flatnonzero((right >= MIN_ACCURACY) & (confidence[hidden][order] > 0))
    return None if not len(ok) else float(confidence[hidden][order][ok[-1]])


def spread(
    labels: np.ndarray, neighbours: np.ndarray, inside: np.ndarray, seeds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's propagated class and confidence (its share of the row's propagated mass; 0 where no seed
    reaches it) from the labels of ``seeds``, over the graph restricted to the ``inside`` rows."""
    n, k = neighbours.shape
    src = np.repeat(np.arange(n), k)
    dst = neighbours.ravel()
    keep = inside[src] & inside[dst] & (src != dst)
    graph = sp.csr_matrix((np.ones(int(keep.sum())), (src[keep], dst[keep])), shape=(n, n))
    graph = graph + graph.T  # symmetric: j near i or i near j
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = sp.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    norm = scale @ graph @ scale
    y = np.zeros((n, int(labels.max()) + 1))
    y[seeds, labels[seeds]] = 1.0
    f = y.copy()
    for _ in range(ITERATIONS):
        f = ALPHA * (norm @ f) + (1 - ALPHA) * y
    mass = f.sum(axis=1)
    confidence = np.where(mass > 0, f.max(axis=1) / np.maximum(mass, 1e-300), 0.0)
    return f.argmax(axis=1), confidence
