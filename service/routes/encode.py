"""POST /v1/encode: raw inputs -> binary codes (and optionally the continuous latent), through the encode
micro-batcher. Vectors may come as JSON arrays or, for large batches, as base64 little-endian float32."""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np
from fastapi import APIRouter, Request
from hamdex.models import bits
from hamdex.service.deps import OPEN_READ, HasherDep, SettingsDep, check_batch, check_texts
from hamdex.service.errors import ApiError
from hamdex.service.schemas import EncodeRequest, EncodeResponse, PackedVectors

router = APIRouter(prefix="/v1", tags=["encode"], dependencies=[OPEN_READ])


def unpack_vectors(packed: PackedVectors) -> np.ndarray:
    """base64 of little-endian float32 values -> float32 array of ``packed.shape`` (first axis: items)."""
    try:
        raw = base64.b64decode(packed.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError("invalid_input", f"'inputs_b64.data' is not valid base64: {exc}") from exc
    expected = math.prod(packed.shape) * 4  # Python ints: np.prod would wrap around for huge shapes
    if len(raw) != expected:
        raise ApiError(
            "input_shape", f"'inputs_b64' holds {len(raw)} bytes; shape {packed.shape} of float32 needs {expected}"
        )
    return np.frombuffer(raw, dtype="<f4").reshape(packed.shape)


@router.post("/encode", response_model=EncodeResponse)
async def encode(req: EncodeRequest, request: Request, hasher: HasherDep, settings: SettingsDep) -> EncodeResponse:
    inputs = unpack_vectors(req.inputs_b64) if req.inputs_b64 is not None else req.inputs
    check_batch(len(inputs), settings, "inputs")
    check_texts(inputs, settings, "inputs")
    result = await request.app.state.engine.encode(hasher, inputs, req.latent, request.state.timings)
    return EncodeResponse(
        codes=[bits.to_wire(c, req.format) for c in result.codes],
        latent=result.latent.tolist() if result.latent is not None else None,
        n_bits=hasher.n_bits,
        format=req.format,
        fingerprint=hasher.fingerprint,
    )
