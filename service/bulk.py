"""The bulk indexing job: blocks of raw items -> encoder -> collection, with a progress bar and a summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from index import Collection
from models import data
from models.hasher import Hasher

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexSummary:
    items: int
    seconds: float
    collection_count: int

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def index_blocks(
    blocks: Iterable[data.Block],
    hasher: Hasher,
    collection: Collection,
    *,
    total: int | None = None,
    progress: bool = True,
) -> IndexSummary:
    """Encode and upsert every block, then save the collection once."""
    t0, n = time.perf_counter(), 0
    with tqdm(total=total, unit="item", desc="indexing", disable=not progress, smoothing=0.1) as bar:
        for block in blocks:
            codes = hasher.encode(block.inputs).codes  # (n, n_bits // 8)
            collection.upsert(block.ids, codes, block.metadata)
            n += len(block.ids)
            bar.update(len(block.ids))
    collection.save()
    summary = IndexSummary(n, time.perf_counter() - t0, len(collection))
    LOG.info("indexed %d items in %.1fs (%.0f items/s)", n, summary.seconds, summary.items_per_s)
    return summary


def index_file(
    path: str | Path,
    hasher: Hasher,
    collection: Collection,
    *,
    batch_size: int = 4096,
    limit: int | None = None,
    progress: bool = True,
) -> IndexSummary:
    total = data.count_items(path)
    total = min(total, limit) if total is not None and limit is not None else total or limit
    blocks = data.iter_blocks(path, batch_size, limit=limit)
    return index_blocks(blocks, hasher, collection, total=total, progress=progress)


def split_block(block: data.Block, size: int) -> Iterable[data.Block]:
    """An in-memory block -> blocks of at most ``size`` items (for progress and bounded encode batches)."""
    for start in range(0, len(block.ids), size):
        end = start + size
        yield data.Block(
            block.ids[start:end],
            block.inputs[start:end],
            block.labels[start:end],
            block.metadata[start:end],
            block.kind,
        )
