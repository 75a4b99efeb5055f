"""Bulk encoding on a Ray cluster (``hamdex index --ray``): the encode stage of the bulk job, on Ray Data.

The driver (the ``hamdex index`` process) reads the input with the same readers and the same lenient bad-row
reporting as the local job, and writes into the collection with the same resumable progress records
(``service.bulk.job.index_file`` / ``index_blocks`` with a :class:`RayEncoder` as their encoder). Only the
check-and-encode stage runs on the cluster:

1. A feeder thread in the driver reads blocks, drops rows with a bad id (reported later, in order), puts each
   block's ``row`` numbers and ``input`` column in the object store, and hands the reference to a bounded queue
   (a small Ray actor, ``QUEUE_BLOCKS`` blocks deep). The ids and metadata stay in the driver.
2. The dataset has one read task (no CPU) that takes the blocks from that queue, so the input streams through
   the cluster instead of being loaded first; ``map_batches`` runs :class:`EncodeActor` on a fixed pool of actors,
   one GPU each when the cluster has GPUs (``--device auto``), else one CPU each. Each actor loads the checkpoint
   once, from its files shipped through the object store: the workers need hamdex installed, not the checkpoint
   path. An actor returns per row the packed code, or the reason the row is bad.
3. The driver iterates the results in input order (``preserve_order``), matches them with the pending blocks'
   ids and metadata, reports the bad rows, and the bulk job upserts each block with its progress record.

Memory: the driver holds the blocks between reading and writing (the queue's depth plus what Ray Data has in
flight, which its backpressure bounds), the object store holds the blocks in flight, never the whole input.
The codes are those of the local job: the same checkpoint, featurizer and bit packing, applied row by row.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
from hamdex.models import checkpoint, data
from hamdex.service.bulk import job
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.util.queue import Full, Queue

LOG = logging.getLogger(__name__)
QUEUE_BLOCKS = 4  # blocks the feeder may be ahead of the cluster's read task
BLOCK_BYTES = 1 << 20  # the size Ray Data cuts the streamed input into (then batched by --batch-size rows)
_POLL_S = 0.2  # how often a blocked feeder checks whether the job was stopped
_END = None  # the queue's end marker


class RayJobError(Exception):
    """The job cannot run on Ray as asked (no GPU for --device cuda, a bad --ray-actors, lost rows)."""


@dataclass(frozen=True)
class Cluster:
    """What the job runs on: the actors' device, how many, and the Ray resources each asks for."""

    device: str  # "cuda" or "cpu"
    actors: int
    resources: dict[str, float]

    def describe(self) -> str:
        return f"{self.actors} {self.device.upper()} actor{'s' if self.actors != 1 else ''}"


@contextlib.contextmanager
def connect(address: str | None = None) -> Iterator[None]:
    """Attach to the Ray cluster at ``address`` ("auto", "ray://head:10001"), or start a local instance on this
    machine's cores when None (unless this process is attached already). A local instance started here is
    shut down on exit."""
    started = False
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            ray.init(address=address, **quiet)
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a one-off local instance
            ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, **quiet)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def plan(device: str = "auto", actors: int | None = None) -> Cluster:
    """GPU actors (one GPU each) when the cluster has GPUs and ``device`` allows, else CPU actors (one core
    each); by default as many actors as GPUs, or as CPUs."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device.startswith("cuda") and not gpus:
        raise RayJobError("--device cuda was asked for, but the Ray cluster has no GPU")
    if actors is not None and actors < 1:
        raise RayJobError(f"--ray-actors must be >= 1, got {actors}")
    if gpus and device in ("auto", "cuda"):
        return Cluster("cuda", actors or gpus, {"num_gpus": 1})
    if device not in ("auto", "cpu"):
        raise RayJobError(f"--device {device} does not apply to Ray actors: use auto, cpu or cuda")
    return Cluster("cpu", actors or max(1, cpus), {"num_cpus": 1})


def checkpoint_files(path: str | Path) -> dict[str, bytes]:
    """The checkpoint directory's files, to ship to the actors through the object store."""
    return {name: (Path(path) / name).read_bytes() for name in (checkpoint.WEIGHTS, checkpoint.META)}


