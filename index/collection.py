"""A collection of packed binary codes under external string ids, with per-item JSON metadata, in a directory.

Search is exact Hamming-distance retrieval over FAISS binary indexes (Johnson, Douze & Jegou, "Billion-scale
similarity search with GPUs", 2019), as used for semantic hashing (Salakhutdinov & Hinton, "Semantic hashing",
2009): top-k, all items within a radius, and the exact-code bucket.

Codes are ``uint8 (n, n_bits // 8)`` in the bit order of ``models/bits.py``; Hamming distances do not depend
on the bit order, so this module needs only the byte layout and never imports a model.

On disk a collection is a directory holding ``index.faiss`` (an ``IndexBinaryIDMap2``), ``items.jsonl``
(one line per item: id, internal id, metadata) and ``manifest.json`` (a :class:`Manifest`), each replaced
atomically, the manifest last.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import faiss
import numpy as np

from index.errors import (
    CodeLengthError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptCollectionError,
    FingerprintMismatchError,
    InvalidItemsError,
    InvalidManifestError,
    InvalidQueryError,
)

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.jsonl"
MANIFEST_FILE = "manifest.json"

# Each kind builds the storage index that IndexBinaryIDMap2 wraps. A new kind ("ivf", "hnsw", "hash") must
# support remove_ids (upsert and delete rely on it) and reconstruct, and must keep FAISS's binary range_search
# convention of a strict radius (d < radius), which Collection.range_search converts to an inclusive one.
_INDEX_BUILDERS: dict[str, Callable[[int], Any]] = {
    "flat": faiss.IndexBinaryFlat,
}
SUPPORTED_INDEX_KINDS = frozenset(_INDEX_BUILDERS)


def make_index(index_kind: str, n_bits: int) -> faiss.IndexBinaryIDMap2:
    """The one factory of collection indexes: an empty ``IndexBinaryIDMap2`` over a ``index_kind`` index."""
    if index_kind not in _INDEX_BUILDERS:
        raise InvalidManifestError(f"index_kind must be one of {sorted(_INDEX_BUILDERS)}, got {index_kind!r}")
    return faiss.IndexBinaryIDMap2(_INDEX_BUILDERS[index_kind](n_bits))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Manifest:
    """What a collection holds and how; stored as ``manifest.json`` beside the index."""

    n_bits: int  # code length; a positive multiple of 8
    fingerprint: str  # fingerprint of the model whose codes the collection holds
    count: int = 0  # number of items
    index_kind: str = "flat"  # FAISS index behind the id map; see make_index
    format_version: int = FORMAT_VERSION  # on-disk layout version
    created_at: str = field(default_factory=_now_iso)  # ISO 8601, UTC
    next_id: int = 0  # next internal int64 id; internal ids are never reused

    def __post_init__(self) -> None:
        if not _is_int(self.n_bits) or self.n_bits <= 0 or self.n_bits % 8:
            raise InvalidManifestError(f"n_bits must be a positive multiple of 8, got {self.n_bits!r}")
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise InvalidManifestError(f"fingerprint must be a non-empty string, got {self.fingerprint!r}")
        if not isinstance(self.index_kind, str) or self.index_kind not in SUPPORTED_INDEX_KINDS:
            raise InvalidManifestError(
                f"index_kind must be one of {sorted(SUPPORTED_INDEX_KINDS)}, got {self.index_kind!r}"
            )
        if self.format_version != FORMAT_VERSION:
            raise InvalidManifestError(f"format_version {self.format_version!r} is not {FORMAT_VERSION}")
        self._check_counters()
        try:
            datetime.fromisoformat(self.created_at)
        except (TypeError, ValueError) as exc:
            raise InvalidManifestError(f"created_at must be ISO 8601, got {self.created_at!r}") from exc

    def _check_counters(self) -> None:
        if not _is_int(self.count) or self.count < 0:
            raise InvalidManifestError(f"count must be a non-negative int, got {self.count!r}")
        # every item holds a distinct internal id below next_id
        if not _is_int(self.next_id) or self.next_id < self.count:
            raise InvalidManifestError(f"next_id must be an int >= count {self.count}, got {self.next_id!r}")

    @classmethod
    def from_dict(cls, raw: object) -> Manifest:
        """Rebuild from ``asdict`` output; unknown keys are an error, not silently dropped."""
        if not isinstance(raw, dict):
            raise InvalidManifestError(f"a manifest must be a JSON object, got {type(raw).__name__}")
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidManifestError(f"unknown manifest keys {sorted(unknown)}")
        try:
            return cls(**raw)
        except TypeError as exc:  # a required key is missing
            raise InvalidManifestError(str(exc)) from exc

    @property
    def n_bytes(self) -> int:
        return self.n_bits // 8


class Hit(NamedTuple):
    id: str
    distance: int  # Hamming distance to the query
    metadata: dict | None  # None when the search was asked not to include metadata


class Item(NamedTuple):
    id: str
    code: np.ndarray  # uint8 (n_bytes,)
    metadata: dict


class UpsertResult(NamedTuple):
    inserted: int
    updated: int


class Collection:
    """Codes under string ids with JSON metadata, searchable by Hamming distance; one directory on disk.

    Metadata is stored as JSON, so what comes back is ``json.loads(json.dumps(m))`` (tuples become lists, keys
    become strings); ``None`` metadata is stored as ``{}``. A lock serialises mutations and searches.
    """

    def __init__(self, path: str | os.PathLike[str], manifest: Manifest) -> None:
        """An empty collection with ``manifest``'s settings; use :meth:`create` or :meth:`open` instead."""
        self._path = Path(path)
        self._settings = manifest  # count and next_id below are the live values
        self._next_id = manifest.next_id
        self._index = make_index(manifest.index_kind, manifest.n_bits)
        self._ext_to_int: dict[str, int] = {}
        self._int_to_ext: dict[int, str] = {}
        self._meta: dict[str, str] = {}  # id -> metadata as compact JSON text: cheap to save, copied on read
        self._lock = threading.RLock()

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], n_bits: int, fingerprint: str, index_kind: str = "flat"
    ) -> Collection:
        """Create an empty collection at ``path`` (made if missing) and save it."""
        path = Path(path)
        if (path / MANIFEST_FILE).exists():
            raise CollectionExistsError(f"a collection already exists at {path}")
        collection = cls(path, Manifest(n_bits=n_bits, fingerprint=fingerprint, index_kind=index_kind))
        collection.save()
        return collection

    @classmethod
    def open(cls, path: str | os.PathLike[str], expected_fingerprint: str | None = None) -> Collection:
        """Load the collection saved at ``path``, refusing it if it holds another model's codes."""
        path, start = Path(path), time.perf_counter()
        manifest = _read_manifest(path / MANIFEST_FILE)
        if expected_fingerprint is not None and expected_fingerprint != manifest.fingerprint:
            raise FingerprintMismatchError(path, expected_fingerprint, manifest.fingerprint)
        collection = cls(path, manifest)
        collection._index = _read_index(path / INDEX_FILE, manifest)
        collection._load_items(_read_items(path / ITEMS_FILE), manifest)
        LOG.info(
            "opened %s: %d items of %d bits in %.3fs",
            path,
            len(collection),
            manifest.n_bits,
            time.perf_counter() - start,
        )
        return collection

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike[str], n_bits: int, fingerprint: str, index_kind: str = "flat"
    ) -> Collection:
        """Open the collection at ``path`` if there is one (it must match all settings), else create it."""
        if not (Path(path) / MANIFEST_FILE).exists():
            return cls.create(path, n_bits, fingerprint, index_kind)
        collection = cls.open(path, expected_fingerprint=fingerprint)
        found = (collection.n_bits, collection._settings.index_kind)
        if found != (n_bits, index_kind):
            raise CollectionExistsError(
                f"collection at {path} has n_bits={found[0]}, index_kind={found[1]!r}; "
                f"asked for n_bits={n_bits}, index_kind={index_kind!r}"
            )
        return collection

    def _load_items(self, items: list[tuple[str, int, str]], manifest: Manifest) -> None:
        file = self._path / ITEMS_FILE
        for item_id, internal, meta in items:
            if item_id in self._ext_to_int or internal in self._int_to_ext:
                raise CorruptCollectionError(file, f"id {item_id!r} or internal id {internal} appears twice")
            if not 0 <= internal < manifest.next_id:
                raise CorruptCollectionError(file, f"internal id {internal} outside [0, {manifest.next_id})")
            self._ext_to_int[item_id], self._int_to_ext[internal] = internal, item_id
            self._meta[item_id] = meta
        index_ids = faiss.vector_to_array(self._index.id_map)
        if len(items) != manifest.count or set(index_ids.tolist()) != set(self._int_to_ext):
            raise CorruptCollectionError(
                file,
                f"{len(items)} items do not match {INDEX_FILE} ({len(index_ids)} codes) and the manifest "
                f"(count {manifest.count}); the last save may have been interrupted",
            )

    # ---- properties ---------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def n_bits(self) -> int:
        return self._settings.n_bits

    @property
    def n_bytes(self) -> int:
        return self._settings.n_bytes

    @property
    def manifest(self) -> Manifest:
        with self._lock:
            return replace(self._settings, count=len(self._ext_to_int), next_id=self._next_id)

    def __len__(self) -> int:
        return len(self._ext_to_int)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._ext_to_int

    def ids(self) -> Iterator[str]:
        """Ids in insertion order (an upsert moves an id to the end); a snapshot, so mutating is safe."""
        with self._lock:
            return iter(list(self._ext_to_int))

    def __repr__(self) -> str:
        return f"Collection(path={str(self._path)!r}, n_bits={self.n_bits}, count={len(self)})"

    # ---- mutation -----------------------------------------------------------------------------------------

    def upsert(
        self, ids: Sequence[str], codes: np.ndarray, metadata: Sequence[dict | None] | None = None
    ) -> UpsertResult:
        """Insert or replace (code and metadata) items; all input is validated before anything changes."""
        codes = self._check_codes(codes, "codes")
        ids = _check_ids(ids, len(codes))
        texts = _metadata_texts(metadata, len(ids))
        with self._lock:
            old = [self._ext_to_int[i] for i in ids if i in self._ext_to_int]
            self._remove_internal(old)
            new = list(range(self._next_id, self._next_id + len(ids)))
            if new:
                self._index.add_with_ids(codes, np.asarray(new, dtype=np.int64))
            self._next_id += len(new)
            for item_id, internal, text in zip(ids, new, texts, strict=True):
                self._ext_to_int.pop(item_id, None)  # re-insert so ids() follows internal id order
                self._ext_to_int[item_id], self._int_to_ext[internal] = internal, item_id
                self._meta[item_id] = text
        return UpsertResult(inserted=len(ids) - len(old), updated=len(old))

    def delete(self, ids: Sequence[str]) -> int:
        """Remove items; returns how many existed. Unknown ids are ignored."""
        if isinstance(ids, (str, bytes)):
            raise InvalidItemsError("ids must be a sequence of strings, not a single string")
        with self._lock:
            known = [i for i in dict.fromkeys(ids) if isinstance(i, str) and i in self._ext_to_int]
            self._remove_internal([self._ext_to_int[i] for i in known])
            for item_id in known:
                del self._ext_to_int[item_id], self._meta[item_id]
        return len(known)

    def _remove_internal(self, internal_ids: list[int]) -> None:
        """Drop codes from the index and the reverse map; the caller updates the id-keyed maps."""
        if not internal_ids:
            return
        removed = self._index.remove_ids(np.asarray(internal_ids, dtype=np.int64))
        assert removed == len(internal_ids), f"index removed {removed} of {len(internal_ids)} codes"
        for internal in internal_ids:
            del self._int_to_ext[internal]

    # ---- lookup and search --------------------------------------------------------------------------------

    def get(self, id: str) -> Item | None:
        """The item stored under ``id``, or None."""
        with self._lock:
            internal = self._ext_to_int.get(id) if isinstance(id, str) else None
            if internal is None:
                return None
            code = self._index.reconstruct(internal)  # (n_bytes,) uint8
            return Item(id, code, json.loads(self._meta[id]))

    def search(self, codes: np.ndarray, k: int, *, include_metadata: bool = True) -> list[list[Hit]]:
        """The ``k`` nearest items to each query, sorted by (distance, id); fewer if there are fewer items.

        Which items fill the last places when several tie at the k-th distance is FAISS's choice.
        """
        codes = self._check_codes(codes, "queries")
        if not _is_int(k) or k < 1:
            raise InvalidQueryError(f"k must be a positive int, got {k!r}")
        with self._lock:
            n = self._index.ntotal
            if n == 0 or len(codes) == 0:
                return [[] for _ in range(len(codes))]
            # k > ntotal makes FAISS pad with id -1 and allocate (q, k); never ask for more than exists
            distances, labels = self._index.search(codes, min(int(k), n))  # (q, k') int32, int64
            return [
                self._hits(row_ids, row_d, include_metadata) for row_ids, row_d in zip(labels, distances, strict=True)
            ]

    def range_search(self, codes: np.ndarray, radius: int, *, include_metadata: bool = True) -> list[list[Hit]]:
        """Items within Hamming distance ``radius`` (inclusive) of each query, sorted by (distance, id)."""
        codes = self._check_codes(codes, "queries")
        if not _is_int(radius) or radius < 0:
            raise InvalidQueryError(f"radius must be a non-negative int, got {radius!r}")
        with self._lock:
            if self._index.ntotal == 0 or len(codes) == 0:
                return [[] for _ in range(len(codes))]
            # FAISS binary range_search keeps d < radius; ours is inclusive. No distance exceeds n_bits, and
            # the clamp keeps a huge radius from overflowing FAISS's int.
            faiss_radius = min(int(radius), self.n_bits) + 1
            lims, distances, labels = self._index.range_search(codes, faiss_radius)  # (q+1,), (m,), (m,)
            bounds = lims.astype(np.int64)
            return [
                self._hits(labels[lo:hi], distances[lo:hi], include_metadata)
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
            ]

    def bucket(self, code: np.ndarray, *, include_metadata: bool = True) -> list[Hit]:
        """All items whose code equals ``code`` (uint8 (n_bytes,)), sorted by id."""
        if not isinstance(code, np.ndarray) or code.dtype != np.uint8 or code.shape != (self.n_bytes,):
            raise CodeLengthError(f"a code must be uint8 ({self.n_bytes},), got {_describe(code)}")
        return self.range_search(code[None, :], 0, include_metadata=include_metadata)[0]

    def _hits(self, labels: np.ndarray, distances: np.ndarray, include_metadata: bool) -> list[Hit]:
        """FAISS result row -> hits sorted by (distance, id); drops the -1 sentinel if FAISS ever emits it."""
        hits = [
            Hit(self._int_to_ext[internal], int(d), None)
            for internal, d in zip(labels.tolist(), distances.tolist(), strict=True)
            if internal >= 0
        ]
        hits.sort(key=lambda h: (h.distance, h.id))
        if include_metadata:
            hits = [h._replace(metadata=json.loads(self._meta[h.id])) for h in hits]
        return hits

    def _check_codes(self, codes: object, what: str) -> np.ndarray:
        if not (
            isinstance(codes, np.ndarray)
            and codes.dtype == np.uint8
            and codes.ndim == 2
            and codes.shape[1] == self.n_bytes
        ):
            raise CodeLengthError(
                f"{what} must be uint8 (n, {self.n_bytes}) for {self.n_bits}-bit codes, got {_describe(codes)}"
            )
        return np.ascontiguousarray(codes)

    # ---- persistence --------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the collection to its directory: each file atomically and durably, the manifest last."""
        with self._lock:
            start = time.perf_counter()
            self._path.mkdir(parents=True, exist_ok=True)
            _atomic_write(self._path / INDEX_FILE, lambda tmp: faiss.write_index_binary(self._index, tmp))
            _atomic_write(self._path / ITEMS_FILE, lambda tmp: _write_items(tmp, self._item_rows()))
            text = json.dumps(asdict(self.manifest), indent=2) + "\n"
            _atomic_write(self._path / MANIFEST_FILE, lambda tmp: Path(tmp).write_text(text, "utf-8"))
            LOG.info("saved %s: %d items in %.3fs", self._path, len(self), time.perf_counter() - start)

    def _item_rows(self) -> Iterator[tuple[str, int, str]]:
        for item_id, internal in self._ext_to_int.items():
            yield item_id, internal, self._meta[item_id]


