"""Retrieval metrics for Hamming ranking over packed binary codes.

The protocol is the one of the semantic-hashing literature (Salakhutdinov & Hinton 2009, "Semantic
hashing"; VDSH, Chaidaroon & Fang 2017; NASH, Shen et al. 2018): database codes are ranked by Hamming
distance to each query code, and a database item is relevant when it shares the query's label. Short codes
produce many ties, so two precisions are offered: the plain one, which breaks ties by one fixed-seed random
permutation of the database (the same for all queries, so runs are reproducible), and the tie-aware expected
precision under a uniformly random tie order (McSherry & Najork 2008, "Computing information retrieval
performance measures efficiently in the presence of tied scores"). Mean average precision follows Gong &
Lazebnik 2011 (ITQ) and the deep-hashing papers.

Codes are ``uint8 (n, n_bits // 8)`` in the bit order of :mod:`models.bits`; Hamming distance does not depend
on that order. Queries are processed in blocks of ``block_size`` so memory stays ``O(block_size * n_db)``.
Every metric returns a Python float in ``[0, 1]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from hamdex.models.health import code_health  # noqa: F401  (re-exported: evaluation.code_health)
from sklearn.preprocessing import normalize

LOG = logging.getLogger(__name__)

BLOCK_SIZE = 256
_WORD_DTYPES = (np.dtype(np.uint64), np.dtype(np.uint32), np.dtype(np.uint16), np.dtype(np.uint8))


class DistanceHistograms(NamedTuple):
    """Normalised Hamming-distance histograms, each float64 (n_bits + 1,) summing to 1 (or all 0 if empty)."""

    relevant: np.ndarray
    irrelevant: np.ndarray


# ----------------------------------------------------------------------------------------------------
# Shared pieces: validation, label encoding, Hamming distances, the fixed tie-breaking order.
# ----------------------------------------------------------------------------------------------------


def _check_codes(q_codes: np.ndarray, db_codes: np.ndarray) -> None:
    for name, codes in (("query", q_codes), ("database", db_codes)):
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2:
            raise ValueError(f"{name} codes must be uint8 (n, n_bits // 8), got {_describe(codes)}")
    if q_codes.shape[1] != db_codes.shape[1]:
        raise ValueError(f"query codes have {q_codes.shape[1]} bytes, database codes {db_codes.shape[1]}")
    if len(q_codes) == 0 or len(db_codes) == 0:
        raise ValueError(f"need at least one query and database item, got {len(q_codes)}, {len(db_codes)}")


def _describe(a: object) -> str:
    return f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


def _encode_labels(q_labels: np.ndarray, db_labels: np.ndarray, n_q: int, n_db: int) -> tuple[np.ndarray, np.ndarray]:
    """Any comparable labels -> int64 ids, so that relevance is an integer comparison."""
    q_labels, db_labels = np.asarray(q_labels), np.asarray(db_labels)
    if q_labels.shape != (n_q,) or db_labels.shape != (n_db,):
        raise ValueError(
            f"labels must be 1-d and match the codes: got {q_labels.shape} for {n_q} queries, "
            f"{db_labels.shape} for {n_db} database items"
        )
    _, ids = np.unique(np.concatenate([q_labels, db_labels]), return_inverse=True)
    ids = ids.astype(np.int64)
    return ids[:n_q], ids[n_q:]


def _check_k(k: int, n_db: int) -> None:
    if not 1 <= k <= n_db:
        raise ValueError(f"k must be between 1 and the database size {n_db}, got {k}")


def _as_words(codes: np.ndarray) -> np.ndarray:
    """uint8 (n, B) -> (n, W) of the widest unsigned word dividing B; popcount per word is then cheaper."""
    n_bytes = codes.shape[1]
    dtype = next(dt for dt in _WORD_DTYPES if n_bytes % dt.itemsize == 0)
    return np.ascontiguousarray(codes).view(dtype)


def _hamming_words(q_words: np.ndarray, db_words: np.ndarray) -> np.ndarray:
    """(b, W) x (n, W) words -> int32 (b, n) Hamming distances, one (b, n) XOR per word."""
    dist = np.zeros((len(q_words), len(db_words)), dtype=np.int32)  # (b, n)
    for w in range(q_words.shape[1]):
        dist += np.bitwise_count(q_words[:, w, None] ^ db_words[None, :, w])
    return dist


def _blocks(n: int, block_size: int) -> Iterator[slice]:
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    for start in range(0, n, block_size):
        yield slice(start, min(start + block_size, n))


def _tie_order(n_db: int, seed: int) -> np.ndarray:
    """The fixed random permutation of the database that breaks Hamming ties (the same for every query)."""
    return np.random.default_rng(seed).permutation(n_db)


class _Ranked(NamedTuple):
    """One block of queries against the database in tie-breaking order."""

    q_ids: np.ndarray  # int64 (b,)
    db_ids: np.ndarray  # int64 (n,), permuted
    dist: np.ndarray  # int32 (b, n), columns in permuted order


def _ranked_blocks(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    seed: int | None,
    block_size: int,
) -> Iterator[_Ranked]:
    """Yield distances block by block, the database permuted by the tie order (``seed=None``: not permuted).

    In permuted order a *stable* sort by distance, or a sort by ``dist * n + column``, is exactly the ranking
    with ties broken by the fixed permutation.
    """
    _check_codes(q_codes, db_codes)
    q_ids, db_ids = _encode_labels(q_labels, db_labels, len(q_codes), len(db_codes))
    if seed is not None:
        order = _tie_order(len(db_codes), seed)
        db_codes, db_ids = db_codes[order], db_ids[order]
    q_words, db_words = _as_words(q_codes), _as_words(db_codes)
    for rows in _blocks(len(q_codes), block_size):
        yield _Ranked(q_ids[rows], db_ids, _hamming_words(q_words[rows], db_words))


def _rank_keys(dist: np.ndarray) -> np.ndarray:
    """int32 (b, n) distances in permuted order -> int64 (b, n) unique keys; smaller key = higher rank."""
    n = dist.shape[1]
    return dist.astype(np.int64) * n + np.arange(n, dtype=np.int64)


def _top_sorted(dist: np.ndarray, k: int) -> np.ndarray:
    """Column indices int64 (b, k) of the k best-ranked items per row, best first."""
    keys = _rank_keys(dist)
    top = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < keys.shape[1] else np.argsort(keys, axis=1)
    order = np.argsort(np.take_along_axis(keys, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def _mean(per_query: list[np.ndarray]) -> float:
    """Mean of per-query scores, summed once at the end so the result does not depend on the block size."""
    return float(np.concatenate(per_query).mean())


def _log_done(what: str, n_q: int, n_db: int, start: float) -> None:
    LOG.info("%s: %d queries x %d database items in %.2fs", what, n_q, n_db, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------
# Precision at k
# ----------------------------------------------------------------------------------------------------


def precision_at_k(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    k: int = 100,
    seed: int = 0,
    block_size: int = BLOCK_SIZE,
) -> float:
    """Mean over queries of (#relevant in the top k) / k, ranking by Hamming distance.

    Ties are broken by one random permutation of the database drawn from ``seed`` (the same for all queries).
    """
    _check_k(k, len(db_codes))
    start, total = time.perf_counter(), 0.0
    for blk in _ranked_blocks(q_codes, db_codes, q_labels, db_labels, seed, block_size):
        keys = _rank_keys(blk.dist)
        kth = np.partition(keys, k - 1, axis=1)[:, k - 1 : k]  # (b, 1)
        relevant = blk.q_ids[:, None] == blk.db_ids[None, :]  # (b, n)
        total += float(np.count_nonzero(relevant & (keys <= kth)))
    _log_done("precision@k", len(q_codes), len(db_codes), start)
    return total / (k * len(q_codes))


def precision_at_k_tie_aware(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    k: int = 100,
    block_size: int = BLOCK_SIZE,
) -> float:
    """Expected precision@k when the items tied at the k-th distance are taken in uniformly random order.

    Items strictly closer than the k-th smallest distance count fully; the group tied at that distance fills
    the remaining ``k - n_closer`` places and contributes ``(k - n_closer) * relevant_in_tie / tie_size``.
    """
    _check_k(k, len(db_codes))
    start, scores = time.perf_counter(), []
    for blk in _ranked_blocks(q_codes, db_codes, q_labels, db_labels, None, block_size):
        kth = np.partition(blk.dist, k - 1, axis=1)[:, k - 1 : k]  # (b, 1)
        relevant = blk.q_ids[:, None] == blk.db_ids[None, :]  # (b, n)
        closer, tied = blk.dist < kth, blk.dist == kth
        n_closer = np.count_nonzero(closer, axis=1)
        rel_closer = np.count_nonzero(relevant & closer, axis=1)
        tie_share = np.count_nonzero(relevant & tied, axis=1) / np.count_nonzero(tied, axis=1)
        scores.append((rel_closer + (k - n_closer) * tie_share) / k)
    _log_done("tie-aware precision@k", len(q_codes), len(db_codes), start)
    return _mean(scores)


def precision_at_ks(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    ks: Sequence[int] = (1, 10, 100, 1000),
    seed: int = 0,
    block_size: int = BLOCK_SIZE,
) -> dict[int, float]:
    """Precision at several k in one pass (for a precision-against-k plot); ties as in precision_at_k."""
    if not ks:
        raise ValueError("ks must name at least one k")
    for k in ks:
        _check_k(k, len(db_codes))
    start, max_k = time.perf_counter(), max(ks)
    totals = dict.fromkeys(ks, 0.0)
    for blk in _ranked_blocks(q_codes, db_codes, q_labels, db_labels, seed, block_size):
        top = _top_sorted(blk.dist, max_k)  # (b, max_k)
        hits = np.cumsum(blk.db_ids[top] == blk.q_ids[:, None], axis=1)  # (b, max_k)
        for k in ks:
            totals[k] += float(hits[:, k - 1].sum())
    _log_done("precision@ks", len(q_codes), len(db_codes), start)
    return {int(k): totals[k] / (k * len(q_codes)) for k in ks}


# ----------------------------------------------------------------------------------------------------
# Mean average precision and radius precision
# ----------------------------------------------------------------------------------------------------


def mean_average_precision(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    seed: int = 0,
    top: int | None = None,
    block_size: int = BLOCK_SIZE,
) -> float:
    """Mean over queries of average precision of the Hamming ranking (ties broken as in precision_at_k).

    ``AP = sum over relevant ranks r of precision@r, divided by R``. With ``top=None`` the whole ranking is
    used and R is the query's number of relevant database items. With ``top`` set (mAP@top) only the first
    ``top`` ranks count and R is the number of relevant items *retrieved* in them, the convention of the
    deep-hashing code bases (e.g. HashNet's mAP@5000). A query with R = 0 contributes 0 to the mean (it is not
    skipped).
    """
    n_db = len(db_codes)
    if top is not None:
        _check_k(top, n_db)
    start, scores = time.perf_counter(), []
    for blk in _ranked_blocks(q_codes, db_codes, q_labels, db_labels, seed, block_size):
        order = _ranking(blk.dist) if top is None else _top_sorted(blk.dist, top)  # (b, m)
        relevant = blk.db_ids[order] == blk.q_ids[:, None]  # (b, m)
        hits = np.cumsum(relevant, axis=1)  # (b, m)
        ranks = np.arange(1, order.shape[1] + 1)
        sum_prec = np.where(relevant, hits / ranks, 0.0).sum(axis=1)
        scores.append(sum_prec / np.maximum(hits[:, -1], 1))
    _log_done("mAP" if top is None else f"mAP@{top}", len(q_codes), n_db, start)
    return _mean(scores)


def _ranking(dist: np.ndarray) -> np.ndarray:
    """Full ranking (b, n) of permuted columns: a stable sort of small integers (NumPy uses radix sort)."""
    small = dist.astype(np.uint8 if dist.max(initial=0) < 256 else np.uint16)
    return np.argsort(small, axis=1, kind="stable")


def precision_within_radius(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    radius: int = 2,
    block_size: int = BLOCK_SIZE,
) -> float:
    """Mean over queries of the precision of the items within Hamming distance <= radius (hash lookup).

    A query with nothing within the radius scores 0, the convention of the hashing literature (e.g. Gong &
    Lazebnik 2011; Liong et al. 2015), so that very long codes that retrieve nothing are not rewarded.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    start, scores = time.perf_counter(), []
    for blk in _ranked_blocks(q_codes, db_codes, q_labels, db_labels, None, block_size):
        inside = blk.dist <= radius  # (b, n)
        n_inside = np.count_nonzero(inside, axis=1)
        n_rel = np.count_nonzero(inside & (blk.q_ids[:, None] == blk.db_ids[None, :]), axis=1)
        scores.append(n_rel / np.maximum(n_inside, 1))
    _log_done(f"precision within radius {radius}", len(q_codes), len(db_codes), start)
    return _mean(scores)


# ----------------------------------------------------------------------------------------------------
# The float reference: exact nearest neighbours on the input features
# ----------------------------------------------------------------------------------------------------


def float_precision_at_k(
    q_feats: np.ndarray | sp.spmatrix | sp.sparray,
    db_feats: np.ndarray | sp.spmatrix | sp.sparray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    k: int = 100,
    metric: str = "cosine",
    block_size: int = BLOCK_SIZE,
) -> float:
    """Precision@k of exact nearest neighbours on float features (dense arrays or scipy sparse CSR).

    ``metric`` is ``"cosine"`` (the reference for TF-IDF) or ``"euclidean"``. Queries are densified one block
    at a time and the database stays sparse, so memory is ``O(block_size * (d + n_db))``.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    n_db = db_feats.shape[0]
    _check_k(k, n_db)
    q_ids, db_ids = _encode_labels(q_labels, db_labels, q_feats.shape[0], n_db)
    if metric == "cosine":
        q_feats, db_feats = normalize(q_feats), normalize(db_feats)
        db_sq = np.zeros(n_db)
    else:
        squares = db_feats.multiply(db_feats) if sp.issparse(db_feats) else np.square(db_feats)
        db_sq = np.asarray(squares.sum(axis=1), dtype=np.float64)
    start, total = time.perf_counter(), 0.0
    for rows in _blocks(q_feats.shape[0], block_size):
        q = q_feats[rows]
        q = np.asarray(q.toarray() if sp.issparse(q) else q)  # (b, d)
        # Larger score = closer; the query's own norm does not change its ranking.
        score = 2.0 * np.asarray(db_feats @ q.T).T - db_sq.ravel()[None, :]  # (b, n)
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]  # (b, k)
        total += float(np.count_nonzero(db_ids[top] == q_ids[rows, None]))
    _log_done(f"float precision@k ({metric})", q_feats.shape[0], n_db, start)
    return total / (k * q_feats.shape[0])


# ----------------------------------------------------------------------------------------------------
# Diagnostics: distance histograms (code_health lives in models.health, which training uses too)
# ----------------------------------------------------------------------------------------------------


def hamming_distance_histograms(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    n_bits: int,
    max_pairs: int = 20_000_000,
    seed: int = 0,
    block_size: int = BLOCK_SIZE,
) -> DistanceHistograms:
    """Normalised histograms over distances 0..n_bits of relevant and of irrelevant query-database pairs.

    When ``n_q * n_db > max_pairs`` a seeded random subset of queries (at least one) is used, against the
    whole database.
    """
    _check_codes(q_codes, db_codes)
    if n_bits != q_codes.shape[1] * 8:
        raise ValueError(f"n_bits={n_bits} does not match codes of {q_codes.shape[1]} bytes")
    _encode_labels(q_labels, db_labels, len(q_codes), len(db_codes))  # validate before subsetting
    n_use = min(len(q_codes), max(1, max_pairs // len(db_codes)))
    pick = np.sort(np.random.default_rng(seed).choice(len(q_codes), n_use, replace=False))
    q_codes, q_labels = q_codes[pick], np.asarray(q_labels)[pick]
    rel, irrel = np.zeros(n_bits + 1), np.zeros(n_bits + 1)
    for blk in _ranked_blocks(q_codes, db_codes, q_labels, db_labels, None, block_size):
        relevant = blk.q_ids[:, None] == blk.db_ids[None, :]  # (b, n)
        rel += np.bincount(blk.dist[relevant], minlength=n_bits + 1)
        irrel += np.bincount(blk.dist[~relevant], minlength=n_bits + 1)
    return DistanceHistograms(rel / max(rel.sum(), 1.0), irrel / max(irrel.sum(), 1.0))
