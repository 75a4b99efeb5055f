"""Exact Hamming top-k over codes that do not sit in the FAISS index as a set: the rows a metadata filter selects,
read from the store block by block, or gathered from the index's own memory (:func:`index_codes`, :func:`gather`).
Distances are popcounts of XOR (as FAISS's binary flat index computes them); hits are ordered by (distance, id),
so among items tied at the k-th distance the smallest ids are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
from hamdex.index.deadline import Deadline, check

BLOCK_ENTRIES = 1 << 20  # query x row distances computed at once (4 MiB of int32)
_FAR = np.iinfo(np.int32).max  # a distance that is never kept (beyond the radius)
_WORDS = {8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}


def hamming(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Distances int32 (q, m) between uint8 (q, n_bytes) queries and uint8 (m, n_bytes) codes."""
    width = next(w for w in _WORDS if queries.shape[1] % w == 0)  # XOR whole words, not bytes
    a = np.ascontiguousarray(queries).view(_WORDS[width])  # (q, words)
    b = np.ascontiguousarray(codes).view(_WORDS[width])  # (m, words)
    out = np.zeros((len(a), len(b)), np.int32)
    for j in range(a.shape[1]):  # a word at a time: no (q, m, words) temporary
        out += np.bitwise_count(a[:, j, None] ^ b[None, :, j])
    return out


def index_codes(index: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(internal ids int64 (n,), codes uint8 (n, n_bytes)): views, not copies, of what an ``IndexBinaryIDMap``
    over a flat storage (``IndexBinaryFlat``, or ``IndexBinaryHNSW`` whose storage is one) holds, tombstones
    included; None for other indexes (IVF lists, hash tables). Valid until the index next changes: read them
    under the collection's read lock. Ids are in insertion order (ascending, as internal ids are handed out)."""
    if not isinstance(index, faiss.IndexBinaryIDMap):
        return None
    storage = faiss.downcast_IndexBinary(index.index)
    if isinstance(storage, faiss.IndexBinaryHNSW):
        storage = faiss.downcast_IndexBinary(storage.storage)
    if not isinstance(storage, faiss.IndexBinaryFlat) or storage.ntotal != index.id_map.size():
        return None
    n, width = int(storage.ntotal), int(storage.code_size)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, width), np.uint8)
    ids = faiss.rev_swig_ptr(index.id_map.data(), n)
    codes = faiss.rev_swig_ptr(storage.xb.data(), n * width).reshape(n, width)
    return ids, codes


def gather(ids: np.ndarray, codes: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 (m, n_bytes) of ``wanted``, bool (m,) found): a row of ``wanted`` not in ``ids`` is zeros,
    not found. ``ids`` should be ascending (a binary search, or an offset where they have no gaps); each answer is
    checked, so misordered ``ids`` only cost misses."""
    if not len(ids):
        return np.zeros((len(wanted), codes.shape[1]), np.uint8), np.zeros(len(wanted), bool)
    if ids[-1] - ids[0] == len(ids) - 1:  # no gaps (nothing removed since a rebuild): the place is the offset
        at = np.clip(wanted - ids[0], 0, len(ids) - 1)
    else:
        at = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    found = ids[at] == wanted
    width = codes.shape[1]
    out = codes.view(f"V{width}")[:, 0][at].view(np.uint8).reshape(len(at), width)  # a row as one item: a copy
    out[~found] = 0
    return out, found


class TopK:
    """The ``k`` nearest rows to each query by (distance, id), over rows given in any number of :meth:`add` calls;
    rows farther than ``radius`` are never kept. Memory stays about ``k`` rows per query (plus ties).

    ``ties=True``: every row tied with a query's k-th distance is kept and returned, for a caller that orders
    ties by something else than the ids given (internal ids given, external ids known only for the few kept)."""

    def __init__(
        self,
        queries: np.ndarray,
        k: int,
        radius: int | None = None,
        deadline: Deadline | None = None,
        ties: bool = False,
    ):
        self.queries, self.k, self.radius, self.deadline, self.ties = queries, k, radius, deadline, ties
        self._smallest = np.zeros((len(queries), 0), np.int32)  # up to k smallest distances seen, per query
        self._kept: list[list[tuple[int, str, Any]]] = [[] for _ in range(len(queries))]  # (distance, id, payload)

    def add(self, codes: np.ndarray, ids: Sequence[str], payloads: Sequence[Any]) -> None:
        """Offer rows: uint8 (m, n_bytes) codes, their ids, and what to return with each (e.g. metadata text)."""
        if not len(ids):
            return
        rows = max(1, min(len(ids), BLOCK_ENTRIES // max(1, len(self.queries))))
        block = max(1, BLOCK_ENTRIES // rows)
        for lo in range(0, len(ids), rows):
            chunk = codes[lo : lo + rows], ids[lo : lo + rows], payloads[lo : lo + rows]
            parts = []
            for q0 in range(0, len(self.queries), block):
                check(self.deadline)
                parts.append(self._add_block(q0, q0 + block, *chunk))
            self._smallest = np.concatenate(parts)

    def _add_block(
        self, q0: int, q1: int, codes: np.ndarray, ids: Sequence[str], payloads: Sequence[Any]
    ) -> np.ndarray:
        """Keep the block of queries' candidates among these rows; returns the block's new smallest distances."""
        distances = hamming(self.queries[q0:q1], codes)  # (b, m)
        if self.radius is not None:
            distances[distances > self.radius] = _FAR
        both = np.concatenate([self._smallest[q0:q1], distances], axis=1)
        n = min(self.k, both.shape[1])
        smallest = np.partition(both, n - 1, axis=1)[:, :n]
        # the k-th smallest distance so far bounds what can still be in the answer (all rows while fewer than k)
        kth = smallest[:, -1] if n == self.k else np.full(len(smallest), _FAR - 1)
        qi, j = np.nonzero((distances <= kth[:, None]) & (distances < _FAR))
        for q, row, d in zip((qi + q0).tolist(), j.tolist(), distances[qi, j].tolist(), strict=True):
            self._kept[q].append((d, ids[row], payloads[row]))
        for q in range(q0, min(q1, len(self.queries))):
            if len(self._kept[q]) > 2 * self.k:  # ties pile up: keep the first k by (distance, id), exactly
                self._kept[q] = self._first(self._kept[q])
        return smallest

    def _first(self, kept: list[tuple[int, Any, Any]]) -> list[tuple[int, Any, Any]]:
        """The first k of ``kept`` by (distance, id), and with ``ties`` every row at the k-th distance too."""
        kept = sorted(kept)
        if not self.ties or len(kept) <= self.k:
            return kept[: self.k]
        kth = kept[self.k - 1][0]
        return [row for row in kept if row[0] <= kth]

    def result(self) -> list[list[tuple[int, str, Any]]]:
        """Per query, up to k (distance, id, payload), sorted by (distance, id); with ``ties``, also every row tied
        with the k-th."""
        return [self._first(kept) for kept in self._kept]