class EncodeActor:
    """The ``map_batches`` callable: loads the checkpoint once per actor, then turns batches of ``row`` and
    ``input`` into ``row``, ``code`` (zeros for a bad row), ``error`` (its reason, "" when good) and ``message``."""

    def __init__(self, files: dict[str, bytes], fingerprint: str, device: str) -> None:
        with tempfile.TemporaryDirectory(prefix="hamdex-model-") as tmp:
            for name, raw in files.items():
                (Path(tmp) / name).write_bytes(raw)
            self.hasher = checkpoint.load(tmp, device)
        if self.hasher.fingerprint != fingerprint:
            raise checkpoint.CheckpointError(f"the actor loaded model {self.hasher.fingerprint}, not {fingerprint}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = batch["input"]
        inputs = inputs.tolist() if inputs.dtype.kind in "OUS" else inputs  # texts as a list of str
        n = len(batch["row"])
        errors = _RowErrors(n)
        # ids were checked in the driver: placeholders here, so only the inputs are checked
        good, features = job.good_rows(["-"] * n, inputs, list(range(n)), self.hasher, errors)
        codes = np.zeros((n, self.hasher.n_bits // 8), np.uint8)
        if len(good):
            codes[good] = self.hasher.encode_features(features).codes
        return {"row": batch["row"], "code": codes, "error": errors.types, "message": errors.messages}


class _RowErrors:
    """Collects :func:`service.bulk.job.good_rows`'s reports per row of a batch (SkipReport's ``add``)."""

    def __init__(self, n: int) -> None:
        self.types = np.full(n, "", dtype=object)
        self.messages = np.full(n, "", dtype=object)

    def add(self, error_type: str, message: str, row: int | None = None, id: str | None = None) -> None:
        self.types[row], self.messages[row] = error_type, message


@dataclass(frozen=True)
class _Pending:
    """A block on its way through the cluster: what the driver keeps of it."""

    ids: list[str]
    metadata: list[dict]
    offset: int  # its first row's number in the input
    sent: np.ndarray  # positions in the block of the rows sent (those with a good id)


class _QueueSource(Datasource):
    """A dataset whose one read task takes the driver's blocks from a Ray queue until the end marker."""

    def __init__(self, blocks: Queue) -> None:
        self._blocks = blocks

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, **_: Any) -> list[ReadTask]:
        meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(functools.partial(_drain, self._blocks), meta)]


def _drain(blocks: Queue) -> Iterator[Any]:
    while (item := blocks.get()) is not _END:
        yield ray.get(item[0])  # item: (ref,), so the queue passes the reference instead of the block


class _Feeder:
    """The driver's reading thread: blocks -> pending (kept here) and the queue (their rows and inputs)."""

    def __init__(self, blocks: Iterable[data.Block], report: job.SkipReport, start: int) -> None:
        self.queue = Queue(maxsize=QUEUE_BLOCKS, actor_options={"num_cpus": 0})
        self.pending: queue.Queue[_Pending | None] = queue.Queue()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(blocks, report, start), name="hamdex-ray-feeder", daemon=True
        )
        self._thread.start()

    def _run(self, blocks: Iterable[data.Block], report: job.SkipReport, offset: int) -> None:
        try:
            for block in blocks:
                sent = np.asarray([i for i, x in enumerate(block.ids) if isinstance(x, str) and x.strip()], np.int64)
                self.pending.put(_Pending(block.ids, block.metadata, offset, sent))
                if len(sent):
                    rows = {"row": offset + sent, "input": _inputs(block, sent)}
                    self._put((ray.put(BlockAccessor.batch_to_block(rows)),))
                offset += len(block)
                if self._stop.is_set():
                    return
        except BaseException as exc:  # a strict reader's error: raised in the driver after the blocks before it
            self.error = exc
        finally:
            self.pending.put(None)
            self._put(_END)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return
            except Full:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.queue.shutdown()


def _inputs(block: data.Block, rows: np.ndarray) -> np.ndarray:
    if block.kind == "text":
        return np.asarray([block.inputs[i] for i in rows.tolist()], dtype=object)
    return block.inputs[rows]


