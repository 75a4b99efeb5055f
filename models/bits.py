"""The one place where bits become bytes.

Bit order (used by every code on the wire and on disk): bit ``j`` of an ``n_bits`` code lives in byte ``j // 8``
at bit position ``j % 8`` counting from the least significant bit (NumPy's ``bitorder="little"``). A code of
``n_bits`` is ``uint8 (n_bits // 8,)``; a batch is ``uint8 (n, n_bits // 8)``. FAISS binary indexes compare codes
byte-wise with popcount, so any fixed order gives the same Hamming distances; this one makes ``hex`` of a code read
as the little-endian bytes of the bit vector.

Wire forms: ``hex`` (lower-case, 2 chars per byte), ``base64`` (standard alphabet, padded), ``bits`` (list of 0/1
in bit index order).
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import numpy as np

CodeFormat = Literal["hex", "base64", "bits"]
BIT_ORDER = "little"
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


class CodeFormatError(ValueError):
    """A code on the wire is malformed or has the wrong length."""


def check_n_bits(n_bits: int) -> None:
    """Codes are whole bytes: n_bits must be a positive multiple of 8."""
    if n_bits <= 0 or n_bits % 8:
        raise ValueError(f"n_bits must be a positive multiple of 8, got {n_bits}")


def pack(bits: np.ndarray) -> np.ndarray:
    """Bool/0-1 array (n, n_bits) -> uint8 (n, n_bits // 8) in the documented bit order."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"expected a 2-d array of bits, got shape {bits.shape}")
    check_n_bits(bits.shape[1])
    return np.packbits(bits.astype(bool), axis=1, bitorder=BIT_ORDER)


def unpack(codes: np.ndarray) -> np.ndarray:
    """uint8 (n, n_bytes) -> uint8 0/1 array (n, n_bytes * 8); inverse of :func:`pack`."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"expected uint8 (n, n_bytes) codes, got {codes.dtype} {codes.shape}")
    return np.unpackbits(codes, axis=1, bitorder=BIT_ORDER)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between packed codes: (n, B) x (m, B) -> int32 (n, m)."""
    xor = np.bitwise_xor(a[:, None, :], b[None, :, :])  # (n, m, B)
    return np.bitwise_count(xor).sum(axis=2, dtype=np.int32)


def to_wire(code: np.ndarray, fmt: CodeFormat) -> str | list[int]:
    """One packed code uint8 (n_bytes,) -> its wire form."""
    raw = np.asarray(code, dtype=np.uint8).tobytes()
    if fmt == "hex":
        return raw.hex()
    if fmt == "base64":
        return base64.b64encode(raw).decode("ascii")
    if fmt == "bits":
        return unpack(np.frombuffer(raw, dtype=np.uint8)[None, :])[0].tolist()
    raise ValueError(f"unknown code format {fmt!r}")


def from_wire(value: str | list[int], n_bits: int) -> np.ndarray:
    """A wire code (hex, base64 or 0/1 list) -> packed uint8 (n_bits // 8,).

    A string of exactly ``n_bits // 4`` hex digits is read as hex, any other string as base64; a list as bits.
    Raises :class:`CodeFormatError` for anything malformed or of the wrong length.
    """
    n_bytes = n_bits // 8
    if isinstance(value, list):
        if len(value) != n_bits or any(v not in (0, 1) or isinstance(v, bool) for v in value):
            raise CodeFormatError(f"a bit list must hold exactly {n_bits} values of 0 or 1")
        return pack(np.asarray(value, dtype=np.uint8)[None, :])[0]
    if not isinstance(value, str):
        raise CodeFormatError("a code must be a hex or base64 string, or a list of bits")
    raw = _decode_string(value, n_bytes)
    if len(raw) != n_bytes:
        raise CodeFormatError(f"code has {len(raw) * 8} bits, this collection uses {n_bits}")
    return np.frombuffer(raw, dtype=np.uint8).copy()


def _decode_string(value: str, n_bytes: int) -> bytes:
    if len(value) == 2 * n_bytes or (len(value) % 2 == 0 and _HEX_CHARS.issuperset(value) and value):
        try:
            return bytes.fromhex(value)  # a hex string of another length is reported as a wrong length
        except ValueError:
            pass  # not hex: may still be base64
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodeFormatError(f"code is neither {2 * n_bytes} hex digits nor valid base64") from exc
