"""The bulk indexing job: blocks of raw items -> encoder -> collection, with a progress bar and a summary.

Bad rows (wrong dimension, NaN/inf, a missing or empty id, non-string or undecodable text, a malformed jsonl/csv
record) are skipped and counted by reason in the summary; with ``strict`` the first one aborts the job instead
(:class:`BadRowError`; nothing of its block is written). A block whose featurizing fails is checked row by row,
so its good rows are still indexed.

Pipelined (:func:`index_blocks`): a thread reads the next blocks while this one is checked and encoded, and a
writer thread commits the previous one (``service.bulk.pipeline``), each stage at most ``PIPELINE_DEPTH`` blocks ahead.
Memory stays at a few blocks whatever the input's size (``.npy`` is mapped a block at a time). The check-and-encode
stage is an :data:`Encoder`: :func:`encode_locally` here, or ``service.bulk.ray.RayEncoder`` on a Ray cluster; the
reading, the resume logic, the writes and the summary are the same for both.

Resumable (:func:`index_file`): each block's upsert stores ``{"items": done}`` under the job's key in the same
SQLite transaction as the items. The key hashes the absolute input path, its size and mtime, the batch size, the
limit and the model fingerprint; a rerun with the same arguments skips the items already done (read again, not
encoded or written again), and a finished job is marked ``done`` so a rerun does nothing unless ``restart``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from hamdex.index import CollectionLike
from hamdex.models import data
from hamdex.models.featurizers import InputError
from hamdex.models.hasher import Hasher
from hamdex.models.rerank import rerank_vectors
from hamdex.service.bulk.pipeline import Worker, prefetch

from hamdex.progress import progress as progress_bar

LOG = logging.getLogger(__name__)
MAX_EXAMPLES = 5  # per reason
PIPELINE_DEPTH = 2  # blocks read ahead of the encoder, and encoded blocks queued for the writer


class BadRowError(ValueError):
    """A bad row in a strict job."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass
class SkipReport:
    """Rows skipped, by reason (error type), with the first few examples of each."""

    strict: bool = False
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # the reader thread reports too

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def add(self, error_type: str, message: str, row: int | None = None, id: str | None = None) -> None:
        if self.strict:
            where = "" if row is None else f"row {row}{'' if id is None else f' (id {id!r})'}: "
            raise BadRowError(f"{where}{message}", error_type)
        with self._lock:
            self.reasons[error_type] += 1
            seen = self.examples.setdefault(error_type, [])
            if len(seen) < MAX_EXAMPLES:
                seen.append({"row": row, "id": id, "message": message})

    def on_read_error(self, err: data.DataFormatError) -> None:
        """The readers' ``on_error`` hook (the message names the file and line)."""
        self.add(getattr(err, "reason", err.error_type), str(err))


@dataclass(frozen=True)
class IndexSummary:
    items: int  # items indexed by this run
    seconds: float
    collection_count: int
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)  # error type -> rows skipped
    examples: dict[str, list[dict]] = field(default_factory=dict)  # error type -> first few {row, id, message}
    resumed_from: int = 0  # items a previous run of the same job had done
    already_done: bool = False  # the job had finished before: nothing was done
    peak_rss_bytes: int | None = None  # this process's peak resident memory so far (None where unknown)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "seconds": self.seconds,
            "collection_count": self.collection_count,
            "skipped": self.skipped,
            "reasons": dict(self.reasons),
            "examples": self.examples,
            "resumed_from": self.resumed_from,
            "already_done": self.already_done,
            "items_per_s": self.items_per_s,
            "peak_rss_bytes": self.peak_rss_bytes,
        }


class Encoded(NamedTuple):
    """One input block after the check-and-encode stage: what to write, and how many input rows it covers."""

    ids: list[str]  # the block's good rows, in input order
    codes: np.ndarray | None  # uint8 (len(ids), n_bits // 8); None when no row was good
    metadata: list[dict]
    size: int  # rows of the input block, bad ones included (progress counts these)
    vectors: np.ndarray | None = None  # float32 (len(ids), d) for a collection that keeps vectors (index.vectors)


# (blocks, report, start) -> one Encoded per block, in order. ``start``: the number of input rows before the first
# block (row numbers in the report count from the start of the input). Bad rows go to the report.
Encoder = Callable[[Iterable[data.Block], SkipReport, int], Iterable[Encoded]]


