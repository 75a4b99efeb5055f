"""NDJSON bodies of the bulk endpoint, both directions: the route (service.routes.bulk) splits a streamed body into
lines of bounded length and parses each into a row; the client (service.bulk.client) writes a block's items as
lines (:func:`block_lines`).

A row is one JSON object per line: ``{"id": str, "input": <text or list of numbers>}`` or ``{"id": str,
"input_b64": <base64 of one vector as little-endian float32>}``, with an optional ``"metadata": {...}``; ``"text"``
(a string) and ``"vector"`` (a list of numbers), the data files' names (models.data), are taken for ``"input"``.
A bad line raises :class:`BadLine` carrying the reason the bulk job's skip report counts it under
(service.bulk.job.SkipReport): ``data_format`` (not JSON, not an object, unknown fields, not exactly one input),
``undecodable``,
``line_too_long``, ``bad_id`` (too long, or holding U+0000 or a lone surrogate), ``input_type`` (a null input
too: null is not "absent"), ``invalid_input`` (bad base64), ``input_shape``, ``non_finite``, ``text_too_long``,
``invalid_metadata`` (would not read back: a lone surrogate, nesting deeper than
index.validation.MAX_METADATA_DEPTH), ``metadata_too_large``. A missing or empty id is left to service.bulk.job
(``bad_id``). A line nested too deep to parse at all is ``data_format``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from hamdex.index.validation import metadata_problem
from hamdex.models.data import Block
from hamdex.service.deps import metadata_bytes
from hamdex.service.schemas import MAX_ID_CHARS, check_item_id
from hamdex.service.settings import Settings

MEDIA_TYPE = "application/x-ndjson"
FIELDS = frozenset({"id", "input", "input_b64", "text", "vector", "metadata"})
INPUTS = ("input", "input_b64", "text", "vector")  # exactly one: text and vector are the data files' names
_LONG_DIGITS = re.compile(r"\d{19}")


class BadLine(ValueError):
    def __init__(self, reason: str, message: str, item_id: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.id = reason, item_id


@dataclass(frozen=True)
class Row:
    id: Any  # as sent: service.bulk.job reports a missing or empty one
    input: str | np.ndarray  # a text, or float32 numbers
    metadata: dict | None


async def split_lines(chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[list[bytes | None]]:
    """The complete lines of each chunk, without their newline; blank lines are dropped. A line longer than
    ``max_line`` bytes comes as None, once it has ended, and is never buffered past the limit. The last line needs
    no newline."""
    pending = bytearray()  # the start of a line that a later chunk ends
    too_long = False  # the pending line is over the limit: its bytes are dropped until it ends
    async for chunk in chunks:
        lines: list[bytes | None] = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            if too_long or len(pending) + len(piece) > max_line:
                lines.append(None)
            else:
                lines.append(bytes(pending + piece) if pending else piece)
            pending.clear()
            too_long = False
            start = end + 1
        rest = chunk[start:]
        if too_long or len(pending) + len(rest) > max_line:
            too_long = True
            pending.clear()
        else:
            pending += rest
        lines = [line for line in lines if line is None or line.strip()]
        if lines:
            yield lines
    if too_long:
        yield [None]
    elif pending.strip():
        yield [bytes(pending)]


def parse_line(line: bytes | None, settings: Settings) -> Row:
    """One line (None: too long) -> a Row, or :class:`BadLine`."""
    if line is None:
        raise BadLine("line_too_long", f"line is longer than {settings.max_bulk_line_bytes} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine("undecodable", "line is not valid UTF-8") from exc
    record, checked = _loads(text)
    if not isinstance(record, dict):
        raise BadLine("data_format", f"expected a JSON object, got {type(record).__name__}")
    item_id = record.get("id")
    known_id = _check_id(item_id) if isinstance(item_id, str) else None
    unknown = sorted(set(record) - FIELDS)
    if unknown:
        raise BadLine("data_format", f"unknown fields {unknown}; a row has id, input or input_b64, metadata", known_id)
    given = [name for name in INPUTS if name in record]  # null is given, and not an input
    if len(given) != 1:
        raise BadLine("data_format", "a row needs exactly one of 'input', 'input_b64', 'text' or 'vector'", known_id)
    try:
        value = _unpack(record["input_b64"]) if given[0] == "input_b64" else _input(record[given[0]], settings)
        if given[0] != "input" and isinstance(value, str) != (given[0] == "text"):
            raise BadLine("input_type", f"'{given[0]}' must be a {'text' if given[0] == 'text' else 'list of numbers'}")
        metadata = _metadata(record.get("metadata"), settings, checked)
    except BadLine as bad:
        bad.id = known_id
        raise
    return Row(item_id, value, metadata)


def _loads(text: str) -> tuple[Any, bool]:
    """(the parsed line, whether orjson parsed it: then it holds no lone surrogate). orjson is fast but reads an
    integer beyond 64 bits as a float (1e+30), which the items route would store exactly: a line with a run of 19
    digits, where such an integer may hide, goes to the json module, as do NaN, Infinity and lone surrogates."""
    try:
        if not _LONG_DIGITS.search(text):
            return orjson.loads(text), True
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text), False
    except ValueError as exc:
        raise BadLine("data_format", f"line is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # nested deeper than the json module's recursion allows
        raise BadLine("data_format", "line is nested too deeply to parse") from exc


def _check_id(item_id: str) -> str:
    """``item_id`` if it can be stored; else BadLine ``bad_id``, carrying the id shortened and with any lone
    surrogate escaped (the report goes back as JSON)."""
    if len(item_id) > MAX_ID_CHARS:
        short = _printable(item_id[:40]) + "..."
        raise BadLine("bad_id", f"id has {len(item_id)} characters; at most {MAX_ID_CHARS}", short)
    try:
        return check_item_id(item_id)
    except ValueError as exc:
        raise BadLine("bad_id", str(exc), _printable(item_id)) from None


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _input(value: Any, settings: Settings) -> str | np.ndarray:
    if isinstance(value, str):
        if len(value) > settings.max_text_chars:
            raise BadLine("text_too_long", f"text has {len(value)} characters; at most {settings.max_text_chars}")
        return value
    if not isinstance(value, list):
        raise BadLine("input_type", f"'input' must be a text or a list of numbers, got {type(value).__name__}")
    try:
        with np.errstate(over="ignore"):  # beyond float32: infinite, reported as non_finite
            return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadLine("input_type", "'input' is not a list of numbers (or of equal-length rows of numbers)") from exc


def _unpack(value: Any) -> np.ndarray:
    if not isinstance(value, str):
        raise BadLine("input_type", f"'input_b64' must be a base64 string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadLine("invalid_input", f"'input_b64' is not valid base64: {exc}") from exc
    if not raw or len(raw) % 4:
        raise BadLine("input_shape", f"'input_b64' holds {len(raw)} bytes: not a whole number of float32 values")
    return np.frombuffer(raw, dtype="<f4")


def _metadata(meta: Any, settings: Settings, checked: bool) -> dict | None:
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise BadLine("data_format", f"'metadata' must be an object, got {type(meta).__name__}")
    problem = metadata_problem(meta)
    if problem is not None:
        raise BadLine("invalid_metadata", f"'metadata' {problem}")
    if not checked:  # parsed by the json module: may hold NaN, which the collection refuses to store
        try:
            json.dumps(meta, allow_nan=False)
        except ValueError as exc:
            raise BadLine("non_finite", "'metadata' holds NaN or infinite numbers") from exc
    size, limit = metadata_bytes(meta), settings.max_metadata_bytes
    if size > limit:
        raise BadLine("metadata_too_large", f"metadata is {size} bytes as JSON; at most {limit}")
    return meta


def block_lines(block: Block) -> Iterator[bytes]:
    """The writer: one line per item of ``block``, as :func:`parse_line` reads it back: texts as "input", vectors
    and images as "input_b64" (flat little-endian float32)."""
    if block.kind == "text":
        inputs: Iterable[dict] = ({"input": text} for text in block.inputs)
    else:
        flat = np.ascontiguousarray(np.asarray(block.inputs).reshape(len(block), -1), dtype="<f4")
        inputs = ({"input_b64": base64.b64encode(row.tobytes()).decode("ascii")} for row in flat)
    for item_id, given, metadata in zip(block.ids, inputs, block.metadata, strict=True):
        row = {"id": item_id, **given, **({"metadata": metadata} if metadata else {})}
        try:
            line = orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # e.g. an integer beyond 64 bits, or a text with undecodable bytes
            line = json.dumps(row, default=str).encode()
        yield line + b"\n"
