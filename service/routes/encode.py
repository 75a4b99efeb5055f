"""POST /v1/encode: raw inputs -> binary codes (and optionally the continuous latent)."""

from __future__ import annotations

from fastapi import APIRouter

from models import bits
from service.deps import HasherDep, SettingsDep, check_batch
from service.schemas import EncodeRequest, EncodeResponse

router = APIRouter(prefix="/v1", tags=["encode"])


@router.post("/encode", response_model=EncodeResponse)
def encode(req: EncodeRequest, hasher: HasherDep, settings: SettingsDep) -> EncodeResponse:
    check_batch(len(req.inputs), settings, "inputs")
    result = hasher.encode(req.inputs, latent=req.latent)
    return EncodeResponse(
        codes=[bits.to_wire(c, req.format) for c in result.codes],
        latent=result.latent.tolist() if result.latent is not None else None,
        n_bits=hasher.n_bits,
        format=req.format,
        fingerprint=hasher.fingerprint,
    )
