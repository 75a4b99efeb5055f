"""What two-stage ranking needs from a model: the vectors a collection keeps to rescore Hamming candidates exactly,
and a query's continuous score per bit for asymmetric rescoring when it keeps none.

Asymmetric distances (the query continuous, the items binary) follow Gordo et al., "Asymmetric distances for
binary embeddings" (TPAMI 2014) and Dong et al., "Asymmetric distance estimation with sketches" (2008): an item's
score is ``sum_b s_b * (2 * bit_b - 1)``, where ``s_b`` is the query's centred score for bit ``b`` (positive where
the query leans to 1). With ``s_b = 2 * qbit_b - 1`` it is ``n_bits - 2 * hamming``: Hamming order again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hamdex.models.ensemble import parts

_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps] before the logit: finite scores for saturated bits


def rerank_vectors(featurizer: Any, features: Any) -> np.ndarray | None:
    """The vectors a collection keeps for exact rescoring, float32 (n, d), in the user's space: for ``dense`` and
    ``sentence`` features the standardisation undone (``features * std + mean``), for ``pixels`` the features
    themselves; None for ``text`` (sparse TF-IDF, not kept) or a featurizer of another kind."""
    kind = getattr(featurizer, "kind", None)
    if kind in ("dense", "sentence"):
        mean, std = getattr(featurizer, "mean", None), getattr(featurizer, "std", None)
        if mean is None or std is None:
            return None
        x = np.asarray(features, dtype=np.float32)  # (n, d)
        return (x * np.asarray(std, np.float32) + np.asarray(mean, np.float32)).astype(np.float32, copy=False)
    if kind == "pixels":
        return np.asarray(features, dtype=np.float32)
    return None


def keeps_vectors(featurizer: Any) -> bool:
    """Whether :func:`rerank_vectors` gives vectors for this featurizer's kind."""
    return getattr(featurizer, "kind", None) in ("dense", "sentence", "pixels")


def query_scores(hasher: Any, latent: np.ndarray) -> np.ndarray:
    """A query's centred score per bit, float32 (q, n_bits), from ``hasher.encode(..., latent=True).latent``:
    positive exactly where the bit is 1. The latent is a probability of the bit (bernoulli, sign, vq, and any
    bottleneck under the itq read-out, whose bit is latent > 0.5): its logit. For a gaussian bottleneck without a
    read-out it is the mean, whose bit is mean > the training median: the mean less that median."""
    latent = np.asarray(latent, dtype=np.float32)  # (q, n_bits)
    model = hasher.model
    if getattr(model, "readout", None) is not None:
        return _logit(latent)
    out, start = np.empty_like(latent), 0
    for member in parts(model):
        n = member.config.n_bits
        block = latent[:, start : start + n]
        thresholds = getattr(member.bottleneck, "thresholds", None)
        if member.config.bottleneck == "gaussian" and thresholds is not None:
            out[:, start : start + n] = block - thresholds.detach().cpu().numpy().astype(np.float32)
        else:
            out[:, start : start + n] = _logit(block)
        start += n
    assert start == latent.shape[1], "the members' bits add up to the latent's width"
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)
