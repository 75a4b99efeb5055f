"""Codes for a batch of request elements, each given as a raw input or as a wire code (search also takes ids)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from fastapi import Request
from hamdex.models import bits
from hamdex.models.hasher import Hasher
from hamdex.service.schemas import RawInput, WireCode


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
