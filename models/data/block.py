"""The :class:`Block` every reader yields, the errors readers raise, and helpers the readers share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Kind = Literal["text", "vector", "image"]


class DataFormatError(ValueError):
    """The input data is malformed or in a format we do not read. ``reason`` says why a bad row is bad
    (``non_finite``, ``input_shape``, ``input_type``, ``undecodable``; else ``data_format``), for skip reports."""

    error_type = "data_format"

    def __init__(self, message: str, reason: str = "data_format") -> None:
        super().__init__(message)
        self.reason = reason


class DataNotFoundError(FileNotFoundError):
    """The input data (or the demo corpus) does not exist where we were told to look."""

    error_type = "data_not_found"


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make the generated __eq__ ambiguous
class Block:
    """A block of items: external ids, inputs, optional labels and per-item JSON metadata."""

    ids: list[str]
    inputs: list[str] | np.ndarray  # texts, float32 (n, d) vectors or uint8 (n, h, w) images
    labels: list[str | None]
    metadata: list[dict]  # "label" included when the item has one
    kind: Kind

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.inputs) == len(self.labels) == len(self.metadata) == n):
            raise ValueError(
                f"block fields differ in length: ids {n}, inputs {len(self.inputs)}, "
                f"labels {len(self.labels)}, metadata {len(self.metadata)}"
            )
        if not _inputs_fit(self.inputs, self.kind):
            got = getattr(self.inputs, "dtype", type(self.inputs).__name__), getattr(self.inputs, "shape", "")
            raise ValueError(f"kind {self.kind!r} needs {KIND_INPUTS.get(self.kind, 'a known kind')}, got {got}")

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> Block:
        """The first ``n`` items."""
        return Block(self.ids[:n], self.inputs[:n], self.labels[:n], self.metadata[:n], self.kind)


KIND_INPUTS = {
    "text": "a list of texts",
    "vector": "float32 (n, d) vectors",
    "image": "uint8 (n, h, w) images",
}


def _inputs_fit(inputs: object, kind: str) -> bool:
    if kind == "text":
        return isinstance(inputs, list)
    dtype, ndim = {"vector": (np.float32, 2), "image": (np.uint8, 3)}.get(kind, (None, None))
    return isinstance(inputs, np.ndarray) and inputs.dtype == dtype and inputs.ndim == ndim


def concat_blocks(blocks: Iterable[Block]) -> Block:
    """Concatenate blocks of one kind (and one vector/image shape) into one."""
    blocks = list(blocks)
    if not blocks:
        raise ValueError("no blocks to concatenate")
    kinds = {b.kind for b in blocks}
    if len(kinds) > 1:
        raise DataFormatError(f"cannot concatenate blocks of different kinds: {sorted(kinds)}")
    kind = blocks[0].kind
    if kind == "text":
        inputs: list[str] | np.ndarray = [t for b in blocks for t in b.inputs]
    else:
        shapes = {b.inputs.shape[1:] for b in blocks}
        if len(shapes) > 1:
            raise DataFormatError(f"cannot concatenate {kind} blocks of different shapes: {sorted(shapes)}")
        inputs = np.concatenate([b.inputs for b in blocks])
    return Block(
        ids=[i for b in blocks for i in b.ids],
        inputs=inputs,
        labels=[lab for b in blocks for lab in b.labels],
        metadata=[m for b in blocks for m in b.metadata],
        kind=kind,
    )


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such file or directory")
    return path


def _labelled_block(ids: list[str], inputs: list[str] | np.ndarray, labels: list[str | None], kind: Kind) -> Block:
    metadata = [{} if label is None else {"label": label} for label in labels]
    return Block(ids, inputs, labels, metadata, kind)


def _folder_item_id(label: str | None, file: Path) -> str:
    """An item's id in a folder: ``label/file``, or the file's name where there are no label folders."""
    return file.name if label is None else f"{label}/{file.name}"


def _check_finite(vectors: np.ndarray, where: str) -> None:
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise DataFormatError(f"{where}: vector at row {row} has NaN or infinite values", "non_finite")


def _parse_label(value: Any) -> str | None:
    # csv cannot say null: an empty cell means "no label".
    return None if value is None or value == "" else str(value)
