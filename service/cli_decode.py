"""``hamdex reconstruct`` and ``hamdex generate``: the decoder from the command line (registered by service.cli).
Image models write a PNG grid; text and dense models write JSON (one object per item: id, code, and the top words
or the vector), to ``--out`` or the terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import typer
from hamdex.models import corrupt, data
from hamdex.models.featurizers import TEXT_INPUT_KINDS
from hamdex.service.cli_options import DEVICE_METAVAR, check_device

if TYPE_CHECKING:  # torch and Pillow load when a command runs, not with every `hamdex` call
    from hamdex.models.generate import Decoded
    from hamdex.models.hasher import Hasher

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Checkpoint directory.")]
OutOpt = Annotated[Path | None, typer.Option(help="Image models: the PNG grid (required); else a JSON file.")]
TopOpt = Annotated[int, typer.Option(help="Text models: words per item.")]
DeviceOpt = Annotated[str, typer.Option(callback=check_device, metavar=DEVICE_METAVAR)]
Noise = Literal[corrupt.NOISES]  # type: ignore[name-defined]
Region = Literal[corrupt.REGIONS]  # type: ignore[name-defined]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _load(model: Path, device: str) -> Hasher:
    from hamdex.models import checkpoint, generate

    try:
        hasher = checkpoint.load(model, device)
        generate.check_reconstructable(hasher.model)
    except (checkpoint.CheckpointError, generate.NotReconstructable) as exc:
        raise _fail(str(exc)) from exc
    return hasher


def reconstruct(
    inputs: Annotated[str, typer.Argument(help="Items to reconstruct (a data file of models.data).")],
    model: ModelOpt = Path("var/model"),
    out: OutOpt = None,
    limit: Annotated[int, typer.Option(help="The first N items.")] = 16,
    noise: Annotated[Noise, typer.Option(help="How to corrupt the inputs first (with --level).")] = "gaussian",
    level: Annotated[float, typer.Option(help="Noise level (gaussian: std in [0, 1] pixels; else a fraction).")] = 0.0,
    mask: Annotated[Region | None, typer.Option(help="Inpaint a region.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 0,
    top_words: TopOpt = 10,
    device: DeviceOpt = "cpu",
) -> None:
    """Reconstruct items (denoised with --level, inpainted with --mask). Images: a grid of rows of the originals,
    the model's inputs (noisy or masked) and the reconstructions."""
    from hamdex.models import generate

    hasher = _load(model, device)
    try:
        block = data.read_all(inputs, limit=limit)
    except (data.DataFormatError, data.DataNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    kind = hasher.featurizer.kind
    texts = kind in TEXT_INPUT_KINDS
    if texts and (level or mask):
        raise _fail("--level and --mask corrupt pixel and dense inputs, not text")
    raw = block.inputs if texts else np.asarray(block.inputs, np.float32)
    try:
        features = hasher.features(raw if texts else raw.reshape(len(raw), -1))
        clean = features
        if level:
            features = corrupt.add_noise(features, noise, level, np.random.default_rng(seed), pixels=kind == "pixels")
        masks = None
        if mask is not None:
            shape = getattr(hasher.featurizer, "shape", None) or (1, hasher.featurizer.dim)
            masks = np.tile(corrupt.region_mask(shape, mask), (len(features), 1))
            features = np.where(masks, 0.0, features).astype(np.float32)  # shown blacked out; filled by the model
        decoded = generate.reconstruct(hasher, features, masks)
    except ValueError as exc:  # InputError, or a bad noise name
        raise _fail(str(exc)) from exc
    if kind == "pixels":
        rows = [clean, features, decoded.outputs] if level or mask else [clean, decoded.outputs]
        _write_images(hasher, rows, out)
    else:
        _write_json(_records(hasher, decoded, top_words, block.ids), out)


def generate_cmd(
    codes: Annotated[list[str] | None, typer.Argument(help="Codes (hex or base64) to decode; none: sample.")] = None,
    model: ModelOpt = Path("var/model"),
    out: OutOpt = None,
    n: Annotated[int, typer.Option(help="Codes to sample from the prior when none are given.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the sampled codes.")] = 0,
    top_words: TopOpt = 10,
    device: DeviceOpt = "cpu",
) -> None:
    """Decode codes into inputs: the codes given, or --n codes drawn from the model's prior with --seed."""
    from hamdex.models import generate
    from hamdex.models.bits import CodeFormatError, from_wire

    hasher = _load(model, device)
    if codes:
        try:
            packed = np.stack([from_wire(code, hasher.n_bits) for code in codes])
        except CodeFormatError as exc:
            raise _fail(str(exc)) from exc
    elif n < 1:
        raise _fail("--n must be at least 1")
    else:
        packed = generate.sample_codes(hasher.model, n, seed)
    decoded = generate.generate(hasher, packed)
    if hasher.featurizer.kind == "pixels":
        _write_images(hasher, [decoded.outputs], out)
    else:
        _write_json(_records(hasher, decoded, top_words, None), out)


def _write_images(hasher: Hasher, rows: list[np.ndarray], out: Path | None) -> None:
    """Rows of features (n, d) each -> one PNG grid, each row of the list a row group of the grid."""
    from hamdex.models.generate import to_inputs
    from hamdex.service.images import save_grid

    if out is None:
        raise _fail("image models write a PNG grid: give --out FILE.png")
    images = [np.round(to_inputs(hasher.featurizer, r)).astype(np.uint8) for r in rows]
    n = len(images[0])
    columns = min(n, 16)
    stacked = np.concatenate([im[start : start + columns] for start in range(0, n, columns) for im in images])
    save_grid(stacked, out, columns)
    typer.echo(f"wrote {out}: {n} images" + (f", {len(rows)} rows each" if len(rows) > 1 else ""))


def _records(hasher: Hasher, decoded: Decoded, k: int, ids: list[str] | None) -> list[dict[str, Any]]:
    from hamdex.models import generate

    values = generate.to_inputs(hasher.featurizer, decoded.outputs)
    ids = ids if ids is not None else [str(i) for i in range(len(values))]
    codes = [code.tobytes().hex() for code in decoded.codes]
    if hasher.featurizer.kind == "text":
        words = generate.top_words(hasher.featurizer, values, k)
        return [{"id": i, "code": c, "words": w} for i, c, w in zip(ids, codes, words, strict=True)]
    return [{"id": i, "code": c, "vector": v.tolist()} for i, c, v in zip(ids, codes, values, strict=True)]


def _write_json(records: list[dict[str, Any]], out: Path | None) -> None:
    text = json.dumps(records, indent=1)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        Path(out).write_text(text + "\n")
        typer.echo(f"wrote {out}: {len(records)} items")
