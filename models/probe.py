"""The label-free retrieval signal that selects the training checkpoint and judges the finished model against ITQ.

A probe is a set of held-out items (queries) and training items (database) with pseudo-labels: k-means clusters
of the spectral embedding of their kNN graph in the model's input features (``models.teacher.cluster_labels``).
The signal is the mean average precision of the queries' Hamming ranking of the database, an item being relevant
when it shares the query's cluster: the mAP of the benchmarks, with clusters standing in for the classes a user
has not given. Plain nearest-neighbour recall (the share of each query's 10 exact neighbours among its 100
Hamming-nearest) ranked ITQ above a model with a far better label mAP in every space tried (raw, whitened and
scattering features of Fashion-MNIST): codes that group an item with its class rather than with its closest
pixels lose on it. The clusters are found in the input features rather than in a model's own neighbour space
(whitened pixels, BM25 text), which would favour the model that was trained on that space's neighbours.
Measurements in docs/robustness.md.

Embeddings are the exception (``TrainConfig.probe`` "neighbours", the dense preset's): their cosine is what their
encoder was trained for, so what a user asks of their codes is to keep each item's nearest vectors, and
:func:`neighbour_probe` measures exactly that, the mAP of each held-out item's 10 exact nearest training items by
cosine in the vectors as given (docs/embeddings.md).

Queries and database are capped (``MAX_QUERIES``, ``MAX_DATABASE``) so that one score costs about a second
whatever the training set's size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from hamdex.models.bits import pack
from hamdex.models.ensemble import Model, parts
from hamdex.models.featurizers import Features
from hamdex.models.hasher import to_tensor
from hamdex.models.health import hamming
from hamdex.models.neighbours import nearest_among, nearest_neighbours
from hamdex.models.teacher import cluster_labels

LOG = logging.getLogger(__name__)

MAX_QUERIES = 500
MAX_DATABASE = 10_000
CLUSTERS = 10  # pseudo-classes; fewer on small probes (models.teacher.MIN_CLUSTER_SIZE)
GRAPH_NEIGHBOURS = 10
LABEL_PROBE_MIN_QUERIES = 50  # labelled held-out items needed to judge by the user's labels instead of clusters


# what each kind of probe measures, as reports name it
SIGNALS = {"clusters": "probe mAP", "labels": "label mAP", "neighbours": "neighbour mAP"}


@dataclass(frozen=True)
class Probe:
    queries: np.ndarray  # int64 (q,) rows of the features: held-out items
    database: np.ndarray  # int64 (m,) rows of the features: training items
    labels: np.ndarray | None  # int64 (q + m,) pseudo-labels of queries then database; None for "neighbours"
    # what is relevant to a query: "clusters" (the same pseudo-label), "labels" (the same class of the user's) or
    # "neighbours" (one of its exact nearest database items in the input space: ``neighbours``)
    kind: str = "clusters"
    neighbours: np.ndarray | None = None  # int64 (q, k) positions in ``database`` of each query's exact nearest

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([self.queries, self.database])

    @property
    def signal(self) -> str:
        return SIGNALS[self.kind]

    def score(self, codes: np.ndarray) -> ProbeScore:
        """Packed codes uint8 (q + m, B) of :attr:`rows` -> the probe mAP in [0, 1] and its standard error."""
        q = len(self.queries)
        if self.neighbours is not None:
            ap = neighbour_average_precisions(codes[:q], codes[q:], self.neighbours)  # (q,)
        else:
            assert self.labels is not None
            ap = average_precisions(codes[:q], codes[q:], self.labels[:q], self.labels[q:])  # (q,)
        return ProbeScore(float(ap.mean()), float(ap.std(ddof=1) / np.sqrt(q)), ap)


class ProbeScore(NamedTuple):
    map: float
    stderr: float  # of the mean over the queries: differences within a few of it are noise
    aps: np.ndarray  # float (q,) each query's average precision, for paired comparisons of two codes


def build_probe(x: Features, queries: np.ndarray, database: np.ndarray, seed: int = 0) -> Probe | None:
    """A probe over (subsets of) the given rows of the features x (n, d); None with too few items to cluster."""
    rng = np.random.default_rng(seed)
    queries = _at_most(queries, MAX_QUERIES, rng)
    database = _at_most(database, MAX_DATABASE, rng)
    if len(queries) < 2 or len(database) < 2 * GRAPH_NEIGHBOURS:
        return None
    t0 = time.perf_counter()
    rows = np.concatenate([queries, database])
    sub = x[rows]
    labels = cluster_labels(sub, nearest_neighbours(sub, GRAPH_NEIGHBOURS), CLUSTERS, seed=seed)
    LOG.info("probe: %d queries, %d database items in %.1fs", len(queries), len(database), time.perf_counter() - t0)
    return Probe(queries, database, labels)


def label_probe(labels: np.ndarray, queries: np.ndarray, database: np.ndarray, seed: int = 0) -> Probe | None:
    """A probe over the user's own classes (int64 (n,) indices, -1 unlabelled): the labelled held-out rows as
    queries, the labelled training rows as database, relevance = same class; None with fewer than
    ``LABEL_PROBE_MIN_QUERIES`` labelled queries. When a user gives labels, this is what their retrieval means,
    which the cluster pseudo-labels can only guess (on TREC they guessed wrong: docs/robustness.md)."""
    rng = np.random.default_rng(seed)
    queries = _at_most(queries[labels[queries] >= 0], MAX_QUERIES, rng)
    database = _at_most(database[labels[database] >= 0], MAX_DATABASE, rng)
    if len(queries) < LABEL_PROBE_MIN_QUERIES or len(database) < 2 * GRAPH_NEIGHBOURS:
        return None
    LOG.info("probe: the labels of %d held-out and %d training items", len(queries), len(database))
    return Probe(queries, database, labels[np.concatenate([queries, database])], kind="labels")


def neighbour_probe(
    space: np.ndarray, queries: np.ndarray, database: np.ndarray, seed: int = 0, k: int = GRAPH_NEIGHBOURS
) -> Probe | None:
    """A probe whose relevant items are each held-out query's ``k`` nearest training items by cosine in ``space``
    (n, d): dense rows of the items as the user gave them (``TrainConfig.probe`` "neighbours"). For embeddings,
    whose cosine is what their encoder was trained for, the codes' job is to keep those neighbours, and this
    measures it; None with too few items."""
    rng = np.random.default_rng(seed)
    queries = _at_most(queries, MAX_QUERIES, rng)
    database = _at_most(database, MAX_DATABASE, rng)
    if len(queries) < 2 or len(database) < 2 * k:
        return None
    nearest = nearest_among(space, queries, database, k)  # (q, k) positions in database; sparse rows (text) too
    LOG.info("probe: the %d nearest of %d queries among %d database items", k, len(queries), len(database))
    return Probe(queries, database, None, kind="neighbours", neighbours=nearest)


def _at_most(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    return rows if len(rows) <= n else np.sort(rng.choice(rows, n, replace=False))


def average_precisions(
    q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray
) -> np.ndarray:
    """float (q,): each query's average precision of Hamming ranking, ties broken by one fixed random order of the
    database (as evaluation.metrics, whose mean_average_precision is their mean)."""
    order = np.random.default_rng(0).permutation(len(db_codes))
    db_codes, db_labels = db_codes[order], db_labels[order]
    out = []
    for start in range(0, len(q_codes), 256):
        dist = hamming(q_codes[start : start + 256], db_codes)  # (b, m)
        relevant = db_labels[np.argsort(dist, axis=1, kind="stable")] == q_labels[start : start + 256, None]
        out.append(ranked_aps(relevant))
    return np.concatenate(out)


def neighbour_average_precisions(q_codes: np.ndarray, db_codes: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """float (q,): each query's average precision of Hamming ranking with its ``neighbours`` (q, k) database
    positions as the relevant items, ties broken as :func:`average_precisions` does."""
    order = np.random.default_rng(0).permutation(len(db_codes))
    position = np.argsort(order)  # database position -> its place in the permuted order
    out = []
    for start in range(0, len(q_codes), 256):
        block = neighbours[start : start + 256]  # (b, k)
        dist = hamming(q_codes[start : start + 256], db_codes[order])  # (b, m)
        mask = np.zeros(dist.shape, dtype=bool)
        mask[np.arange(len(block))[:, None], position[block]] = True
        out.append(ranked_aps(np.take_along_axis(mask, np.argsort(dist, axis=1, kind="stable"), axis=1)))
    return np.concatenate(out)


def ranked_aps(relevant: np.ndarray) -> np.ndarray:
    """bool (b, m) relevance in ranked order -> float (b,) average precisions."""
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    return (relevant * hits / ranks).sum(axis=1) / np.maximum(relevant.sum(axis=1), 1)


@torch.no_grad()
def encode_rows(model: Model, x: Features, rows: np.ndarray, device: torch.device, batch: int = 2048) -> np.ndarray:
    """Packed codes uint8 (len(rows), n_bits // 8) of the given rows, in eval mode."""
    model.eval()
    codes = [
        pack(model.encode(to_tensor(x[rows[s : s + batch]], device, sparse=True))[0].cpu().numpy())
        for s in range(0, len(rows), batch)
    ]
    return np.concatenate(codes)


@torch.no_grad()
def calibrate(
    model: Model, x: Features, device, seed: int = 0, batch_size: int = 2048, labels: np.ndarray | None = None
) -> list[float] | None:
    """What is fitted on the training set after training: bottleneck thresholds (gaussian: per-bit medians) on the
    logits, and the itq read-out's rotation (models.readout) on all members' scores; returns ITQ's loss history
    when there is a rotation. ``labels`` int64 (n,) the user's classes of x's rows (-1 unlabelled) fit the read-out
    of a model trained with labels (models.readout.fisher_projection); other models ignore them, so labels that
    only judge a model never shape it."""
    model.eval()

    def over_x(fn) -> torch.Tensor:
        return torch.cat(
            [
                fn(to_tensor(x[s : s + batch_size], device, sparse=True)).float()
                for s in range(0, x.shape[0], batch_size)
            ]
        )

    for part in parts(model):
        if hasattr(part.bottleneck, "calibrate"):
            part.bottleneck.calibrate(over_x(part.logits))
    if model.readout is None:
        return None
    trained_with_labels = bool(model.config.label_names)
    return model.readout.fit(over_x(model.scores), seed, labels if trained_with_labels else None)


def probe_score(
    model: Model, x: Features, probe: Probe, device, seed: int = 0, labels: np.ndarray | None = None
) -> ProbeScore:
    """The probe mAP of a model as it would be shipped: calibrated on the probe's database items first (with their
    ``labels``, int64 (n,) over x's rows, where the model was trained with labels: :func:`calibrate`)."""
    database_labels = None if labels is None else labels[probe.database]
    calibrate(model, x[probe.database], device, seed, labels=database_labels)
    return probe.score(encode_rows(model, x, probe.rows, device))
