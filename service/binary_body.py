"""Binary request and response bodies of POST /v1/encode (docs/encode.md): arrays as raw bytes instead of JSON.

Request bodies, by ``Content-Type``:

- ``application/octet-stream``: the values, row-major, little-endian, with ``X-Hamdex-Shape: 256,784`` (items
  first; 2 to 4 axes, as ``inputs_b64``) and ``X-Hamdex-Dtype: float32`` (or ``float16``, ``uint8``).
- ``application/x-npy``: a NumPy ``.npy`` file (``np.save``); shape and dtype come from its header, read with
  ``numpy.lib.format``'s header readers (a literal, never a pickle: an object dtype is refused, never loaded).

Both become an array with ``np.frombuffer`` (no copy of the body) that goes through the same featurizer checks as a
JSON body (shape, finite values, pixel range). Responses: packed codes, ``n_bits // 8`` bytes per item in the bit
order of models.bits, when the request's ``Accept`` names ``application/octet-stream`` and not JSON.
"""

from __future__ import annotations

import io
import math

import numpy as np
from hamdex.service.errors import ApiError
from numpy.lib import format as npy_format

OCTET = "application/octet-stream"
NPY = "application/x-npy"
JSON = "application/json"
SHAPE_HEADER = "x-hamdex-shape"
DTYPE_HEADER = "x-hamdex-dtype"
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "uint8": np.dtype("u1")}
MAX_AXES = 4  # [items, dim] or [items, height, width(, channels)], as PackedVectors
MAX_NPY_HEADER = 10_000  # numpy's own default bound on a header's literal


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; no header: JSON (FastAPI's default)."""
    return (content_type or JSON).split(";", 1)[0].strip().lower() or JSON


def wants_packed(accept: str | None) -> bool:
    """Whether ``Accept`` asks for packed codes: it names application/octet-stream and not application/json
    (``*/*``, a client's default, gets JSON)."""
    if not accept:
        return False
    types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return OCTET in types and JSON not in types


def read_octet(body: bytes, shape_header: str | None, dtype_header: str | None) -> np.ndarray:
    """An ``application/octet-stream`` body -> a read-only array view of it, of the headers' shape and dtype."""
    dtype = DTYPES.get((dtype_header or "").strip().lower())
    if dtype is None:
        raise ApiError(
            "input_dtype",
            f"X-Hamdex-Dtype {dtype_header!r}: send one of {', '.join(DTYPES)} with an application/octet-stream body",
        )
    return _view(body, _parse_shape(shape_header), dtype, 0)


def read_npy(body: bytes) -> np.ndarray:
    """An ``application/x-npy`` body -> an array view of its data (native byte order and C order, copied only when
    the file is big-endian or Fortran-ordered)."""
    fp = io.BytesIO(body)
    try:
        version = npy_format.read_magic(fp)
        if version not in ((1, 0), (2, 0), (3, 0)):  # 3.0 differs from 2.0 in allowing UTF-8 field names only
            raise ValueError(f"npy format version {version} is not supported")
        reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran, dtype = reader(fp, max_header_size=MAX_NPY_HEADER)
    except (ValueError, SyntaxError, EOFError, TypeError) as exc:  # what numpy raises for a bad or cut header
        raise ApiError("invalid_input", f"the body is not a valid .npy file: {exc}") from exc
    if dtype.hasobject or dtype.fields is not None or dtype.newbyteorder("<") not in DTYPES.values():
        raise ApiError("input_dtype", f"a .npy of dtype {dtype.str!r}: send float32, float16 or uint8")
    _check_shape(tuple(shape))
    arr = _view(body, tuple(shape[::-1]) if fortran else tuple(shape), dtype, fp.tell())
    if fortran:
        arr = np.ascontiguousarray(arr.T)
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def _parse_shape(header: str | None) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in (header or "").split(","))
    except ValueError:
        raise ApiError(
            "invalid_header", f"X-Hamdex-Shape {header!r}: send the array's shape as integers, e.g. '256,784'"
        ) from None
    _check_shape(shape)
    return shape


def _check_shape(shape: tuple[int, ...]) -> None:
    if not 2 <= len(shape) <= MAX_AXES or any(n < 1 for n in shape[1:]) or shape[0] < 0:
        raise ApiError("input_shape", f"shape {list(shape)}: [items, dim] or [items, height, width(, channels)]")


def _view(body: bytes, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod would wrap around for huge shapes
    if len(body) - offset != expected:
        raise ApiError(
            "input_shape", f"the body holds {len(body) - offset} bytes of data; shape {list(shape)} of {dtype} needs "
            f"{expected}"
        )  # fmt: skip
    return np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