class _Results:
    """The dataset's output rows in input order, handed out ``n`` at a time."""

    def __init__(self, batches: Iterator[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self._buffer: list[dict[str, np.ndarray]] = []
        self._held = 0

    def take(self, n: int) -> dict[str, np.ndarray]:
        if n == 0:  # a block whose every row had a bad id
            return {"row": np.zeros(0, np.int64), "code": np.zeros((0, 0), np.uint8), "error": np.zeros(0, object)}
        while self._held < n:
            batch = next(self._batches, None)
            if batch is None:
                raise RayJobError(f"the cluster returned {self._held} of the {n} rows it was sent")
            self._buffer.append(batch)
            self._held += len(batch["row"])
        joined = {k: np.concatenate([b[k] for b in self._buffer]) for k in ("row", "code", "error", "message")}
        out = {k: v[:n] for k, v in joined.items()}
        rest = {k: v[n:] for k, v in joined.items()}
        self._buffer, self._held = ([rest] if len(rest["row"]) else []), len(rest["row"])
        return out


def _data_context() -> contextlib.AbstractContextManager:
    """Ray Data settings for the datasets created inside (a dataset keeps the context it was made in)."""
    with warnings.catch_warnings():  # copying sets every field, the deprecated ones too
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ray.data.DataContext.get_current().copy()
    ctx.execution_options.preserve_order = True  # results in input order
    ctx.enable_progress_bars = False  # the bulk job has its own
    ctx.print_on_execution_start = False
    # The read task's output is cut into blocks of this size: without it, Ray Data would merge the streamed
    # blocks up to 128 MiB before the actors see any, so small inputs would reach one actor in one piece.
    ctx.target_max_block_size = BLOCK_BYTES
    return ray.data.DataContext.current(ctx)


class RayEncoder:
    """A ``service.bulk.job.Encoder`` that encodes on a Ray cluster (see above). It attaches to the cluster (or starts
    a local instance) when the job starts encoding, so a finished job never starts Ray."""

    def __init__(
        self,
        model: str | Path,
        fingerprint: str,
        *,
        address: str | None = None,
        device: str = "auto",
        actors: int | None = None,
        batch_size: int = 4096,
    ) -> None:
        self.files = checkpoint_files(model)
        self.fingerprint = fingerprint
        self.address, self.device, self.actors = address, device, actors
        self.batch_size = batch_size

    def __call__(self, blocks: Iterable[data.Block], report: job.SkipReport, start: int) -> Iterator[job.Encoded]:
        # Ray Data counts the one read task as the actors' only input; its blocks do reach every actor
        warnings.filterwarnings("ignore", "The minimum number of concurrent actors", UserWarning)
        with connect(self.address):
            cluster = plan(self.device, self.actors)
            LOG.info("encoding on Ray with %s", cluster.describe())
            feeder = _Feeder(blocks, report, start)
            batches = iter(self._dataset(feeder.queue, cluster).iter_batches(batch_size=None, batch_format="numpy"))
            try:
                results = _Results(batches)
                while (block := feeder.pending.get()) is not None:
                    yield self._encoded(block, results.take(len(block.sent)), report)
                if feeder.error is not None:
                    raise feeder.error
            finally:
                if hasattr(batches, "close"):  # stops the dataset's execution when the job stops early
                    batches.close()
                feeder.close()

    def _dataset(self, blocks: Queue, cluster: Cluster) -> ray.data.Dataset:
        with _data_context():
            return ray.data.read_datasource(_QueueSource(blocks), override_num_blocks=1, num_cpus=0).map_batches(
                EncodeActor,
                batch_size=self.batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=cluster.actors),
                fn_constructor_kwargs={"files": self.files, "fingerprint": self.fingerprint, "device": cluster.device},
                **cluster.resources,
            )

    @staticmethod
    def _encoded(block: _Pending, out: dict[str, np.ndarray], report: job.SkipReport) -> job.Encoded:
        """Report the block's bad rows in the local job's order (ids first, then inputs) and keep the good ones."""
        expected = block.offset + block.sent
        if not np.array_equal(out["row"], expected):
            raise RayJobError(f"Ray returned rows {out['row'][:5]}... for a block of rows {expected[:5]}...")
        for i in sorted(set(range(len(block.ids))) - set(block.sent.tolist())):
            report.add("bad_id", "missing or empty id", block.offset + i, None)
        good = []
        for j, i in enumerate(block.sent.tolist()):
            if out["error"][j]:
                report.add(out["error"][j], out["message"][j], block.offset + i, block.ids[i])
            else:
                good.append(j)
        ids = [block.ids[block.sent[j]] for j in good]
        meta = [block.metadata[block.sent[j]] for j in good]
        codes = np.ascontiguousarray(out["code"][good]) if good else None
        return job.Encoded(ids, codes, meta, len(block.ids))