# ---- input validation -------------------------------------------------------------------------------------


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {value.shape}"
    return type(value).__name__


def _check_ids(ids: Sequence[str], n: int) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise InvalidItemsError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    if len(ids) != n:
        raise InvalidItemsError(f"got {len(ids)} ids for {n} codes")
    for i, item_id in enumerate(ids):
        if not isinstance(item_id, str) or not item_id:
            raise InvalidItemsError(f"ids[{i}] must be a non-empty string, got {item_id!r}")
    if len(set(ids)) != n:
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise InvalidItemsError(f"id {duplicate!r} appears more than once in one call")
    return ids


def _metadata_texts(metadata: Sequence[dict | None] | None, n: int) -> list[str]:
    """Validate metadata and encode each dict as compact JSON text; None becomes {}."""
    if metadata is None:
        return ["{}"] * n
    if isinstance(metadata, (str, bytes, dict)) or len(metadata) != n:
        raise InvalidItemsError(f"metadata must be a sequence of {n} dicts or None")
    return [_metadata_text(m, i) for i, m in enumerate(metadata)]


def _metadata_text(meta: dict | None, i: int) -> str:
    if meta is None:
        return "{}"
    if not isinstance(meta, dict):
        raise InvalidItemsError(f"metadata[{i}] must be a dict or None, got {type(meta).__name__}")
    try:
        return json.dumps(meta, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # unserialisable value, NaN, circular reference
        raise InvalidItemsError(f"metadata[{i}] is not JSON-serialisable: {exc}") from exc


# ---- files ------------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` a temp file beside ``path``, fsync it, rename it over ``path``, fsync the directory.

    Readers see the old file or the new one, never a partial one; the directory fsync makes the rename itself
    durable before the next file is replaced, so the manifest (written last) never lands before the data.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(str(tmp))
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_items(tmp: str, rows: Iterable[tuple[str, int, str]]) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
        for item_id, internal, meta in rows:
            # meta is already JSON text: splice it in rather than decode and re-encode every item
            f.write(f'{{"id":{json.dumps(item_id)},"internal_id":{internal},"metadata":{meta}}}\n')


def _read_manifest(file: Path) -> Manifest:
    if not file.is_file():
        raise CollectionNotFoundError(f"no collection at {file.parent} (no {file.name})")
    try:
        return Manifest.from_dict(json.loads(file.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, InvalidManifestError
        raise CorruptCollectionError(file, str(exc)) from exc


def _read_index(file: Path, manifest: Manifest) -> faiss.IndexBinaryIDMap2:
    try:
        index = faiss.read_index_binary(str(file))
    except RuntimeError as exc:  # FAISS reports missing, truncated and foreign files alike as RuntimeError
        raise CorruptCollectionError(file, f"FAISS cannot read it: {exc}") from exc
    if not isinstance(index, faiss.IndexBinaryIDMap2):
        raise CorruptCollectionError(file, f"expected an IndexBinaryIDMap2, found {type(index).__name__}")
    if index.d != manifest.n_bits or index.ntotal != manifest.count:
        raise CorruptCollectionError(
            file,
            f"holds {index.ntotal} codes of {index.d} bits; the manifest says {manifest.count} of "
            f"{manifest.n_bits}; the last save may have been interrupted",
        )
    return index


def _read_items(file: Path) -> list[tuple[str, int, str]]:
    try:
        with open(file, encoding="utf-8") as f:
            return [_parse_item(line, line_no, file) for line_no, line in enumerate(f, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptCollectionError(file, str(exc)) from exc


def _parse_item(line: str, line_no: int, file: Path) -> tuple[str, int, str]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise CorruptCollectionError(file, f"line {line_no}: {exc}") from exc
    ok = (
        isinstance(row, dict)
        and set(row) == {"id", "internal_id", "metadata"}
        and isinstance(row["id"], str)
        and row["id"]
        and _is_int(row["internal_id"])
        and isinstance(row["metadata"], dict)
    )
    if not ok:
        expected = "an object with exactly id, internal_id and metadata"
        raise CorruptCollectionError(file, f"line {line_no}: expected {expected}, got {line[:200]!r}")
    return row["id"], row["internal_id"], json.dumps(row["metadata"], separators=(",", ":"))
