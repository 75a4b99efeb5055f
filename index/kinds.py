"""The FAISS index behind a collection, one class per kind, all with the same small interface.

Every kind maps int64 internal ids to codes and answers top-k and (where FAISS can) radius queries. What differs:

| kind        | FAISS index                          | exact | radius | delete                    | per-query params |
|-------------|--------------------------------------|-------|--------|---------------------------|------------------|
| `flat`      | IndexBinaryFlat                      | yes   | yes    | removed from the index    | -                |
| `ivf`       | IndexBinaryIVF, trained on the data  | no    | yes    | removed from the index    | nprobe           |
| `hnsw`      | IndexBinaryHNSW                      | no    | no     | tombstone, skipped in     | ef_search        |
|             |                                      |       |        | the graph walk (IDSelector)|                 |
| `hash`      | IndexBinaryHash (b-bit hash table)   | no    | yes    | tombstone, filtered       | -                |
| `multihash` | IndexBinaryMultiHash (nhash tables)  | no    | yes    | tombstone, filtered       | -                |
| `nested`    | IndexBinaryFlat + prefix buckets     | no    | yes    | removed from the index    | candidates       |

Per-query parameters never touch shared index state: nprobe and efSearch go in FAISS ``SearchParameters`` for
top-k search. FAISS's binary IVF range search takes no parameters, so radius queries on ``ivf`` with a non-default
nprobe run one at a time under a lock that sets and restores it.

Tombstones (kinds FAISS cannot remove from) are part of the snapshot; :meth:`HammingIndex.wants_rebuild` says
when enough have piled up that the collection should rebuild the index from its live codes (it does so in the
background, :meth:`index.collection.Collection.rebuild`).

Parameters are bounded by ``PARAM_BOUNDS``, found by building, searching and serialising each kind at its edges
for 8- to 256-bit codes in a subprocess (FAISS 1.15): hnsw ``m=1`` segfaults on the first add; an ``ef_search``
of 2^31 allocates 16 GB per query. A hash ``b`` above the code length, or a multihash ``nhash * b`` above it, is
cut to fit (FAISS refuses them); a multihash ``nhash`` above the code length cannot fit and is refused. A nested
``prefix_bits`` of the code length or more is cut to half the code (so the default, 32, works on short codes).

``nested`` is for codes whose prefixes are coarse versions of the whole (docs/nested.md): the items are grouped
by their first ``prefix_bits`` bits, a query ranks the distinct prefixes by Hamming distance to its own, takes the
items of the nearest groups until it has ``candidates`` of them, and ranks those by the full code (exact when
``candidates`` >= the items). Its radius search is the flat index's (exact).

All radii here are inclusive (``d <= radius``); FAISS's binary range search is strict (``d < radius``).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, NamedTuple

import faiss
import numpy as np
from hamdex.index.errors import InvalidIndexParamsError, InvalidManifestError, InvalidQueryError
from hamdex.index.scan import BLOCK_ENTRIES, hamming

REBUILD_FRACTION = 0.1  # rebuild a tombstoned index when this fraction of its entries are dead
WAIT_FRACTION = 0.5  # past this dead fraction, writes wait for the rebuild in flight (churn outpacing rebuilds)
# (min, max) of each build or query parameter: below the min FAISS crashes (hnsw m=1) or means nothing; above the
# max memory or per-query work has no useful bound (see the module docstring).
PARAM_BOUNDS: dict[str, tuple[int, int]] = {
    "m": (2, 256),
    "ef_construction": (1, 4096),
    "ef_search": (1, 1 << 16),
    "nlist": (1, 1 << 20),
    "nprobe": (1, 1 << 16),
    "train_size_per_list": (1, 1 << 16),
    "b": (1, 32),
    "nflip": (0, 3),  # 0: the query's own bucket only
    "nhash": (1, 64),
    "prefix_bits": (8, 256),  # a multiple of 8 (NestedIndex)
    "candidates": (1, 1 << 16),
}


class HammingIndex:
    """Base: an ``IndexBinaryIDMap`` over a storage index, plus tombstones for kinds that cannot remove."""

    kind: ClassVar[str]
    defaults: ClassVar[dict[str, int]] = {}  # build and query parameters with their defaults
    query_params: ClassVar[frozenset[str]] = frozenset()
    supports_range: ClassVar[bool] = True
    removes: ClassVar[bool] = True  # False: deletes become tombstones

    def __init__(self, n_bits: int, params: dict[str, int] | None = None) -> None:
        self.n_bits = n_bits
        self.params = self.check_params(params or {})
        try:
            self.index = self._build()
        except RuntimeError as exc:  # a FAISS check the bounds above missed: a typed error, not a 500
            message = f"FAISS cannot build {self.kind} {self.params} for {n_bits} bits: {exc}"
            raise InvalidIndexParamsError(message) from exc
        self.tombstones: set[int] = set()
        self._selector: Any = None  # cached IDSelector excluding the tombstones
        self._dead: np.ndarray | None = None  # cached sorted tombstones

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, int]:
        unknown = set(params) - set(cls.defaults)
        if unknown:
            allowed = ", ".join(sorted(cls.defaults)) or "none"
            raise InvalidIndexParamsError(f"index kind {cls.kind!r} takes parameters {allowed}; got {sorted(unknown)}")
        merged = {**cls.defaults, **params}
        for key, value in merged.items():
            low, top = PARAM_BOUNDS[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= top:
                raise InvalidIndexParamsError(f"index parameter {key} must be an int in [{low}, {top}], got {value!r}")
        return merged

    @classmethod
    def check_fits(cls, n_bits: int, params: dict[str, int]) -> None:
        """Parameters that depend on the code length (checked when a collection is created)."""

    def _build(self) -> faiss.IndexBinary:
        return faiss.IndexBinaryIDMap(self._storage())

    def _storage(self) -> faiss.IndexBinary:
        raise NotImplementedError

    # ---- size -------------------------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Entries in the FAISS index, tombstones included."""
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    def wants_rebuild(self) -> bool:
        return bool(self.tombstones) and len(self.tombstones) >= REBUILD_FRACTION * max(self.ntotal, 1)

    def mostly_dead(self) -> bool:
        """Tombstones past WAIT_FRACTION of the entries: searches lose recall and time (see HNSWIndex.search)."""
        return len(self.tombstones) > WAIT_FRACTION * max(self.ntotal, 1)

    # ---- mutation ---------------------------------------------------------------------------------------------

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(codes, ids)

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self.removes:
            self.index.remove_ids(ids)
        else:
            self.tombstones.update(ids.tolist())
            self._selector = self._dead = None

    # ---- search -----------------------------------------------------------------------------------------------

    def check_query_params(self, params: dict[str, Any] | None) -> dict[str, int]:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        unknown = set(params) - self.query_params
        if unknown:
            allowed = ", ".join(sorted(self.query_params)) or "none"
            raise InvalidQueryError(f"index kind {self.kind!r} takes query parameters {allowed}; got {sorted(unknown)}")
        for key, value in params.items():
            low, top = PARAM_BOUNDS[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= top:
                raise InvalidQueryError(f"{key} must be an int in [{low}, {top}], got {value!r}")
        return params

    def search(self, codes: np.ndarray, k: int, params: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """(distances int32 (q, k'), internal ids int64 (q, k')); -1 marks an empty slot; k' <= k."""
        k = min(k, self.live)
        if k <= 0:
            return np.zeros((len(codes), 0), np.int32), np.zeros((len(codes), 0), np.int64)
        if not self.tombstones:
            return self._search(codes, k, params)
        # over-fetch past the tombstones: a little at first, 4x more while some query is short of k live hits
        # and its result was not already cut short by the index (a -1 slot: nothing more to find)
        dead = self._dead_array()
        fetch = min(k + min(len(dead), max(k, 16)), self.ntotal)
        while True:
            distances, labels = self._search(codes, fetch, params)
            is_dead = np.isin(labels, dead)
            live = (labels >= 0) & ~is_dead
            short = (live.sum(axis=1) < k) & (labels[:, -1] >= 0)
            if fetch >= self.ntotal or not short.any():
                return self._compact(distances, np.where(is_dead, -1, labels), k)
            fetch = min(fetch * 4, self.ntotal)

    def _search(self, codes: np.ndarray, k: int, params: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(codes, k)

    def _dead_array(self) -> np.ndarray:
        if self._dead is None:
            self._dead = np.fromiter(sorted(self.tombstones), np.int64, len(self.tombstones))
        return self._dead

    @staticmethod
    def _compact(distances: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Move the -1 slots of each row to its end, keeping FAISS's order of the rest; first k columns."""
        order = np.argsort(labels < 0, axis=1, kind="stable")
        return np.take_along_axis(distances, order, 1)[:, :k], np.take_along_axis(labels, order, 1)[:, :k]

    def range_search(
        self, codes: np.ndarray, radius: int, params: dict[str, int]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query (distances, internal ids) of entries within ``radius`` (inclusive)."""
        if not self.supports_range:
            raise InvalidQueryError(f"index kind {self.kind!r} does not support radius search; use k alone")
        # no distance exceeds n_bits; the clamp keeps a huge radius from overflowing FAISS's int
        lims, distances, labels = self._range(codes, min(int(radius), self.n_bits) + 1, params)
        if self.tombstones:
            keep = ~np.isin(labels, self._dead_array())
            lims = np.concatenate([[0], np.cumsum(keep)])[lims.astype(np.int64)]  # live entries before each bound
            distances, labels = distances[keep], labels[keep]
        bounds = lims.tolist()
        return [(distances[lo:hi], labels[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def _range(self, codes: np.ndarray, faiss_radius: int, params: dict[str, int]):
        return self.index.range_search(codes, faiss_radius)

    # ---- persistence ------------------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "index": faiss.serialize_index_binary(self.index),
            "tombstones": np.fromiter(sorted(self.tombstones), np.int64, len(self.tombstones)),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        index = faiss.deserialize_index_binary(np.asarray(arrays["index"], np.uint8))
        if index.d != self.n_bits:
            raise ValueError(f"snapshot index has {index.d} bits, the collection {self.n_bits}")
        self.index = index
        self.tombstones = set(np.asarray(arrays["tombstones"], np.int64).tolist())
        self._selector = self._dead = None

    def memory_bytes(self) -> int:
        """Bytes the serialized index takes: about what it holds in RAM."""
        writer = faiss.VectorIOWriter()
        faiss.write_index_binary(self.index, writer)
        return writer.data.size()


class FlatIndex(HammingIndex):
    kind = "flat"

    def _storage(self) -> faiss.IndexBinary:
        return faiss.IndexBinaryFlat(self.n_bits)


class IVFIndex(HammingIndex):
    """Inverted lists over a flat coarse quantizer, trained on the collection's own codes.

    Until the collection holds ``train_size_per_list * nlist`` codes the index is a flat one (exact); the add that
    crosses that size trains the quantizer on every code so far and moves them into the lists.
    """

    kind = "ivf"
    defaults: ClassVar[dict[str, int]] = {"nlist": 256, "nprobe": 8, "train_size_per_list": 39}
    query_params = frozenset({"nprobe"})

    def __init__(self, n_bits: int, params: dict[str, int] | None = None) -> None:
        super().__init__(n_bits, params)
        self._range_lock = threading.Lock()

    def _storage(self) -> faiss.IndexBinary:
        return faiss.IndexBinaryFlat(self.n_bits)

    @property
    def trained(self) -> bool:
        return isinstance(self.index, faiss.IndexBinaryIVF)

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        super().add(codes, ids)
        if not self.trained and self.ntotal >= self.params["nlist"] * self.params["train_size_per_list"]:
            self._train()

    def _train(self) -> None:
        flat = faiss.downcast_IndexBinary(self.index.index)
        all_codes = faiss.vector_to_array(flat.xb).reshape(-1, self.n_bits // 8)
        all_ids = faiss.vector_to_array(self.index.id_map)
        self._quantizer = faiss.IndexBinaryFlat(self.n_bits)  # FAISS does not own it: keep it alive
        ivf = faiss.IndexBinaryIVF(self._quantizer, self.n_bits, self.params["nlist"])
        ivf.nprobe = self.params["nprobe"]
        ivf.train(all_codes)
        ivf.add_with_ids(all_codes, all_ids)
        self.index = ivf  # an IVF index stores ids itself: no id map needed

    def _search(self, codes, k, params):
        if not self.trained:
            return self.index.search(codes, k)
        nprobe = params.get("nprobe", self.params["nprobe"])
        return self.index.search(codes, k, params=faiss.SearchParametersIVF(nprobe=nprobe))

    def _range(self, codes, faiss_radius, params):
        if not self.trained:
            return self.index.range_search(codes, faiss_radius)
        nprobe = params.get("nprobe", self.params["nprobe"])
        with self._range_lock:  # FAISS's binary IVF range search reads nprobe from the index: one at a time
            ivf = self.index
            try:
                ivf.nprobe = nprobe
                return ivf.range_search(codes, faiss_radius)
            finally:
                ivf.nprobe = self.params["nprobe"]


class HNSWIndex(HammingIndex):
    """A navigable small-world graph; deleted entries stay in the graph as tombstones the search skips."""

    kind = "hnsw"
    defaults: ClassVar[dict[str, int]] = {"m": 16, "ef_construction": 40, "ef_search": 64}
    query_params = frozenset({"ef_search"})
    supports_range = False
    removes = False

    def _storage(self) -> faiss.IndexBinary:
        hnsw = faiss.IndexBinaryHNSW(self.n_bits, self.params["m"])
        hnsw.hnsw.efConstruction = self.params["ef_construction"]
        hnsw.hnsw.efSearch = self.params["ef_search"]
        return hnsw

    def search(self, codes, k, params):
        """The graph walk skips tombstones itself (IDSelector), but they still take places in its candidate list
        of ``ef`` entries, so fewer than k live ones can come back: ``ef`` is widened by the dead share, and 4x
        again for the queries still short of k, up to the whole index."""
        k = min(k, self.live)
        if k <= 0:
            return np.zeros((len(codes), 0), np.int32), np.zeros((len(codes), 0), np.int64)
        ef = max(params.get("ef_search", self.params["ef_search"]), k)
        ef = min(-(-ef * self.ntotal // self.live), self.ntotal)  # ceil(ef / live share)
        distances, labels = self._walk(codes, k, ef)
        short = np.flatnonzero(labels[:, -1] < 0)
        while short.size and ef < self.ntotal:
            ef = min(ef * 4, self.ntotal)
            distances[short], labels[short] = self._walk(codes[short], k, ef)
            short = short[labels[short, -1] < 0]
        return distances, labels

    def _walk(self, codes: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        sel = self._live_selector()
        return self.index.search(codes, k, params=faiss.SearchParametersHNSW(efSearch=ef, sel=sel))

    def _live_selector(self) -> Any:
        if not self.tombstones:
            return None
        if self._selector is None:
            dead = faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64, len(self.tombstones)))
            self._selector = (faiss.IDSelectorNot(dead), dead)  # keep the inner selector alive
        return self._selector[0]


class HashIndex(HammingIndex):
    """Classic semantic hashing: a hash table on the first ``b`` bits, probed within ``nflip`` flips."""

    kind = "hash"
    defaults: ClassVar[dict[str, int]] = {"b": 16, "nflip": 2}
    removes = False

    def _storage(self) -> faiss.IndexBinary:
        index = faiss.IndexBinaryHash(self.n_bits, min(self.params["b"], self.n_bits))
        index.nflip = self.params["nflip"]
        return index


class MultiHashIndex(HammingIndex):
    """``nhash`` hash tables on disjoint ``b``-bit slices of the code: a radius query probes each."""

    kind = "multihash"
    defaults: ClassVar[dict[str, int]] = {"nhash": 4, "b": 16, "nflip": 1}
    removes = False

    @classmethod
    def check_fits(cls, n_bits: int, params: dict[str, int]) -> None:
        if params["nhash"] > n_bits:  # each table hashes at least one bit of its own
            raise InvalidIndexParamsError(f"multihash needs nhash <= n_bits ({n_bits}), got {params['nhash']}")

    def _storage(self) -> faiss.IndexBinary:
        nhash, b = self.params["nhash"], self.params["b"]
        if nhash * b > self.n_bits:
            b = max(1, self.n_bits // nhash)
        index = faiss.IndexBinaryMultiHash(self.n_bits, nhash, b)
        index.nflip = self.params["nflip"]
        return index


class _Groups(NamedTuple):
    """The items grouped by prefix, a copy in group order (contiguous reads of a group's codes): group g is rows
    ``offsets[g]:offsets[g + 1]``, all with prefix ``prefixes[g]``."""

    prefixes: np.ndarray  # uint8 (groups, prefix_bytes), distinct, ascending
    offsets: np.ndarray  # int64 (groups + 1,)
    ids: np.ndarray  # int64 (n,): internal ids, grouped
    words: np.ndarray  # (n, words) of the widest unsigned int dividing n_bytes: full codes, grouped


class NestedIndex(HammingIndex):
    """Coarse-to-fine search over nested codes (docs/nested.md): candidates from the groups of items whose first
    ``prefix_bits`` bits are nearest the query's, re-ranked exactly by the full code.

    The codes live in a flat index (removal, persistence, filters and radius search as ``flat``); the groups are
    derived from it, a sorted copy of ids and codes (8 + n_bits / 8 bytes per item) rebuilt by the first search
    after a write (one sort: about a second per million items). That suits read-mostly collections; one written
    to between most searches is better served by ``flat``. The coarse step scans the distinct prefixes, not the
    items: the speed-up over flat is the items per distinct prefix, which a short enough prefix of structured codes
    makes large (uniform random codes have none to give).
    """

    kind = "nested"
    # 32 prefix bits: one member of an ensemble code (models/ensemble.py), half of the common 64-bit code
    defaults: ClassVar[dict[str, int]] = {"prefix_bits": 32, "candidates": 256}
    query_params = frozenset({"candidates"})

    def __init__(self, n_bits: int, params: dict[str, int] | None = None) -> None:
        super().__init__(n_bits, params)
        prefix = self.params["prefix_bits"]
        self.prefix_bits = prefix if prefix < n_bits else max(8, n_bits // 16 * 8)  # else half, in whole bytes
        self._grouped: _Groups | None = None
        self._group_lock = threading.Lock()  # searches share the collection's read lock: one builds the groups

    @classmethod
    def check_fits(cls, n_bits: int, params: dict[str, int]) -> None:
        if params["prefix_bits"] % 8:
            raise InvalidIndexParamsError(f"nested needs prefix_bits a multiple of 8, got {params['prefix_bits']}")

    def _storage(self) -> faiss.IndexBinary:
        return faiss.IndexBinaryFlat(self.n_bits)

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        super().add(codes, ids)
        self._grouped = None

    def remove(self, ids: np.ndarray) -> None:
        super().remove(ids)
        self._grouped = None

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        super().load_arrays(arrays)
        self._grouped = None

    def groups(self) -> _Groups:
        """The groups, built now if a write came since they last were."""
        with self._group_lock:
            if self._grouped is None:
                self._grouped = self._group()
            return self._grouped

    def _group(self) -> _Groups:
        n, width = int(self.index.ntotal), self.n_bits // 8
        if n == 0:
            words = np.zeros((0, width), np.uint8).view(_word(width))
            return _Groups(
                np.zeros((0, self.prefix_bits // 8), np.uint8), np.zeros(1, np.int64), np.zeros(0, np.int64), words
            )
        storage = faiss.downcast_IndexBinary(self.index.index)
        ids = faiss.rev_swig_ptr(self.index.id_map.data(), n)  # (n,) views of the flat index's memory
        codes = faiss.rev_swig_ptr(storage.xb.data(), n * width).reshape(n, width)  # (n, n_bytes)
        prefix = np.ascontiguousarray(codes[:, : self.prefix_bits // 8])  # (n, prefix_bytes)
        keys = prefix.view(f"V{prefix.shape[1]}")[:, 0]  # a prefix as one item: sorts as its bytes
        order = np.argsort(keys, kind="stable")  # (n,)
        ordered = keys[order]
        starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
        # whole words: gathering a candidate's 8 bytes as one uint64 is ~10x faster than as 8 uint8 (numpy 2.x)
        words = codes.view(_word(width))[order]  # (n, words)
        return _Groups(prefix[order[starts]], np.append(starts, n).astype(np.int64), ids[order], words)

    def _search(self, codes: np.ndarray, k: int, params: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        groups = self.groups()
        wanted = max(params.get("candidates", self.params["candidates"]), k)
        sizes = np.diff(groups.offsets)  # (groups,)
        distances = np.full((len(codes), k), -1, np.int32)
        labels = np.full((len(codes), k), -1, np.int64)
        block = max(1, BLOCK_ENTRIES // max(1, len(sizes)))  # queries whose prefix distances are computed at once
        for start in range(0, len(codes), block):
            coarse = hamming(codes[start : start + block, : self.prefix_bits // 8], groups.prefixes)  # (b, groups)
            for i, near in enumerate(coarse, start):
                rows = _nearest_groups(near, sizes, groups.offsets, wanted)  # (m,)
                query = np.ascontiguousarray(codes[i]).view(groups.words.dtype)  # (words,)
                full = np.bitwise_count(groups.words.take(rows, axis=0) ^ query).sum(axis=1, dtype=np.int32)  # (m,)
                found = groups.ids.take(rows)  # (m,)
                top = _first_k(full, found, k)
                distances[i, : len(top)], labels[i, : len(top)] = full[top], found[top]
        return distances, labels


def _word(n_bytes: int) -> type[np.unsignedinteger]:
    """The widest unsigned int whose size divides ``n_bytes``."""
    return next(t for t in (np.uint64, np.uint32, np.uint16, np.uint8) if n_bytes % np.dtype(t).itemsize == 0)


def _nearest_groups(near: np.ndarray, sizes: np.ndarray, offsets: np.ndarray, wanted: int) -> np.ndarray:
    """Rows of the groups nearest first (``near``: int32 (groups,) prefix distances; ties by group order), whole
    groups, until at least ``wanted`` items: every group nearer than the distance that completes ``wanted``, and
    of those at that distance the first ones needed (the order within the set does not matter: it is re-ranked)."""
    counts = np.bincount(near, weights=sizes, minlength=1)  # items at each prefix distance
    reach = int(np.searchsorted(np.cumsum(counts), wanted))  # the distance that completes ``wanted``
    inner = np.flatnonzero(near < reach)
    edge = np.flatnonzero(near == reach)
    needed = wanted - int(sizes[inner].sum())
    edge = edge[: int(np.searchsorted(np.cumsum(sizes[edge]), needed)) + 1]  # up to the group reaching ``wanted``
    chosen = np.concatenate([inner, edge])
    lengths = sizes[chosen]
    starts = np.repeat(offsets[chosen] - np.cumsum(lengths) + lengths, lengths)
    return starts + np.arange(int(lengths.sum()))


def _first_k(distances: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the first ``k`` by (distance, id): a partition to the k-th distance, then a sort of the few
    at most that far (a sort of every candidate costs more than the rest of the search)."""
    if len(distances) > k:
        kth = np.partition(distances, k - 1)[k - 1]
        near = np.flatnonzero(distances <= kth)
    else:
        near = np.arange(len(distances))
    return near[np.lexsort((ids[near], distances[near]))][:k]


KINDS: dict[str, type[HammingIndex]] = {
    cls.kind: cls for cls in (FlatIndex, IVFIndex, HNSWIndex, HashIndex, MultiHashIndex, NestedIndex)
}


def make_hamming_index(kind: str, n_bits: int, params: dict[str, Any] | None = None) -> HammingIndex:
    if kind not in KINDS:
        raise InvalidManifestError(f"index_kind must be one of {sorted(KINDS)}, got {kind!r}")
    return KINDS[kind](n_bits, params)
