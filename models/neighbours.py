"""Neighbour targets: weak supervision from the training set's own nearest neighbours.

Instead of reconstructing an item's own features, the decoder reconstructs the mean of the item and its ``k``
nearest training neighbours by cosine similarity of the features. Codes then have to agree with what an item's
neighbourhood has in common rather than with its idiosyncratic words, which raises retrieval precision (on 20
Newsgroups at 32 bits, precision@100 0.485 -> 0.513; see docs/quality.md). The idea follows NbrReg (Chaidaroon, Ebesu &
Fang, SIGIR 2018, "Deep Semantic Text Hashing with Weak Supervision"); the code is ours.

Cost: a blocked (n x n) similarity pass, O(n^2 d) for dense and far less for sparse text features.

``whitened``: dense features projected on their leading principal axes, each scaled to unit variance (PCA
whitening). Neighbours by cosine there are less dominated by the few high-variance directions of raw pixels
(overall brightness, size); see ``TrainConfig.neighbour_whiten`` for what it measured.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from hamdex.models.featurizers import Features
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

LOG = logging.getLogger(__name__)


def unit_rows(x: Features) -> Features:
    """Each row of x (dense or sparse) scaled to unit length (zero rows stay zero)."""
    if sp.issparse(x):
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
        return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(x: Features, k: int, block_size: int = 1024) -> np.ndarray:
    """int64 (n, k): each row's k nearest other rows by cosine similarity (in no particular order)."""
    t0 = time.perf_counter()
    unit = unit_rows(x)
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


