"""Codes for a batch of request elements, each given as a raw input or as a wire code (search also takes ids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import Request
from hamdex.models import bits
from hamdex.models.hasher import Hasher
from hamdex.models.rerank import rerank_vectors
from hamdex.service.schemas import RawInput, WireCode
from starlette.concurrency import run_in_threadpool


async def codes_for(
    request: Request, hasher: Hasher, inputs: Sequence[RawInput | None], wire: Sequence[WireCode | None]
) -> np.ndarray:
    """uint8 (n, n_bits // 8): element i from inputs[i] or wire[i]; all raw inputs go through one encode-batcher
    request. Rows with neither stay zero for the caller to fill."""
    codes = np.zeros((len(inputs), hasher.n_bits // 8), np.uint8)
    raw = [i for i, x in enumerate(inputs) if x is not None]
    if raw:
        engine, timings = request.app.state.engine, request.state.timings
        result = await engine.encode(hasher, [inputs[i] for i in raw], False, timings)
        codes[raw] = result.codes
    for i, code in enumerate(wire):
        if code is not None:
            codes[i] = bits.from_wire(code, hasher.n_bits)
    return codes


async def codes_and_features(
    request: Request, hasher: Hasher, inputs: Sequence[RawInput | None], wire: Sequence[WireCode | None], latent: bool
) -> tuple[np.ndarray, list[int], Any, np.ndarray | None]:
    """As :func:`codes_for`, and what a rerank or a vector-keeping collection needs besides, from one
    featurization: (codes (n, n_bytes), the rows that were raw inputs, their features (or None), their latents
    float32 (len(raw), n_bits) when ``latent``)."""
    codes = np.zeros((len(inputs), hasher.n_bits // 8), np.uint8)
    raw = [i for i, x in enumerate(inputs) if x is not None]
    features, latents = None, None
    if raw:
        engine, timings = request.app.state.engine, request.state.timings
        features = await run_in_threadpool(hasher.features, [inputs[i] for i in raw])  # InputError on bad input
        result = await engine.encode_features(hasher, features, latent, timings)
        codes[raw], latents = result.codes, result.latent
    for i, code in enumerate(wire):
        if code is not None:
            codes[i] = bits.from_wire(code, hasher.n_bits)
    return codes, raw, features, latents


async def codes_and_vectors(
    request: Request, hasher: Hasher, inputs: Sequence[RawInput | None], wire: Sequence[WireCode | None]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes and the vectors a collection keeps (models.rerank.rerank_vectors), float32 (n, d), zero rows for
    items given by code ("no vector"); None when no item was a raw input."""
    codes, raw, features, _ = await codes_and_features(request, hasher, inputs, wire, False)
    kept = rerank_vectors(hasher.featurizer, features) if raw else None
    if kept is None:
        return codes, None
    vectors = np.zeros((len(inputs), kept.shape[1]), np.float32)
    vectors[raw] = kept
    return codes, vectors
