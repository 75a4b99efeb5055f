"""The user's classes in the space where training finds neighbours (issue 20, part 3): with labels on part of the
items, the unlabelled ones' neighbours, neighbour targets and cluster pseudo-labels follow the classes too.

The label term (``TrainConfig.label_weight``) pulls labelled items of one class together, but with 10% of the items
labelled the other 90% train on neighbours found without the labels. Here a logistic regression fitted on the
labelled training items (scikit-learn's) gives every item a class-probability row; labelled training items get
their own class, one-hot. That row joins the neighbour space at a length relative to the item's own row (``weight``
1: as long), so cosine similarity there mixes "looks alike" with "is likely of the same class". Whether it helps is
checked on the data (:func:`class_space`). Held-out items never lend their labels: the label probe that chooses
the checkpoint scores them.

A soft block rather than hard pseudo-labels: classes propagated to unlabelled items and trained on as labels lost
P@100 on 20 Newsgroups (docs/quality.md, "Labels"), while here an unsure prediction only weakly moves an item's
neighbours. What it does to the space: ``python -m benchmarks.propagation``; to the codes: docs/quality.md.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from hamdex.models.featurizers import Features
from hamdex.models.neighbours import unit_rows
from hamdex.models.safeguard import paired_win

LOG = logging.getLogger(__name__)

MIN_PER_CLASS = 2  # labelled training items a class on average below which no classifier is fitted
C = 10.0  # the logistic regression's inverse regularisation (scikit-learn's C)
MAX_ITER = 300
CHECK_SHARE = 0.2  # of the labelled training items hidden to check that the classes help (as models.propagate)
MIN_CHECKS = 20  # hidden labelled items needed for the check; fewer: the space stays as it is
MAX_CHECKS = 2000  # at most this many hidden (the check ranks them against one another: a square of them)


def class_probabilities(space: Features, labels: np.ndarray, rows: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """float32 (n, classes): each item's class probabilities from a logistic regression fitted on the labelled
    ``rows`` (training rows; ``labels`` int64 (n,), -1 unlabelled), and the labelled rows' own class one-hot.
    None when too few rows are labelled (``MIN_PER_CLASS`` a class on average) or they hold one class."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    known = rows[labels[rows] >= 0]
    n_classes = int(labels.max()) + 1 if labels.size else 0
    present = np.unique(labels[known])
    if len(present) < 2 or len(known) < MIN_PER_CLASS * n_classes:
        return None
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # an unconverged fit still ranks classes; the report says what was used
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed).fit(space[known], labels[known])
    proba = np.zeros((space.shape[0], n_classes), np.float32)
    proba[:, clf.classes_] = clf.predict_proba(space)
    proba[known] = np.eye(n_classes, dtype=np.float32)[labels[known]]
    seconds = time.perf_counter() - t0
    LOG.info("class probabilities of %d items from %d labelled ones in %.1fs", len(proba), len(known), seconds)
    return proba


def class_space(
    space: Features,
    labels: np.ndarray,
    rows: np.ndarray,
    weight: float,
    seed: int = 0,
    features: Features | None = None,
) -> tuple[Features, dict[str, Any]]:
    """``space`` with the class block (:func:`with_classes`) where it is checked to help, else ``space`` itself;
    and what the training report says: ``{"used", "weight", "classifier", "accuracy", "check": {"without",
    "with"}}``.

    A fifth of the labelled training ``rows`` are hidden and the classifier is fitted on the rest, on the
    neighbour space and on the model's ``features`` (when given and not the same), and the one more often right on
    the hidden items is used: a linear classifier on PCA-whitened pixels is right less often than on the pixels
    (Fashion-MNIST, 300 labels: 0.58 against 0.74), while on text the two are close (20 Newsgroups: 0.83 on the
    neighbour space, 0.80 on TF-IDF), where either serves. Then the check: the hidden items, which now stand
    where the unlabelled ones do, rank one another by cosine in both spaces, and the block is used where their
    average precision by class is higher with it by more than two paired standard errors (the safeguard's rule
    with labels, models.safeguard): with 1% of 20 Newsgroups' labels, 20 hidden items and a classifier right 0.40
    of the time, a rise of 0.02 is not enough."""
    info: dict[str, Any] = {"used": False, "weight": weight, "classifier": None, "accuracy": None, "check": None}
    labels = np.asarray(labels)
    known = rows[labels[rows] >= 0]
    n_hidden = min(int(round(CHECK_SHARE * len(known))), MAX_CHECKS)
    hidden = np.random.default_rng(seed).permutation(known)[:n_hidden]
    if weight <= 0 or len(hidden) < MIN_CHECKS or len(np.unique(labels[hidden])) < 2:
        return space, info
    shown = labels.copy()
    shown[hidden] = -1
    proba = class_probabilities(space, shown, rows, seed)
    if proba is None:
        return space, info
    name, right = "neighbour space", proba[hidden].argmax(axis=1) == labels[hidden]
    if features is not None and features is not space:  # the features instead where more often right
        other = class_probabilities(features, shown, rows, seed)
        assert other is not None, "the same labels fit both"
        other_right = other[hidden].argmax(axis=1) == labels[hidden]
        if other_right.mean() > right.mean():
            name, proba, right = "features", other, other_right
    accuracy = float(right.mean())
    info.update(classifier=name, accuracy=round(accuracy, 4))
    without_aps = _hidden_aps(space[hidden], labels[hidden])  # (h,) paired: the same hidden items
    with_aps = _hidden_aps(with_classes(space[hidden], proba[hidden], weight), labels[hidden])
    without, with_ = float(without_aps.mean()), float(with_aps.mean())
    info["check"] = {"without": round(without, 4), "with": round(with_, 4)}
    if not paired_win(with_aps, without_aps):
        LOG.info("classes kept out of the neighbour space: hidden items' mAP %.3f with, %.3f without", with_, without)
        return space, info
    proba = class_probabilities(features if name == "features" else space, labels, rows, seed)
    assert proba is not None, "the labels that checked it fit it"
    info["used"] = True
    LOG.info(
        "classes (a classifier on the %s, %.2f right on hidden items) join the neighbour space: hidden items' mAP "
        "%.3f -> %.3f",
        name,
        accuracy,
        without,
        with_,
    )
    return with_classes(space, proba, weight), info


def _hidden_aps(space: Features, labels: np.ndarray) -> np.ndarray:
    """float (h,): each item's average precision ranking the others by cosine in ``space``, same class = relevant."""
    from hamdex.models.probe import ranked_aps

    unit = unit_rows(space)
    sim = unit @ unit.T
    sim = np.array(sim.toarray() if sp.issparse(sim) else sim, dtype=np.float64)  # (h, h)
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :-1]  # each item's others, most similar first
    return ranked_aps(labels[order] == labels[:, None])


def with_classes(space: Features, proba: np.ndarray, weight: float) -> Features:
    """``space`` (n, d) beside ``proba`` (n, classes) scaled per row to ``weight`` times the row's own length:
    cosine similarity there is the space's and the classes' mixed (``weight`` 1: equal parts)."""
    if weight <= 0:
        return space
    if sp.issparse(space):
        norms = np.sqrt(np.asarray(space.multiply(space).sum(axis=1))).ravel()
    else:
        norms = np.linalg.norm(np.asarray(space), axis=1)
    block = (unit_rows(proba) * (weight * norms)[:, None]).astype(np.float32)
    if sp.issparse(space):
        return sp.hstack([space, sp.csr_matrix(block)], format="csr", dtype=np.float32)
    return np.hstack([np.asarray(space, np.float32), block])
