"""POST /v1/reconstruct and /v1/generate: the model's decoder, run on inputs (denoising, and inpainting with a mask
of missing values) or on codes (given, or sampled from the prior with a seed). Both use the default model, as
/v1/encode does, and need a read key (not opened by HAMDEX_OPEN_READS, which opens encode and search only).

What comes out is in the model's input space (models.generate): images as base64 PNG or rows of pixel values,
dense vectors, and for text the top words of the decoded bag with their probabilities.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from hamdex.models import bits, generate
from hamdex.models.hasher import Hasher
from hamdex.service.deps import READ, HasherDep, SettingsDep, check_batch, check_texts
from hamdex.service.errors import ApiError
from hamdex.service.images import png_base64, png_writable
from hamdex.service.schemas import (
    DecodedItem,
    DecodeOptions,
    DecodeResponse,
    GenerateRequest,
    ReconstructRequest,
    WeightedWord,
)
from starlette.concurrency import run_in_threadpool

router = APIRouter(prefix="/v1", tags=["decode"], dependencies=[READ])


@router.post("/reconstruct", response_model=DecodeResponse, response_model_exclude_none=True)
async def reconstruct(
    req: ReconstructRequest, request: Request, hasher: HasherDep, settings: SettingsDep
) -> DecodeResponse:
    """Each item through the model and back: its code and the model's reconstruction of it. An item with a mask
    (true: missing) comes back with its known values as given and the missing ones filled in (inpainting)."""
    check_batch(len(req.items), settings, "items")
    inputs = [item.input for item in req.items]
    check_texts(inputs, settings, "items")
    check_decodable(hasher, req)
    masks = [item.mask for item in req.items]
    return await _timed(request, _reconstruct, hasher, inputs, masks, req)


@router.post("/generate", response_model=DecodeResponse, response_model_exclude_none=True)
async def generate_(req: GenerateRequest, request: Request, hasher: HasherDep, settings: SettingsDep) -> DecodeResponse:
    """Codes decoded into inputs: the codes given, or ``n`` codes drawn from the model's prior (with ``seed``, the
    same codes every time; the answer says the seed it used)."""
    if req.codes is not None:
        check_batch(len(req.codes), settings, "codes")
    elif req.n > settings.max_batch:
        raise ApiError("batch_too_large", f"'n' asks for {req.n} codes; at most {settings.max_batch} per request")
    check_decodable(hasher, req)
    if req.codes is not None:
        codes = np.stack([bits.from_wire(code, hasher.n_bits) for code in req.codes])  # (n, n_bits // 8)
        return await _timed(request, _generate, hasher, codes, None, req)
    seed = req.seed if req.seed is not None else secrets.randbits(32)
    return await _timed(request, _generate, hasher, generate.sample_codes(hasher.model, req.n, seed), seed, req)


def check_decodable(hasher: Hasher, options: DecodeOptions) -> None:
    """409 when the model cannot decode into its inputs, or its images cannot be PNG."""
    try:
        generate.check_reconstructable(hasher.model)
    except generate.NotReconstructable as exc:
        raise ApiError("not_reconstructable", str(exc)) from exc
    shape = getattr(hasher.featurizer, "shape", None)
    if hasher.featurizer.kind == "pixels" and options.image_format == "png" and not png_writable(shape):
        raise ApiError("image_format_unsupported", f"images of shape {shape} cannot be PNG; ask image_format array")


async def _timed(request: Request, work: Any, *args: Any) -> DecodeResponse:
    """``work(*args)`` in a worker thread, its time reported as the request's encode time (X-Encode-Ms)."""
    start = time.perf_counter()
    try:
        return await run_in_threadpool(work, *args)
    finally:
        request.state.timings.encode_s += time.perf_counter() - start


def _reconstruct(hasher: Hasher, inputs: list[Any], masks: list[Any], options: DecodeOptions) -> DecodeResponse:
    features = hasher.features(inputs)  # InputError: 422
    missing = None
    if any(mask is not None for mask in masks):
        filled = [np.zeros(features.shape[1], bool) if mask is None else mask for mask in masks]
        missing = generate.mask_features(hasher.featurizer, filled)
    return _response(hasher, generate.reconstruct(hasher, features, missing), options)


def _generate(hasher: Hasher, codes: np.ndarray, seed: int | None, options: DecodeOptions) -> DecodeResponse:
    return _response(hasher, generate.generate(hasher, codes), options, seed)


def _response(
    hasher: Hasher, decoded: generate.Decoded, options: DecodeOptions, seed: int | None = None
) -> DecodeResponse:
    kind = hasher.featurizer.kind
    values = generate.to_inputs(hasher.featurizer, decoded.outputs)
    codes = [code.tobytes().hex() for code in decoded.codes]
    if kind == "text":
        words = generate.top_words(hasher.featurizer, values, options.top_words)
        outputs = [
            DecodedItem(code=code, words=[WeightedWord(word=w, weight=p) for w, p in row])
            for code, row in zip(codes, words, strict=True)
        ]
    elif kind == "pixels":
        images = np.round(values).astype(np.uint8)  # (n, *image shape)
        if options.image_format == "png":
            outputs = [DecodedItem(code=code, image=png_base64(im)) for code, im in zip(codes, images, strict=True)]
        else:
            outputs = [DecodedItem(code=code, pixels=im.tolist()) for code, im in zip(codes, images, strict=True)]
    else:
        outputs = [DecodedItem(code=code, vector=v.tolist()) for code, v in zip(codes, values, strict=True)]
    return DecodeResponse(outputs=outputs, kind=kind, n_bits=hasher.n_bits, fingerprint=hasher.fingerprint, seed=seed)