def encode_locally(hasher: Hasher, vectors: bool = False) -> Encoder:
    """The local encoder: blocks are read ahead in a background thread, checked and encoded in the caller's.
    ``vectors``: also give each good row's vector (models.rerank.rerank_vectors), from the same features."""

    def encode(blocks: Iterable[data.Block], report: SkipReport, start: int) -> Iterator[Encoded]:
        done = start
        for block in prefetch(blocks, depth=PIPELINE_DEPTH):
            good, features = _good_rows(block, hasher, report, done)
            codes = hasher.encode_features(features).codes if len(good) else None  # (m, n_bits // 8)
            kept = rerank_vectors(hasher.featurizer, features) if vectors and len(good) else None  # (m, d)
            ids, meta = [block.ids[i] for i in good], [block.metadata[i] for i in good]
            yield Encoded(ids, codes, meta, len(block), kept)
            done += len(block)

    return encode


def index_blocks(
    blocks: Iterable[data.Block],
    hasher: Hasher,
    collection: CollectionLike,
    *,
    total: int | None = None,
    progress: bool = True,
    strict: bool = False,
    report: SkipReport | None = None,
    job_key: str | None = None,
    start: int = 0,
    encoder: Encoder | None = None,
) -> IndexSummary:
    """Encode and upsert every block (skipping bad rows, see the module docstring), then save the collection.

    ``job_key``: record ``{"items": n}`` (n counts items read, ``start`` included) with each block's upsert, and
    ``{"items": n, "done": true}`` at the end. ``start``: the number of items before the first block (row numbers
    in the report count from the start of the input). ``encoder``: the check-and-encode stage (default
    :func:`encode_locally` with ``hasher``, giving vectors when the collection keeps them; an encoder that gives
    none writes items without vectors)."""
    report = report or SkipReport(strict=strict)
    encoder = encoder or encode_locally(hasher, vectors=getattr(collection, "vector_dtype", None) is not None)
    t0, n, done = time.perf_counter(), 0, start
    with progress_bar(total=total, initial=start, desc="indexing", enabled=progress, smoothing=0.1) as bar:

        def write(ids: list[str], codes: Any, meta: list[dict], record: Any, size: int, vectors: Any) -> None:
            if ids:
                collection.upsert(
                    ids, codes, meta, progress=record, **({} if vectors is None else {"vectors": vectors})
                )
            elif record is not None:
                collection.set_progress(*record)
            bar.update(size)  # counts committed items

        # three stages overlap: read (a thread) -> check + encode (the encoder) -> upsert (writer thread)
        with Worker(write, depth=PIPELINE_DEPTH, name="hamdex-bulk-writer") as writer:
            for block in encoder(blocks, report, start):
                record = None if job_key is None else (job_key, {"items": done + block.size})
                writer.submit(block.ids, block.codes, block.metadata, record, block.size, block.vectors)
                n += len(block.ids)
                done += block.size
    collection.save()
    if job_key is not None:
        collection.set_progress(job_key, {"items": done, "done": True})
    summary = IndexSummary(
        n,
        time.perf_counter() - t0,
        len(collection),
        report.skipped,
        report.reasons,
        report.examples,
        resumed_from=start,
        peak_rss_bytes=peak_rss_bytes(),
    )
    LOG.info(
        "indexed %d items in %.1fs (%.0f items/s), skipped %d", n, summary.seconds, summary.items_per_s, summary.skipped
    )
    return summary


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process: VmHWM from /proc (Linux), else None. (``ru_maxrss`` would start at
    the peak of the process that forked this one.)"""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024  # kB


def _good_rows(block: data.Block, hasher: Hasher, report: SkipReport, offset: int) -> tuple[np.ndarray, Any]:
    """(indices, features) of the block's rows that can be indexed; the others are reported (or raise, when
    strict)."""
    ok = np.ones(len(block), dtype=bool)
    for i, item_id in enumerate(block.ids):
        if not isinstance(item_id, str) or not item_id.strip():
            report.add("bad_id", "missing or empty id", offset + i, None)
            ok[i] = False
    good = np.flatnonzero(ok)
    if not len(good):
        return good, None
    try:
        return good, hasher.features(_take(block.inputs, good))
    except InputError:
        pass  # find the bad rows: featurize one at a time (only for a failing block)
    keep = []
    for i in good.tolist():
        try:
            hasher.features(_take(block.inputs, np.array([i])))
        except InputError as err:
            report.add(err.error_type, str(err), offset + i, block.ids[i])
            continue
        keep.append(i)
    keep = np.asarray(keep, dtype=np.int64)
    return keep, hasher.features(_take(block.inputs, keep)) if len(keep) else None


def _take(inputs: list | np.ndarray, rows: np.ndarray) -> list | np.ndarray:
    return inputs[rows] if isinstance(inputs, np.ndarray) else [inputs[i] for i in rows.tolist()]


def job_key(
    path: str | Path, batch_size: int, limit: int | None, fingerprint: str, columns: Sequence[str] | None = None
) -> str:
    """What identifies a bulk job: the input (absolute path, size, mtime), batch size, limit, model and the names
    given to a header-less CSV's columns (only when given: the keys of jobs without them are unchanged)."""
    path = Path(path).resolve()
    stat = path.stat()
    parts = [str(path), stat.st_size, stat.st_mtime_ns, batch_size, limit, fingerprint]
    raw = json.dumps(parts if columns is None else [*parts, list(columns)])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def index_file(
    path: str | Path,
    hasher: Hasher,
    collection: CollectionLike,
    *,
    batch_size: int = 4096,
    limit: int | None = None,
    progress: bool = True,
    strict: bool = False,
    restart: bool = False,
    encoder: Encoder | None = None,
    columns: Sequence[str] | None = None,
) -> IndexSummary:
    """Index a file or folder, resuming an interrupted run of the same job (see the module docstring).
    ``encoder``: as for :func:`index_blocks`; ``columns``: a header-less CSV's column names (models.data)."""
    key = job_key(path, batch_size, limit, hasher.fingerprint, columns)
    record = None if restart else collection.progress(key)
    if isinstance(record, dict) and record.get("done"):
        LOG.info("job %s already done (%s items)", key, record.get("items"))
        return IndexSummary(0, 0.0, len(collection), already_done=True, resumed_from=int(record.get("items", 0)))
    start = int(record["items"]) if isinstance(record, dict) else 0
    if start:
        LOG.info("resuming job %s after %d items", key, start)
    total = data.count_items(path)
    total = min(total, limit) if total is not None and limit is not None else total or limit
    report = SkipReport(strict=strict)
    on_error = None if strict else report.on_read_error
    blocks = data.iter_blocks(path, batch_size, limit=limit, on_error=on_error, columns=columns)
    return index_blocks(
        _skip_items(blocks, start),
        hasher,
        collection,
        total=total,
        progress=progress,
        report=report,
        job_key=key,
        start=start,
        encoder=encoder,
    )


