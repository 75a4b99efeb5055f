"""Teachers from the training set's neighbour graph: per-item target bits and cluster pseudo-labels.

Both start from the symmetric k-nearest-neighbour graph of the features (cosine weights) and its spectral
embedding: the leading nontrivial eigenvectors of the normalised affinity D^-1/2 W D^-1/2, rescaled by D^-1/2
(a Laplacian eigenmap, as in Spectral Hashing and Self-Taught Hashing).

- ``spectral_teacher_bits``: the embedding rotated by ITQ (Gong & Lazebnik 2011) and thresholded at zero after
  centring; the bits a model is asked to reproduce (Self-Taught Hashing, Zhang et al., SIGIR 2010).
- ``cluster_labels``: k-means on the row-normalised embedding; items in the same cluster are extra positives of a
  supervised-contrastive term (``models.objectives.cluster_supcon``).

Only training items take part: queries are encoded by the trained encoder alone.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
from hamdex.models.featurizers import Features
from hamdex.models.neighbours import pair_cosines
from hamdex.models.readout import itq_rotation
from scipy.sparse.linalg import eigsh

LOG = logging.getLogger(__name__)


def knn_affinity(x: Features, neighbours: np.ndarray) -> sp.csr_matrix:
    """Symmetric (n, n) graph: cosine similarity on each kNN edge (clipped at 0), the max of both directions."""
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    sims = pair_cosines(x, rows, neighbours.ravel())
    w = sp.csr_matrix((np.maximum(sims, 1e-6), (rows, neighbours.ravel())), shape=(n, n))
    return w.maximum(w.T).tocsr()


def spectral_embedding(affinity: sp.csr_matrix, dim: int, seed: int = 0) -> np.ndarray:
    """float64 (n, dim): the Laplacian eigenmap of the graph, without the trivial (constant) eigenvector."""
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    normalised = sp.diags(inv_sqrt) @ affinity @ sp.diags(inv_sqrt)
    v0 = np.random.default_rng(seed).standard_normal(affinity.shape[0])
    values, vectors = eigsh(normalised, k=dim + 1, which="LA", tol=1e-4, v0=v0)
    order = np.argsort(-values)
    return (vectors[:, order] * inv_sqrt[:, None])[:, 1:]


def _standardised(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=0)
    return v / np.maximum(v.std(axis=0), 1e-12)


def spectral_teacher_bits(x: Features, neighbours: np.ndarray, n_bits: int, seed: int = 0) -> np.ndarray:
    """bool (n, n_bits): ITQ-rotated spectral embedding of the kNN graph, thresholded at zero."""
    t0 = time.perf_counter()
    emb = _standardised(spectral_embedding(knn_affinity(x, neighbours), n_bits, seed))
    bits = emb @ itq_rotation(emb, seed=seed)[0] > 0
    LOG.info("spectral teacher: %d bits for %d items in %.1fs", n_bits, len(bits), time.perf_counter() - t0)
    return bits


MIN_CLUSTER_SIZE = 5


def cluster_labels(x: Features, neighbours: np.ndarray, n_clusters: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """int64 (n,): k-means clusters of the row-normalised spectral embedding of the kNN graph. A small training set
    gets fewer clusters (at least ``MIN_CLUSTER_SIZE`` items each on average), and one under ten items one cluster."""
    from sklearn.cluster import KMeans

    n = x.shape[0]
    n_clusters = min(n_clusters, n // MIN_CLUSTER_SIZE)
    if n_clusters < 2:
        return np.zeros(n, np.int64)
    dim = min(dim, n - 2)  # the eigensolver needs fewer eigenvectors than items
    t0 = time.perf_counter()
    emb = spectral_embedding(knn_affinity(x, neighbours), dim, seed)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters, n_init=3, random_state=seed).fit_predict(emb).astype(np.int64)
    LOG.info("%d clusters of %d items in %.1fs", n_clusters, len(labels), time.perf_counter() - t0)
    return labels
