"""How well codes use their bits (code health), and Hamming distances block by block; no labels needed, so
training (``models.probe``, ``models.safeguard``) and evaluation (``evaluation.metrics`` re-exports
``code_health``) share them."""

from __future__ import annotations

import numpy as np
from hamdex.models.bits import unpack


def code_health(codes: np.ndarray, block_size: int = 65536) -> dict[str, float]:
    """Summary of how well a code uses its bits.

    - ``bit_balance``: mean over bits of ``|p_j - 0.5| * 2`` (0: every bit on half the time, 1: constant).
    - ``mean_abs_bit_correlation``: mean |Pearson correlation| over distinct bit pairs; a pair with a constant
      bit counts as 0 (its correlation is undefined).
    - ``distinct_code_fraction``: number of distinct codes / n.
    """
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2 or len(codes) == 0:
        got = f"{codes.dtype} {codes.shape}" if isinstance(codes, np.ndarray) else type(codes).__name__
        raise ValueError(f"codes must be a non-empty uint8 (n, n_bits // 8) array, got {got}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n, n_bits = len(codes), codes.shape[1] * 8
    ones, cross = np.zeros(n_bits), np.zeros((n_bits, n_bits))
    for start in range(0, n, block_size):
        bits = unpack(codes[start : start + block_size]).astype(np.float64)  # (b, n_bits)
        ones += bits.sum(axis=0)
        cross += bits.T @ bits
    p = ones / n
    return {
        "bit_balance": float(np.mean(np.abs(p - 0.5) * 2.0)),
        "mean_abs_bit_correlation": _mean_abs_correlation(p, cross / n),
        "distinct_code_fraction": len(np.unique(codes, axis=0)) / n,
    }


def _mean_abs_correlation(p: np.ndarray, second_moment: np.ndarray) -> float:
    cov = second_moment - np.outer(p, p)  # (n_bits, n_bits)
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    denom = np.outer(std, std)
    corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 1e-12)
    upper = np.triu_indices(len(p), k=1)
    return float(np.clip(np.mean(np.abs(corr[upper])), 0.0, 1.0)) if len(p) > 1 else 0.0


def hamming(q_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """uint8 (b, B) x uint8 (n, B) codes -> int32 (b, n) Hamming distances."""
    dist = np.zeros((len(q_codes), len(db_codes)), np.int32)
    for byte in range(q_codes.shape[1]):
        dist += np.bitwise_count(q_codes[:, byte, None] ^ db_codes[None, :, byte])
    return dist