def _skip_items(blocks: Iterable[data.Block], n: int) -> Iterator[data.Block]:
    """Drop the first ``n`` items (read, not yielded)."""
    for block in blocks:
        if n >= len(block):
            n -= len(block)
            continue
        yield block if n == 0 else _slice(block, n, len(block))
        n = 0


def _slice(block: data.Block, start: int, end: int) -> data.Block:
    return data.Block(
        block.ids[start:end], block.inputs[start:end], block.labels[start:end], block.metadata[start:end], block.kind
    )


def split_block(block: data.Block, size: int) -> Iterable[data.Block]:
    """An in-memory block -> blocks of at most ``size`` items (for progress and bounded encode batches)."""
    for start in range(0, len(block.ids), size):
        yield _slice(block, start, start + size)


# ---- shared with the HTTP bulk endpoint (service.routes.bulk) and its client (service.bulk.client) -----------------

skip_items = _skip_items


def good_rows(ids: list, inputs: list, rows: list[int], hasher: Hasher, report: SkipReport) -> tuple[np.ndarray, Any]:
    """:func:`_good_rows` for rows that are not a data.Block (an HTTP bulk block: texts and vectors as sent, maybe
    mixed); ``rows`` gives each row's number for the report."""
    return _good_rows(_Rows(ids, inputs), hasher, _Renumbered(report, rows), 0)


@dataclass(frozen=True)
class _Rows:
    """What :func:`_good_rows` reads of a block."""

    ids: list
    inputs: list

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _Renumbered:
    """A SkipReport whose ``row`` arguments are positions in ``rows``."""

    report: SkipReport
    rows: list[int]

    def add(self, error_type: str, message: str, row: int | None = None, id: str | None = None) -> None:
        self.report.add(error_type, message, None if row is None else self.rows[row], id)
