"""Milvus as a collection backend: :class:`MilvusCollection` has the public interface and the semantics of
:class:`index.collection.Collection` (upsert replaces, deletes and upserts are visible to the next search, hits
sorted by (distance, id), type-strict metadata filters, radius search), with the items in a Milvus collection
(pymilvus; milvus-lite for a local file) instead of SQLite + FAISS.

In one paragraph: each item is one Milvus row: primary key ``id`` (the item id, see :func:`_pk`), ``code`` a
``BINARY_VECTOR`` of ``n_bits``, ``metadata`` a JSON field, and ``seq`` (insertion order, for :meth:`ids`). The
index is ``BIN_FLAT`` (index kind ``flat``, exact) or ``BIN_IVF_FLAT`` (kind ``ivf``: ``nlist``, ``nprobe``; a
Milvus server only, milvus-lite has BIN_FLAT alone), metric ``HAMMING``, consistency level ``Strong``. A filter
becomes a Milvus expression on the JSON field and every hit is checked again with
:func:`index.validation.matches`; a filter Milvus cannot express (a null value, an int beyond int64, a string
with control characters) is answered by an exact scan of the rows in numpy. Milvus returns at most
:data:`TOPK_MAX` hits per query, so a radius search (or a top-k above that) pages through distance bands until
it has every hit. The directory keeps ``items.sqlite`` (settings and bulk-job progress only, :mod:`index.store`),
``manifest.json`` (with ``backend: "milvus"`` and ``milvus_uri``), ``LOCK`` and, for milvus-lite, ``milvus.db`` (or
the plain ``<name>.db`` given as ``milvus_uri``: a local file never lives outside the directory, :func:`check_uri`).

Scroll, count and delete by filter have the FAISS backend's semantics: a scroll's position is an item's ``seq``
(less :data:`SEQ_ORIGIN`), read in windows of seq since Milvus's query has no order (:meth:`MilvusCollection.scroll`).

What differs from the FAISS backend: no payload indexes (:data:`NO_PAYLOAD_INDEX`), a write is not one
transaction (a batch cut off by a crash can be half written; repeating the upsert completes it), a bulk job's
progress record is stored just after its items rather than with them (a resumed job may write a block again, which
upsert makes harmless), and ``snapshot()`` is a Milvus flush.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hamdex.index.base import SNAPSHOT_EVERY, CollectionBase, Hit, Item, Manifest, UpsertResult
from hamdex.index.deadline import Deadline, check
from hamdex.index.errors import (
    BackendUnavailableError,
    BackendUnreachableError,
    CorruptCollectionError,
    InvalidItemsError,
    InvalidManifestError,
    InvalidQueryError,
    SearchTimeoutError,
    UnsupportedByBackendError,
)
from hamdex.index.kinds import KINDS
from hamdex.index.store import Store
from hamdex.index.validation import Scalar, check_filter, is_int, matches

LOG = logging.getLogger(__name__)


def _no_rerank(rerank: object, pool: object) -> None:
    if rerank is not None or pool is not None:
        raise InvalidQueryError("backend milvus does not rerank: search by Hamming distance alone")


# milvus-lite answers an iterator without a server timestamp, and pymilvus then warns on every scan that it uses
# the client's clock instead: which still sees every write made before the scan, so the warning is noise here.
logging.getLogger("pymilvus.orm.iterator").addFilter(lambda record: "mvccTs" not in record.getMessage())

INDEX_TYPES = {"flat": "BIN_FLAT", "ivf": "BIN_IVF_FLAT"}  # index kind -> Milvus index type
LOCAL_FILE = "milvus.db"  # milvus-lite's file in the collection directory when no URI is given
NAME_KEY = "milvus_collection"  # the store setting naming the Milvus collection
TOPK_MAX = 16_384  # Milvus's cap on the hits of one query (top-k and range search alike)
WRITE_BATCH = 1_000  # rows per insert call: ~10x faster than 20k-row calls (measured, milvus-lite 2.5.1)
ID_BATCH = 1_000  # ids per "id in [...]" expression
SCAN_BATCH = 10_000  # rows per page of an exact scan
RESULT_BUDGET = 1 << 18  # hits per search call (queries x limit), to keep one gRPC answer small
MAX_ID_BYTES = 65_535  # Milvus's longest VARCHAR
# a scroll position is seq - SEQ_ORIGIN: below 2**60 (the HTTP cursor's 15 hex digits) until 2057; seqs are
# clock readings in ns (see _next_seq), and none is written below the origin
SEQ_ORIGIN = 1_600_000_000 * 10**9  # 2020-09-13 in ns since the epoch
INT64_MAX = 2**63 - 1
SCROLL_MAX = 4_096  # items one scroll page selects at most (a page may hold fewer and still have a next one)
WINDOW_ROWS = TOPK_MAX - 1  # rows of one seq window a scroll reads (a Milvus query returns at most TOPK_MAX)
NO_PAYLOAD_INDEX = (
    "backend 'milvus' keeps no payload indexes: milvus-lite 2.5 indexes no path inside a JSON field (only whole "
    "int, varchar, float, double and bool fields), so filters on metadata scan it; filtering works without one"
)


def _pymilvus() -> Any:
    """pymilvus, imported on first use: the backend is an optional extra."""
    try:
        with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources, which warns on import
            warnings.simplefilter("ignore", UserWarning)
            import pymilvus

            try:
                import milvus_lite.server_manager  # noqa: F401
            except ImportError:  # a server URI needs no milvus-lite
                pass
    except ImportError as exc:
        raise BackendUnavailableError(
            "the milvus backend needs pymilvus and milvus-lite: pip install 'hamdex[milvus]'"
        ) from exc
    return pymilvus


SERVER_SCHEMES = frozenset({"http", "https", "tcp", "grpc", "unix"})  # what pymilvus connects to as a server
LOCAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.db")  # a milvus-lite file: a plain name in the directory


def is_local(uri: str | None) -> bool:
    """None or anything pymilvus does not read as a server URI (``http://host:19530``, ``unix:/path.sock``) is a
    milvus-lite file (pymilvus's own rule)."""
    return uri is None or urllib.parse.urlsplit(uri).scheme.lower() not in SERVER_SCHEMES


def check_uri(uri: str | None) -> None:
    """A Milvus server's URI, or a milvus-lite file given as a plain ``<name>.db`` inside the collection's directory:
    a path elsewhere (absolute, ``..``, another collection's file) would let one collection write outside its
    directory or share another's file."""
    if uri is None or not is_local(uri):
        return
    if not LOCAL_NAME.fullmatch(uri):
        raise InvalidManifestError(
            f"milvus_uri must be a Milvus server's URI ({', '.join(sorted(SERVER_SCHEMES))}) or a plain file name "
            f"ending in .db (kept in the collection's directory); got {uri!r}"
        )


def check_kind(index_kind: str, milvus_uri: str | None) -> None:
    """Index kinds the milvus backend builds: flat anywhere, ivf on a Milvus server."""
    if index_kind not in INDEX_TYPES:
        raise InvalidManifestError(f"the milvus backend takes index kinds {sorted(INDEX_TYPES)}, got {index_kind!r}")
    if index_kind != "flat" and is_local(milvus_uri):
        raise InvalidManifestError(f"milvus-lite (a local file) builds index kind 'flat' only, got {index_kind!r}")


# ---- ids and filters as Milvus expressions ----------------------------------------------------------------------


def _pk(item_id: str) -> str:
    """The primary key of an id: ``%``, ``'`` (milvus-lite's own SQL breaks on it) and non-printable characters
    percent-escaped, so that every key is a plain string literal in an expression; :func:`_id` reverses it."""
    if item_id.isprintable() and "%" not in item_id and "'" not in item_id:
        return item_id
    return "".join(
        c if c.isprintable() and c not in "%'" else "".join(f"%{b:02X}" for b in c.encode()) for c in item_id
    )


def _id(pk: str) -> str:
    return urllib.parse.unquote(pk) if "%" in pk else pk


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ids_expr(pks: Sequence[str]) -> str:
    return f"id in [{', '.join(_quote(pk) for pk in pks)}]"


def _literal(value: Scalar) -> str | None:
    """``value`` as a Milvus literal whose equality is what :func:`matches` decides, or None if there is none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -(2**63) < value < 2**63 else None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str) and value.isprintable():
        return _quote(value)
    return None  # null (Milvus 2.5 has no null test on JSON), control characters


def filter_expr(where: dict[str, Scalar]) -> tuple[str, bool]:
    """(Milvus expression, whether it is exact). Fields it cannot express are left out: it then selects a
    superset, and the caller scans instead."""
    clauses, exact = [], True
    for key, value in where.items():
        literal = _literal(value)
        if literal is None or not key.isprintable():
            exact = False
            continue
        clauses.append(f"metadata[{_quote(key)}] == {literal}")
    return " and ".join(clauses), exact


Row = tuple[str, int, Any]  # (id, distance, metadata or None)


class MilvusCollection(CollectionBase):
    """A collection kept in Milvus; the interface of :class:`index.collection.Collection` (see the module
    docstring for what differs). Use :meth:`create` (``milvus_uri=``: a server URL, or None for a milvus-lite file
    in the directory), :meth:`open` or :meth:`open_or_create`, then :meth:`close`."""

    backend = "milvus"

    def __init__(
        self, path: Path, settings: Manifest, store: Store, lock_fd: int, snapshot_every: int = SNAPSHOT_EVERY
    ) -> None:
        super().__init__(path, settings, store, lock_fd, snapshot_every)  # snapshot_every: Milvus flushes itself
        # an opened collection's Milvus collection is named in its settings; a new one is named here
        self._name = store.settings().get(NAME_KEY) or _new_name(settings.milvus_uri)
        self._local = path / (settings.milvus_uri or LOCAL_FILE) if is_local(settings.milvus_uri) else None
        self._client = _connect(str(self._local) if self._local else settings.milvus_uri)
        self._write_mutex = threading.Lock()  # one write at a time: keeps the count and seq in step
        self._seq = 0
        self._spacing = 1.0  # seq per selected row in the last scroll window: the next window's first guess

    # ---- construction: create, open and open_or_create come from CollectionBase ---------------------------

    @classmethod
    def _check_new(cls, path: Path, settings: Manifest) -> None:
        check_kind(settings.index_kind, settings.milvus_uri)
        check_uri(settings.milvus_uri)
        if settings.vectors is not None:
            raise InvalidManifestError("backend milvus keeps no vectors: create it without 'vectors'")

    def _initialize(self) -> dict[str, Any]:
        self._create_in_milvus()
        LOG.info("%s keeps its items in the Milvus collection %s", self._path, self._name)
        return {NAME_KEY: self._name}

    def _create_in_milvus(self) -> None:
        data_type = _pymilvus().DataType
        client, settings = self._client, self._settings
        if client.has_collection(self._name):  # left by a creation that crashed before its settings were stored
            client.drop_collection(self._name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", data_type.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("code", data_type.BINARY_VECTOR, dim=settings.n_bits)
        schema.add_field("metadata", data_type.JSON)
        schema.add_field("seq", data_type.INT64)
        index = client.prepare_index_params()
        build = {"nlist": settings.index_params["nlist"]} if settings.index_kind == "ivf" else {}
        index.add_index("code", index_type=INDEX_TYPES[settings.index_kind], metric_type="HAMMING", params=build)
        client.create_collection(self._name, schema=schema, index_params=index, consistency_level="Strong")

    def _load(self) -> None:
        if not self._client.has_collection(self._name):
            raise CorruptCollectionError(self._path, f"Milvus has no collection {self._name!r}")
        self._client.load_collection(self._name)
        rows = self._client.query(self._name, filter="", output_fields=["count(*)"])
        self._count = int(rows[0]["count(*)"])

    # ---- properties: path, n_bits, n_bytes, fingerprint, model, manifest, len and repr come from CollectionBase --

    def __contains__(self, item_id: object) -> bool:
        self._check_open()
        return isinstance(item_id, str) and bool(item_id) and bool(self._existing([item_id]))

    def ids(self) -> list[str]:
        """Live ids in insertion order (an upsert moves an id to the end)."""
        self._check_open()
        rows = [(row["seq"], row["id"]) for rows in self._pages("", ["seq"]) for row in rows]
        return [_id(pk) for _, pk in sorted(rows)]

    # ---- writes -------------------------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[str],
        codes: np.ndarray,
        metadata: Sequence[dict | None] | None = None,
        *,
        progress: tuple[str, Any] | None = None,
        vectors: np.ndarray | None = None,
    ) -> UpsertResult:
        """Insert or replace (code and metadata) items. ``progress=(key, value)`` is stored once they are written.
        This backend keeps no vectors (``vectors`` must be None)."""
        if vectors is not None:
            raise InvalidItemsError("backend milvus keeps no vectors")
        ids, codes, texts = self._valid_items(ids, codes, metadata)
        pks = [_pk(i) for i in ids]
        too_long = next((pk for pk in pks if len(pk.encode()) > MAX_ID_BYTES), None)
        if too_long is not None:
            raise InvalidItemsError(f"the milvus backend takes ids of at most {MAX_ID_BYTES} bytes: {too_long[:40]!r}")
        self._check_open()
        with self._write_mutex:
            existing = self._existing(ids)
            rows = [
                {"id": pk, "code": code.tobytes(), "metadata": json.loads(text), "seq": self._next_seq()}
                for pk, code, text in zip(pks, codes, texts, strict=True)
            ]
            new = [row for row, i in zip(rows, ids, strict=True) if i not in existing]
            old = [row for row, i in zip(rows, ids, strict=True) if i in existing]
            for start in range(0, len(new), WRITE_BATCH):
                self._client.insert(self._name, new[start : start + WRITE_BATCH])
                self._count += len(new[start : start + WRITE_BATCH])
            for start in range(0, len(old), WRITE_BATCH):  # upsert = delete + insert: only where an id exists
                self._client.upsert(self._name, old[start : start + WRITE_BATCH])
            if progress is not None:
                self.set_progress(*progress)
        return UpsertResult(inserted=len(new), updated=len(old))

    def _next_seq(self) -> int:
        """Increasing across restarts without storing a counter: the clock in ns, bumped past the last one."""
        self._seq = max(self._seq + 1, time.time_ns(), SEQ_ORIGIN)
        return self._seq

    def delete(self, ids: Sequence[str]) -> int:
        """Remove items; returns how many existed (unknown ids are ignored)."""
        wanted = self._valid_deletes(ids)
        if not wanted:
            return 0
        with self._write_mutex:
            existing = [_pk(i) for i in self._existing(wanted)]
            for start in range(0, len(existing), ID_BATCH):
                self._client.delete(self._name, filter=_ids_expr(existing[start : start + ID_BATCH]))
            self._count -= len(existing)
        return len(existing)

    def _existing(self, ids: Sequence[str]) -> set[str]:
        """The ids of ``ids`` that Milvus holds."""
        found: set[str] = set()
        for start in range(0, len(ids), ID_BATCH):
            pks = [_pk(i) for i in ids[start : start + ID_BATCH]]
            rows = self._client.query(self._name, filter=_ids_expr(pks), output_fields=["id"])
            found.update(_id(row["id"]) for row in rows)
        return found

    # ---- reads --------------------------------------------------------------------------------------------

    def get(self, id: str) -> Item | None:
        """The item stored under ``id``, or None."""
        item_id = self._valid_id(id)
        if item_id is None:
            return None
        rows = self._client.query(self._name, filter=_ids_expr([_pk(item_id)]), output_fields=["code", "metadata"])
        if not rows:
            return None
        return Item(id, np.frombuffer(_code_bytes(rows[0]["code"]), np.uint8).copy(), rows[0]["metadata"])

    def search(
        self,
        codes: np.ndarray,
        k: int,
        *,
        include_metadata: bool = True,
        where: dict[str, Scalar] | None = None,
        params: dict[str, int] | None = None,
        deadline: Deadline | None = None,
        rerank: int | None = None,
        query_vectors: np.ndarray | None = None,
        query_scores: np.ndarray | None = None,
        bits: int | None = None,
        pool: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` nearest items to each query, sorted by (distance, id); fewer if there are fewer items.
        ``deadline`` is checked before Milvus is asked (a Milvus call itself is not interrupted). This backend
        does not rerank (``rerank`` must be None)."""
        _no_rerank(rerank, pool)
        self._no_prefix(bits)
        check(deadline)
        codes, where, qparams = self._valid_search(codes, k, where, params)
        k = min(int(k), self._count)
        if len(codes) == 0 or k == 0:
            return [[] for _ in range(len(codes))]
        expr, exact = filter_expr(where)
        if not exact:
            return self._scan(codes, where, expr, include_metadata, k=k)
        fetch_meta = include_metadata or bool(where)
        if k <= TOPK_MAX:
            rows = self._search(codes, k, expr, fetch_meta, qparams)
        else:
            rows = [self._pages_by_distance(code, self.n_bits, expr, fetch_meta, qparams, want=k) for code in codes]
        redo = lambda i: self._scan(codes[i : i + 1], where, expr, True, k=k)[0]  # noqa: E731
        return [hits[:k] for hits in self._hits(rows, where, include_metadata, redo)]

    def range_search(
        self,
        codes: np.ndarray,
        radius: int,
        *,
        include_metadata: bool = True,
        k: int | None = None,
        where: dict[str, Scalar] | None = None,
        params: dict[str, int] | None = None,
        deadline: Deadline | None = None,
        rerank: int | None = None,
        query_vectors: np.ndarray | None = None,
        query_scores: np.ndarray | None = None,
        bits: int | None = None,
        pool: int | None = None,
    ) -> list[list[Hit]]:
        """Items within Hamming distance ``radius`` (inclusive) of each query, sorted by (distance, id); with
        ``k``, the first k of them. ``deadline`` is checked before Milvus is asked. No ``rerank``, as in search."""
        _no_rerank(rerank, pool)
        self._no_prefix(bits)
        check(deadline)
        codes, radius, where, qparams = self._valid_range(codes, radius, k, where, params)
        every = self._within(codes, radius, include_metadata, where, qparams)
        # with k, every hit and then the first k: Milvus pages through distance bands either way
        return every if k is None else [hits[:k] for hits in every]

    def _within(self, codes, radius, include_metadata, where, qparams) -> list[list[Hit]]:
        if len(codes) == 0 or self._count == 0:
            return [[] for _ in range(len(codes))]
        expr, exact = filter_expr(where)
        if not exact:
            return self._scan(codes, where, expr, include_metadata, radius=radius)
        fetch_meta = include_metadata or bool(where)
        rows = self._search(codes, TOPK_MAX, expr, fetch_meta, qparams, band=(0, radius + 1))
        for i, hits in enumerate(rows):
            if len(hits) == TOPK_MAX:  # cut off by Milvus's cap: page through the distances
                rows[i] = self._pages_by_distance(codes[i], radius, expr, fetch_meta, qparams)
        redo = lambda i: self._scan(codes[i : i + 1], where, expr, True, radius=radius)[0]  # noqa: E731
        return self._hits(rows, where, include_metadata, redo)

    def _no_prefix(self, bits: int | None) -> None:
        if bits is not None and bits != self.n_bits:
            raise InvalidQueryError(f"backend milvus searches the whole {self.n_bits}-bit code only, not {bits} bits")

    def _check_params(self, params: dict[str, int] | None) -> dict[str, int]:
        """The kind's query parameters, positive ints (Milvus sets its own upper bounds)."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        allowed = KINDS[self._settings.index_kind].query_params
        unknown = set(params) - allowed
        if unknown:
            takes = ", ".join(sorted(allowed)) or "none"
            raise InvalidQueryError(f"index kind {self._settings.index_kind!r} takes query parameters {takes}")
        for key, value in params.items():
            if not is_int(value) or value < 1:
                raise InvalidQueryError(f"{key} must be a positive int, got {value!r}")
        return params

    def _search(
        self,
        codes: np.ndarray,
        limit: int,
        expr: str,
        fetch_meta: bool,
        qparams: dict[str, int],
        band: tuple[int, int] | None = None,
    ) -> list[list[Row]]:
        """Milvus search, a block of queries per call: per query [(id, distance, metadata)], nearest first.
        ``band=(lo, hi)``: only distances in [lo, hi) (Milvus's range search: range_filter <= d < radius)."""
        params: dict[str, Any] = {}
        if self._settings.index_kind == "ivf":
            params["nprobe"] = qparams.get("nprobe", self._settings.index_params["nprobe"])
        if band is not None:
            params.update(range_filter=band[0], radius=band[1])
        block = max(1, min(1024, RESULT_BUDGET // limit))
        out: list[list[Row]] = []
        for start in range(0, len(codes), block):
            found = self._client.search(
                self._name,
                data=[code.tobytes() for code in codes[start : start + block]],
                limit=limit,
                filter=expr,
                output_fields=["metadata"] if fetch_meta else [],
                search_params={"params": params},
                anns_field="code",
            )
            out.extend(
                [(_id(h["id"]), int(h["distance"]), h["entity"].get("metadata")) for h in hits] for hits in found
            )
        return out

    def _pages_by_distance(
        self, code: np.ndarray, radius: int, expr: str, fetch_meta: bool, qparams: dict[str, int], want: int = 0
    ) -> list[Row]:
        """Every hit within ``radius`` of one query (or, with ``want``, at least the ``want`` nearest), in bands of
        distance that each fit under TOPK_MAX; a single distance holding more is scanned exactly."""
        found: list[Row] = []
        lo = 0
        while lo <= radius:
            page = self._search(code[None, :], TOPK_MAX, expr, fetch_meta, qparams, band=(lo, radius + 1))[0]
            if len(page) < TOPK_MAX:
                return found + page
            top = max(d for _, d, _ in page)  # every hit nearer than the farthest one returned is in the page
            if top == lo:
                page, top = self._scan_distance(code, lo, expr), lo + 1
            found += [row for row in page if row[1] < top]
            if want and len(found) >= want:
                return found
            lo = top
        return found

    def _hits(self, rows: list[list[Row]], where, include_metadata: bool, redo) -> list[list[Hit]]:
        """Rows -> hits sorted by (distance, id); a query with a hit the filter refuses is answered by ``redo``."""
        out = []
        for i, row in enumerate(rows):
            if where and not all(matches(meta, where) for _, _, meta in row):
                row = redo(i)
            hits = [Hit(item_id, d, meta if include_metadata else None) for item_id, d, meta in row]
            hits.sort(key=lambda h: (h.distance, h.id))
            out.append(hits)
        return out

    # ---- scrolling, counting and deleting by filter ---------------------------------------------------------

    def scroll(
        self, after: int = -1, limit: int = 100, where: dict[str, Any] | None = None, deadline: Deadline | None = None
    ) -> tuple[list[Item], int | None]:
        """(live items matching ``where`` after position ``after``, in write order; the position to continue
        after, or None at the end), as :meth:`index.collection.Collection.scroll`. A position is an item's ``seq``
        less :data:`SEQ_ORIGIN`, never reused, and an upsert gives the item a new one: an item rewritten during a
        scroll comes in its new version (again, if the scroll had passed the old). A page holds at most
        :data:`SCROLL_MAX` items, and may hold fewer than ``limit`` and still have a next one (an item rewritten
        or deleted between selecting and reading it is left out)."""
        rows, last = self._page(after, limit, check_filter(where), deadline)
        items = [
            Item(_id(r["id"]), np.frombuffer(_code_bytes(r["code"]), np.uint8).copy(), r["metadata"]) for r in rows
        ]
        return items, last

    def count_matching(self, where: dict[str, Any] | None = None, deadline: Deadline | None = None) -> int:
        """Live items whose metadata matches ``where`` (all of them without one): Milvus selects the rows by the
        filter's expression, and each is checked with :func:`matches`, page by page (``deadline`` between pages)."""
        where = check_filter(where)
        self._check_open()
        if not where:
            return self._count
        check(deadline)
        n = 0
        for rows in self._pages(filter_expr(where)[0], ["metadata"]):
            n += sum(matches(row["metadata"], where) for row in rows)
            check(deadline)
        return n

    def delete_where(
        self, where: dict[str, Any] | None, deadline: Deadline | None = None, chunk: int = 1000
    ) -> tuple[int, bool]:
        """Delete the items matching ``where``, ``chunk`` at a time (a scroll page each, then a Milvus delete),
        until none is left or ``deadline`` expires; returns (deleted, complete), as
        :meth:`index.collection.Collection.delete_where`. Only the versions seen matching (id and seq) are
        deleted: an item rewritten meanwhile stays."""
        where, deleted, after = check_filter(where), 0, -1
        while deadline is None or not deadline.expired:
            try:
                rows, last = self._page(after, chunk, where, deadline)
            except SearchTimeoutError:
                if deleted:  # what is deleted is deleted: say so, and that there is more
                    return deleted, False
                raise
            if rows:
                deleted += self._delete_versions({row["id"]: int(row["seq"]) for row in rows})
            if last is None:
                return deleted, True
            after = last
        return deleted, False

    def indexed_fields(self) -> list[str]:
        """None: this backend keeps no payload indexes (:data:`NO_PAYLOAD_INDEX` says why)."""
        self._check_open()
        return []

    def index_fields(self, names: Sequence[str]) -> list[str]:
        raise UnsupportedByBackendError(NO_PAYLOAD_INDEX)

    def _page(
        self, after: int, limit: int, where: dict[str, Scalar], deadline: Deadline | None
    ) -> tuple[list[dict], int | None]:
        """A scroll page: the rows (id as a primary key, code, metadata, seq) of the first ``limit`` in seq order
        after position ``after`` that ``where`` matches, those rewritten or deleted since they were selected left
        out; and the position after them (None: the end)."""
        if not is_int(after) or not is_int(limit) or limit < 1:
            raise InvalidQueryError(
                f"a scroll takes an int position and a positive int limit, got {after!r}, {limit!r}"
            )
        self._check_open()
        lo = SEQ_ORIGIN + max(int(after), -1)
        if lo >= INT64_MAX:
            return [], None
        chosen, more = self._first_by_seq(lo, min(int(limit), SCROLL_MAX), where, deadline)
        check(deadline)
        stored = self._fetch([pk for _, pk in chosen])
        rows = [stored[pk] for seq, pk in chosen if pk in stored and stored[pk]["seq"] == seq]
        rows = [row for row in rows if not where or matches(row["metadata"], where)]
        return rows, chosen[-1][0] - SEQ_ORIGIN if more else None

    def _first_by_seq(
        self, lo: int, limit: int, where: dict[str, Scalar], deadline: Deadline | None
    ) -> tuple[list[tuple[int, str]], bool]:
        """(seq, primary key) of the first ``limit`` rows with seq above ``lo`` that ``where`` matches, in seq order,
        and whether more may follow. Milvus's query has no order: this reads every row the filter's expression
        selects in consecutive windows of seq (lo, top], each at most WINDOW_ROWS (:meth:`_seq_window`), and keeps
        those :func:`matches` passes, until it has ``limit``; windows grow where the expression selects more than
        matches (a filter Milvus cannot express), so that a page is full but at the end."""
        expr, _ = filter_expr(where)
        fields = ["seq", "metadata"] if where else ["seq"]
        found: list[tuple[int, str]] = []
        seen = kept = 0
        while len(found) < limit:
            check(deadline)
            rest = self._count_where(_and(f"seq > {lo}", expr))
            if rest == 0:
                return sorted(found), False
            target = min(WINDOW_ROWS, 2 * (limit - len(found)) * (seen + 1) // (kept + 1))  # rows a window aims at
            lo, top = self._seq_window(lo, rest, target, expr, deadline)
            rows = self._client.query(
                self._name, filter=_window(lo, top, expr), output_fields=fields, limit=WINDOW_ROWS
            )
            seen += len(rows)
            rows = [row for row in rows if not where or matches(row["metadata"], where)]
            kept += len(rows)
            found += [(int(row["seq"]), row["id"]) for row in rows]
            if top == INT64_MAX:  # that was every row left
                found.sort()
                page = _first(found, limit)
                return page, len(page) < len(found)
            lo = top
        found.sort()
        return _first(found, limit), True

    def _seq_window(self, lo: int, rest: int, target: int, expr: str, deadline: Deadline | None) -> tuple[int, int]:
        """(lo', top) with no selected row in (lo, lo'] and 1 to WINDOW_ROWS in (lo', top], of the ``rest`` above
        ``lo``. The first guess spaces ``target`` rows as the last window had them; then, while a guess holds none
        (lo' moves up to it) or too many (the upper bound moves down), the next one alternately interpolates the
        count towards ``target`` and bisects: at most ~2 x 63 counts, one or two where the spacing holds."""
        high, over = INT64_MAX, rest  # (lo, high] holds `over` rows
        if rest <= WINDOW_ROWS:
            return lo, high
        guess, interpolate = lo + int(self._spacing * target), True
        while True:
            top = min(max(guess, lo + 1), high - 1)
            if top <= lo:  # one seq holds more than WINDOW_ROWS rows: not written by _next_seq
                return lo, high
            check(deadline)
            n = self._count_where(_window(lo, top, expr))
            if 0 < n <= WINDOW_ROWS:
                self._spacing = (top - lo) / n
                return lo, top
            if n:
                high, over = top, n
            else:
                lo = top
            guess = lo + ((high - lo) * target // over if interpolate else (high - lo) // 2)
            interpolate = not interpolate

    def _count_where(self, expr: str) -> int:
        return int(self._client.query(self._name, filter=expr, output_fields=["count(*)"])[0]["count(*)"])

    def _fetch(self, pks: Sequence[str]) -> dict[str, dict]:
        """primary key -> row (id, code, metadata, seq) of the rows Milvus holds under ``pks``."""
        out: dict[str, dict] = {}
        for start in range(0, len(pks), ID_BATCH):
            expr = _ids_expr(pks[start : start + ID_BATCH])
            out.update((row["id"], row) for row in self._client.query(self._name, filter=expr, output_fields=_ROW))
        return out

    def _delete_versions(self, versions: dict[str, int]) -> int:
        """Delete the rows of ``versions`` (primary key -> seq) still holding that seq; returns how many."""
        deleted = 0
        with self._write_mutex:  # between the check and the delete no write of this collection runs
            pks = list(versions)
            for start in range(0, len(pks), ID_BATCH):
                expr = _ids_expr(pks[start : start + ID_BATCH])
                rows = self._client.query(self._name, filter=expr, output_fields=["seq"])
                same = [row["id"] for row in rows if int(row["seq"]) == versions[row["id"]]]
                if same:
                    self._client.delete(self._name, filter=_ids_expr(same))
                    self._count -= len(same)
                    deleted += len(same)
        return deleted

    # ---- exact scans (filters Milvus cannot express, a distance with more than TOPK_MAX items) ---------------

    def _pages(self, expr: str, fields: list[str]) -> Iterator[list[dict]]:
        iterator = self._client.query_iterator(self._name, batch_size=SCAN_BATCH, filter=expr, output_fields=fields)
        try:
            while rows := iterator.next():
                yield rows
        finally:
            iterator.close()

    def _rows(self, expr: str, where: dict[str, Scalar]) -> tuple[list[str], np.ndarray, list[Any]]:
        """(ids, codes uint8 (m, n_bytes), metadata) of every item passing ``expr`` and ``where``."""
        ids, codes, metas = [], [], []
        for rows in self._pages(expr, ["code", "metadata"]):
            for row in rows:
                if not where or matches(row["metadata"], where):
                    ids.append(_id(row["id"]))
                    codes.append(_code_bytes(row["code"]))
                    metas.append(row["metadata"])
        return ids, np.frombuffer(b"".join(codes), np.uint8).reshape(len(ids), self.n_bytes), metas

    def _scan(self, codes, where, expr, include_metadata, *, k: int = 0, radius: int = -1) -> list[list[Hit]]:
        """Exact top-k (``k``) or radius search (``radius``) over the rows the filter selects, in numpy."""
        ids, found, metas = self._rows(expr, where)
        distances = np.bitwise_count(codes[:, None, :] ^ found[None, :, :]).sum(axis=2)  # (q, m)
        order_ids = np.asarray(ids, dtype=object)
        out = []
        for row in distances:
            order = np.lexsort((order_ids, row)) if len(ids) else np.zeros(0, np.int64)
            order = order[:k] if k else order[row[order] <= radius]
            out.append([Hit(ids[j], int(row[j]), metas[j] if include_metadata else None) for j in order.tolist()])
        return out

    def _scan_distance(self, code: np.ndarray, distance: int, expr: str) -> list[Row]:
        ids, found, metas = self._rows(expr, {})
        d = np.bitwise_count(code[None, :] ^ found).sum(axis=1)  # (m,)
        return [(ids[j], distance, metas[j]) for j in np.flatnonzero(d == distance).tolist()]

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def snapshot(self) -> int:
        """Ask Milvus to persist what it holds in memory (a flush); returns 0 (Milvus keeps no sequence here)."""
        self._check_open()
        self._client.flush(self._name)
        return 0

    def _persist(self) -> None:
        try:
            self._client.flush(self._name)
        except Exception as exc:  # e.g. the collection was never created: nothing to flush
            LOG.debug("flush of %s on close failed: %s", self._path, exc)

    def _release(self) -> None:
        """Disconnect (stopping milvus-lite for a local file), then release the directory."""
        try:
            self._client.close()
            if self._local is not None:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(str(self._local))
        finally:
            super()._release()


_ROW = ["code", "metadata", "seq"]  # what a scroll returns of a row (with its id)


def _and(condition: str, expr: str) -> str:
    return f"{condition} and ({expr})" if expr else condition


def _window(lo: int, top: int, expr: str) -> str:
    return _and(f"seq > {lo} and seq <= {top}", expr)


def _first(found: list[tuple[int, str]], limit: int) -> list[tuple[int, str]]:
    """The first ``limit`` of ``found`` (sorted), cut before a seq shared across the cut (the next page starts
    after a seq); a page of one shared seq alone is kept whole. (_next_seq writes each seq once, but a clock set
    back between two runs could write one again.)"""
    page = found[:limit]
    if len(found) > limit and found[limit][0] == page[-1][0]:
        tied = page[-1][0]
        page = [row for row in page if row[0] < tied] or [row for row in found if row[0] == tied]
    return page


def _new_name(milvus_uri: str | None) -> str:
    """A milvus-lite file holds one collection; a server holds many, so each gets a name of its own."""
    return "hamdex" if is_local(milvus_uri) else f"hamdex_{uuid.uuid4().hex}"


def _connect(uri: str) -> Any:
    pymilvus = _pymilvus()
    try:
        # an alias of its own: clients of one URI would otherwise share a connection, which close() ends for all
        return pymilvus.MilvusClient(uri, alias=f"hamdex-{uuid.uuid4().hex}")
    except pymilvus.MilvusException as exc:
        raise BackendUnreachableError(f"cannot connect to Milvus at {uri}: {exc}") from exc


def _code_bytes(value: Any) -> bytes:
    """A BINARY_VECTOR as pymilvus returns it: bytes, or a list holding one bytes."""
    return bytes(value[0] if isinstance(value, list) else value)


def destroy(path: str | os.PathLike[str]) -> None:
    """Drop the Milvus collection of a (closed) collection directory on a Milvus server; a milvus-lite file goes
    with the directory, so there is nothing to do for one."""
    path = Path(path)
    store = Store(path)
    try:
        raw = store.settings()
    finally:
        store.close()
    uri = raw.get("milvus_uri")
    if raw.get("backend") != "milvus" or is_local(uri) or NAME_KEY not in raw:
        return
    client = _connect(uri)
    try:
        client.drop_collection(raw[NAME_KEY])
    finally:
        client.close()
