"""Seeded synthetic codes and the exact references the benchmarks measure recall against.

Structured codes: random centres, each item a centre with every bit flipped with probability ``flip`` (so that
near neighbours exist, as with learned codes); ids ``doc-%08d``, the row number in the database.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

K = 10
BLOCK = 100_000  # rows drawn at a time: the float32 flip mask of a block is n_bits x 400 kB


def structured_codes(rng: np.random.Generator, centres: np.ndarray, n: int, flip: float = 0.1) -> np.ndarray:
    """uint8 (n, n_bytes): a random centre per item with each bit flipped with probability ``flip``."""
    n_bits = centres.shape[1] * 8
    out = np.empty((n, centres.shape[1]), np.uint8)
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        flips = np.packbits(rng.random((m, n_bits), dtype=np.float32) < flip, axis=1)  # (m, n_bytes)
        out[start : start + m] = centres[rng.integers(0, len(centres), m)] ^ flips
    return out


def seeded_centres(seed: int, n_bits: int, n: int = 1_000) -> tuple[np.random.Generator, np.ndarray]:
    """(the generator seeded by (seed, n_bits), uint8 (n, n_bits // 8) centres drawn from it)."""
    rng = np.random.default_rng([seed, n_bits])
    return rng, rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8)


def make_codes(
    seed: int, n_bits: int, items: int, queries: int, centres: int = 1_000, flip: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(database uint8 (items, n_bytes), queries uint8 (queries, n_bytes)) from the same centres, seeded."""
    rng, c = seeded_centres(seed, n_bits, centres)
    return structured_codes(rng, c, items, flip), structured_codes(rng, c, queries, flip)


def item_id(i: int) -> str:
    return f"doc-{i:08d}"


def item_ids(n: int) -> list[str]:
    return [item_id(i) for i in range(n)]


def hits_to_rows(results: list[list[Any]], k: int = K) -> np.ndarray:
    """int64 (q, k) database rows from ``Collection.search`` hits (ids ``doc-%08d``), -1 padded."""
    out = np.full((len(results), k), -1, np.int64)
    for i, hits in enumerate(results):
        for j, hit in enumerate(hits[:k]):
            out[i, j] = int(hit.id[4:])
    return out


def exact_kth(db: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """int (q,): the exact k-th smallest Hamming distance from each query to ``db``."""
    flat = faiss.IndexBinaryFlat(db.shape[1] * 8)
    flat.add(db)
    distances, _ = flat.search(queries, k)
    return distances[:, k - 1].astype(np.int64)


def recall_at_k(queries: np.ndarray, db: np.ndarray, labels: np.ndarray, kth: np.ndarray) -> float:
    """Fraction of the q*k result slots holding an item no farther than the exact k-th neighbour (ties count).

    ``labels`` int (q, k) are row numbers of ``db``, -1 for an empty slot; distances are recomputed here.
    """
    rows = np.clip(labels, 0, None)
    distances = np.bitwise_count(queries[:, None, :] ^ db[rows]).sum(-1, dtype=np.int64)  # (q, k)
    good = (labels >= 0) & (distances <= kth[:, None])
    return float(good.sum() / labels.size)
