import base64

import numpy as np
import pytest
from hamdex.models import bits


@pytest.mark.parametrize("n_bits", [8, 16, 64, 256])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_pack_unpack_round_trip(n_bits, n):
    b = np.random.default_rng(n_bits + n).integers(0, 2, size=(n, n_bits), dtype=np.uint8)
    codes = bits.pack(b)
    assert codes.dtype == np.uint8 and codes.shape == (n, n_bits // 8)
    np.testing.assert_array_equal(bits.unpack(codes), b)


def test_documented_bit_order():
    b = np.zeros((1, 16), np.uint8)
    b[0, 0] = 1  # bit 0 -> byte 0, least significant bit
    b[0, 9] = 1  # bit 9 -> byte 1, value 2
    np.testing.assert_array_equal(bits.pack(b)[0], [1, 2])
    assert bits.to_wire(bits.pack(b)[0], "hex") == "0102"


@pytest.mark.parametrize("n_bits", [0, 12, -8])
def test_pack_rejects_partial_bytes(n_bits):
    with pytest.raises(ValueError):
        bits.pack(np.zeros((1, max(n_bits, 0)), np.uint8)) if n_bits >= 0 else bits.check_n_bits(n_bits)


def test_hamming_matches_bit_count():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, (5, 64)), rng.integers(0, 2, (4, 64))
    expected = (a[:, None, :] != b[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(bits.hamming(bits.pack(a), bits.pack(b)), expected)


@pytest.mark.parametrize("fmt", ["hex", "base64", "bits"])
@pytest.mark.parametrize("n_bits", [16, 32, 256])
def test_wire_round_trip(fmt, n_bits):
    code = bits.pack(np.random.default_rng(n_bits).integers(0, 2, (1, n_bits)))[0]
    np.testing.assert_array_equal(bits.from_wire(bits.to_wire(code, fmt), n_bits), code)


def test_wire_forms():
    code = np.array([0xAB, 0x01], np.uint8)
    assert bits.to_wire(code, "hex") == "ab01"
    assert bits.to_wire(code, "base64") == base64.b64encode(b"\xab\x01").decode()
    assert bits.to_wire(code, "bits") == [1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "value",
    [
        "zz",
        "abcdef",
        "ab",
        "!!!!",
        base64.b64encode(b"\x00\x01\x02\x03\x04").decode(),
        [0, 1],
        [2] * 16,
        [True] * 16,
        5,
    ],
)
def test_from_wire_rejects(value):
    with pytest.raises(bits.CodeFormatError):
        bits.from_wire(value, 16)