def nearest_among(x: Features, queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """int64 (q, k): for each of the ``queries`` rows of x, the positions in ``database`` (rows of x) of its k nearest
    by cosine similarity (in no particular order)."""
    sim = unit_rows(x[queries]) @ unit_rows(x[database]).T  # (q, m)
    sim = sim.toarray() if sp.issparse(sim) else np.asarray(sim)
    return np.argpartition(-sim, k - 1, axis=1)[:, :k].astype(np.int64)


def whitened(x: Features, dim: int) -> np.ndarray:
    """float32 (n, min(dim, d)): dense x centred, projected on its top principal axes, each axis scaled to unit
    variance. Axes with (numerically) zero variance are dropped rather than blown up."""
    if sp.issparse(x):
        raise ValueError("PCA whitening needs dense features (text features are sparse)")
    t0 = time.perf_counter()
    x = np.asarray(x, np.float32)
    centred = x - x.mean(axis=0)
    cov = (centred.T @ centred).astype(np.float64) / max(len(x) - 1, 1)  # (d, d)
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(-values)[: min(dim, x.shape[1])]
    values, vectors = values[order], vectors[:, order]
    keep = values > 1e-10 * max(values[0], 1e-30)
    out = (centred @ vectors[:, keep].astype(np.float32)) / np.sqrt(values[keep]).astype(np.float32)
    LOG.info("PCA whitening to %d dims of %d items in %.1fs", out.shape[1], len(x), time.perf_counter() - t0)
    return out


def full_vocabulary_bm25(texts: Sequence[str], min_df: int = 2, k1: float = 1.2, b: float = 0.75) -> sp.csr_matrix:
    """float32 CSR (n, words): Okapi BM25 weights of the texts over every word in at least ``min_df`` of them
    (English stop words removed): term frequency saturating with ``k1``, normalised for document length by ``b``,
    times the BM25 idf log(1 + (n - df + 0.5) / (df + 0.5)). Only for finding neighbours: the model's input keeps
    its fixed 10k-word TF-IDF. Rare but shared words (names, part numbers, jargon) say a lot about which posts
    belong together, and BM25 keeps a long post's repeated words from dominating. On 20 Newsgroups the share of an
    item's 10 neighbours with its label: 0.659 (input TF-IDF), 0.680 (TF-IDF over the 56k words), 0.698 (BM25)."""
    t0 = time.perf_counter()
    texts = list(texts)
    try:
        counts = _counts(min_df).fit_transform(texts)
    except ValueError:  # a handful of texts may share no word: then every word counts
        counts = _counts(1).fit_transform(texts)
    counts = sp.csr_matrix(counts, dtype=np.float32)
    n, words = counts.shape
    df = np.bincount(counts.indices, minlength=words)
    idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    length = np.asarray(counts.sum(axis=1)).ravel()
    norm = (1 - b + b * length / max(length.mean(), 1e-12)).astype(np.float32)  # per text
    rows = np.repeat(np.arange(n), np.diff(counts.indptr))
    tf = counts.data
    counts.data = tf * (k1 + 1) / (tf + k1 * norm[rows]) * idf[counts.indices]
    LOG.info("BM25 over %d words of %d texts in %.1fs", words, n, time.perf_counter() - t0)
    return counts


def _counts(min_df: int) -> CountVectorizer:
    return CountVectorizer(min_df=min_df, stop_words="english", dtype=np.float32)


_SUBJECT = re.compile(r"^subject:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_REPLY_PREFIX = re.compile(r"^(\s*(re|fwd?|aw)\s*:\s*)+", re.IGNORECASE)


def subject_line(text: str) -> str:
    """The ``Subject:`` header of a mail- or news-style text (looked for before its first blank line), without
    reply and forward prefixes ("Re: Re: x" -> "x"); "" when there is none."""
    match = _SUBJECT.search(text.split("\n\n", 1)[0])
    return _REPLY_PREFIX.sub("", match.group(1).strip()) if match else ""


def text_neighbour_space(texts: Sequence[str], subject_weight: float = 0.0) -> sp.csr_matrix:
    """float32 CSR (n, words + subject words): where text neighbours are found. Each text's BM25 row over the full
    vocabulary (:func:`full_vocabulary_bm25`) scaled to unit length, beside ``subject_weight`` times the unit-length
    TF-IDF row of its subject line (:func:`subject_line`), so cosine similarity is the body's plus the weighted
    subject's. A subject names a thread's topic in a few chosen words, and replies repeat it; this is the title
    field of BM25F. Texts without a subject get a zero subject row; with none at all the space is the body alone.
    On 20 Newsgroups the share of an item's 10 neighbours with its label: 0.698 (body) -> 0.748 (weight 0.5;
    0.3: 0.735, 0.7: 0.728)."""
    if subject_weight < 0:
        raise ValueError("subject_weight must be >= 0")
    texts = list(texts)
    body = unit_rows(full_vocabulary_bm25(texts))
    if not subject_weight:
        return body
    try:
        subjects = TfidfVectorizer(stop_words="english", sublinear_tf=True, dtype=np.float32).fit_transform(
            [subject_line(t) for t in texts]
        )
    except ValueError:  # no text has a subject with a word in it
        return body
    return sp.hstack([body, subject_weight * unit_rows(subjects)], format="csr", dtype=np.float32)


def with_lsa(space: sp.csr_matrix, x: Features, dims: int, *, weight: float, seed: int = 0) -> sp.csr_matrix:
    """``space`` (n, d') beside each row's projection on the top ``dims`` LSA axes of ``x`` (truncated SVD of the
    TF-IDF input; fewer axes when n or x's width allows fewer), scaled to length ``weight``, so that cosine
    similarity mixes the two spaces'. LSA counts words that co-occur as shared; BM25 counts only the words two
    texts share. On short or small corpora, where two texts on one topic rarely share their rare words, the mix
    finds much purer neighbours. Share of an item's 10 neighbours with its label, BM25 (with subjects) -> weight
    0.5 / 1: Reuters-8 0.851 -> 0.918 / 0.937, TREC 0.592 -> 0.792 / 0.863, WebKB 0.668 -> 0.720 / 0.746, 1,000 20
    Newsgroups posts 0.454 -> 0.498 / 0.483, all 11,314 0.748 -> 0.765 / 0.738 (``TrainConfig.lsa_weight``)."""
    from sklearn.decomposition import TruncatedSVD

    dims = min(dims, x.shape[0] - 1, x.shape[1] - 1)
    if dims < 1 or weight <= 0:
        return space
    t0 = time.perf_counter()
    lsa = TruncatedSVD(dims, random_state=seed).fit_transform(x)
    LOG.info("%d LSA dimensions of %d texts in %.1fs", dims, x.shape[0], time.perf_counter() - t0)
    lsa_rows = sp.csr_matrix(weight * np.asarray(unit_rows(lsa), np.float32))
    return sp.hstack([space, lsa_rows], format="csr", dtype=np.float32)


def neighbour_targets(x: Features, neighbours: np.ndarray, sim_power: float = 0.0) -> Features:
    """(n, d): the weighted mean of each row and its neighbours (n, k), same sparsity kind as ``x``.

    ``sim_power`` 0 weighs the row and its neighbours alike, 1 / (k + 1) each. Above 0 the row weighs 1 and each
    neighbour its cosine similarity to the row (clipped at 0) to that power, normalised to sum to 1: close
    neighbours count more than far ones, and a row whose neighbours are all far keeps more of its own words.
    """
    if sim_power < 0:
        raise ValueError("sim_power must be >= 0")
    n = x.shape[0]
    idx = np.concatenate([np.arange(n)[:, None], neighbours], axis=1)  # (n, k + 1) self first
    if not sim_power:
        weights = np.full(idx.shape, 1.0 / idx.shape[1])
    else:
        sims = pair_cosines(x, np.repeat(np.arange(n), neighbours.shape[1]), neighbours.ravel())
        weights = np.concatenate([np.ones((n, 1)), np.maximum(sims, 0.0).reshape(neighbours.shape) ** sim_power], 1)
        weights /= weights.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(n), idx.shape[1])
    mean = sp.csr_matrix((weights.ravel().astype(np.float32), (rows, idx.ravel())), shape=(n, n))
    targets = mean @ x  # (n, d)
    return sp.csr_matrix(targets, dtype=np.float32) if sp.issparse(x) else np.asarray(targets, np.float32)


def pair_cosines(x: Features, a: np.ndarray, b: np.ndarray, block_size: int = 65536) -> np.ndarray:
    """float (m,): cosine similarity of rows a[i] and b[i] of ``x``, ``block_size`` pairs at a time (the rows of a
    block are copied: 60,000 items x 30 neighbours of 4k dense features at once would take 29 GB)."""
    unit = unit_rows(x)
    out = []
    for start in range(0, len(a), block_size):
        ia, ib = a[start : start + block_size], b[start : start + block_size]
        if sp.issparse(unit):
            out.append(np.asarray(unit[ia].multiply(unit[ib]).sum(axis=1)).ravel())
        else:
            out.append(np.einsum("ij,ij->i", unit[ia], unit[ib]))
    return np.concatenate(out) if out else np.zeros(0)


def mutual_neighbours(neighbours: np.ndarray) -> np.ndarray:
    """int64 (n, k): each row's mutual neighbours (j lists i and i lists j), repeated cyclically to fill k columns,
    so a uniformly drawn column is (nearly) a uniformly drawn mutual neighbour. Rows without any keep their own k."""
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    graph = sp.csr_matrix((np.ones(n * k), (rows, neighbours.ravel())), shape=(n, n))
    mutual = graph.multiply(graph.T).tocsr()
    counts = np.diff(mutual.indptr)
    out = neighbours.astype(np.int64, copy=True)
    has = counts > 0
    cols = np.arange(k)[None, :] % counts[has][:, None]  # (m, k) cyclic position in each row's mutual list
    out[has] = mutual.indices[mutual.indptr[:-1][has][:, None] + cols]
    return out
