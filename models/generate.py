"""The decoder as a reconstructor and a generator: inputs -> code -> the input the model rebuilds from it (denoising,
and inpainting with a mask of missing values), and codes -> inputs (codes given, or drawn from the prior).

Outputs are in the featurizer's input space (:func:`to_inputs`): pixel values in [0, 255] of the image shape,
dense vectors in their own units, and for text the decoder's distribution over the vocabulary (its top words are
:func:`top_words`). A model whose decoder rebuilds other targets (``ModelConfig.output_dim``: scattering
coefficients of images, ``hamdex train --target-features scattering``) cannot: :class:`NotReconstructable`.

What the decoder sees of a code follows each bottleneck's training: ``sign`` and ``bernoulli`` decoders see the
bits themselves (in eval, both bottlenecks pass hard bits); a ``gaussian`` (VDSH) decoder sees a continuous z, and
a code only says on which side of each dimension's threshold t the mean lay, so a bit becomes the mean of the
prior N(0, 1) on that side: phi(t) / (1 - Phi(t)) for a 1, -phi(t) / Phi(t) for a 0. A bottleneck may define its
own ``bits_to_z(bits)``. With the ``itq`` read-out the indexed bits are a rotation of the scores the decoder never
saw; they are rotated back approximately (:func:`_unrotated_scores`), so generating from an itq model's code
gives a likeness of its items, not their exact reconstruction.

Inpainting iterates the autoencoder on its own output (a fixed point with the known values clamped), as in
denoising-autoencoder imputation (Gondara & Wang 2018, "MIDA: multiple imputation using denoising autoencoders"):
missing values start at the item's mean of its known values (dense: the training mean) and are replaced by the
reconstruction until the code stops changing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from hamdex.models import bits
from hamdex.models.autoencoder import HashingAutoencoder
from hamdex.models.ensemble import Model, parts
from hamdex.models.featurizers import TEXT_INPUT_KINDS, Features, Featurizer, InputError
from hamdex.models.hasher import Hasher, to_tensor
from hamdex.models.readout import SCORE_SCALE

INPAINT_STEPS = 20  # most fixed-point iterations; the code usually settles within a few
BLOCK = 1024  # items per model call


class NotReconstructable(ValueError):
    """The model's decoder does not rebuild its inputs."""

    error_type = "not_reconstructable"


class Decoded(NamedTuple):
    codes: np.ndarray  # uint8 (n, n_bits // 8): the code each output was decoded from
    outputs: np.ndarray  # float32 (n, input_dim): the decoder's mean output in feature space (see to_inputs)


def check_reconstructable(model: Model) -> None:
    """Raise :class:`NotReconstructable` unless the decoder outputs the model's input features."""
    if model.config.output_dim:
        raise NotReconstructable(
            f"this model's decoder outputs {model.config.output_dim} other features (trained with "
            "--target-features scattering), not its inputs; reconstructing and generating need a model trained "
            "with --target-features input"
        )


# ---- codes -> decoder inputs -> outputs -------------------------------------------------------------------------


def mean_output(recon: str, logits: torch.Tensor) -> torch.Tensor:
    """Decoder logits (B, d) -> the mean of its output distribution (B, d): word probabilities, pixel
    probabilities, or the vector itself."""
    if recon == "multinomial":
        return torch.softmax(logits.float(), dim=1)
    if recon == "bernoulli":
        return torch.sigmoid(logits.float())
    return logits.float()


def bits_to_z(part: HashingAutoencoder, b: torch.Tensor) -> torch.Tensor:
    """One autoencoder's bits (B, n_bits) bool -> what its decoder takes (B, n_bits) float."""
    bottleneck = part.bottleneck
    if hasattr(bottleneck, "bits_to_z"):
        return bottleneck.bits_to_z(b)
    if part.config.bottleneck == "gaussian":
        t = bottleneck.thresholds.float()  # (n_bits,)
        normal = torch.distributions.Normal(0.0, 1.0)
        density, below = normal.log_prob(t).exp(), normal.cdf(t).clamp(1e-6, 1 - 1e-6)
        return torch.where(b, density / (1 - below), -density / below)  # (B, n_bits)
    return b.float()


def _unrotated_scores(model: Model, signs: torch.Tensor) -> torch.Tensor:
    """An itq model's code as +-1 (B, n_bits) -> approximate scores (B, n_bits) before the rotation: squash(s) ~
    mean + signs @ R^T (R orthogonal), unsquashed."""
    readout = model.readout
    squashed = (readout.mean + signs @ readout.rotation.T).clamp(-0.999, 0.999)  # (B, n_bits)
    return SCORE_SCALE * torch.atanh(squashed)


def decode_bits(model: Model, b: torch.Tensor) -> torch.Tensor:
    """Codes as bits (B, n_bits) bool -> the mean of the members' decoded outputs (B, input_dim)."""
    check_reconstructable(model)
    scores = _unrotated_scores(model, b.float() * 2 - 1) if model.readout is not None else None
    outputs, start = [], 0
    for part in parts(model):
        end = start + part.config.n_bits
        if scores is None:
            z = bits_to_z(part, b[:, start:end])
        elif part.config.bottleneck == "gaussian":
            z = scores[:, start:end]  # the read-out rotates the gaussian means themselves
        else:
            z = bits_to_z(part, scores[:, start:end] > 0)
        outputs.append(mean_output(part.config.recon, part.decode(z)))  # labelled models: class unknown
        start = end
    return torch.stack(outputs).mean(dim=0)


@torch.no_grad()
def generate(hasher: Hasher, codes: np.ndarray) -> Decoded:
    """Packed codes uint8 (n, n_bits // 8) -> their decoded outputs."""
    check_reconstructable(hasher.model)
    outs = []
    for start in range(0, len(codes), BLOCK):
        b = torch.from_numpy(bits.unpack(codes[start : start + BLOCK]).astype(bool)).to(hasher.device)
        outs.append(decode_bits(hasher.model, b).cpu().numpy())
    return Decoded(codes, _concat(outs, hasher.model.config.input_dim))


def sample_codes(model: Model, n: int, seed: int) -> np.ndarray:
    """``n`` codes drawn from the prior, uint8 (n, n_bits // 8): fair bits (the Bernoulli(0.5) prior of sign and
    bernoulli, and what ITQ's balanced bits approximate), or for gaussian bits each 1 with P(z > t), z ~ N(0, 1)."""
    p_one = np.full(model.config.n_bits, 0.5)
    if model.readout is None:
        p_one = np.concatenate([_p_one(part) for part in parts(model)])
    return bits.pack(np.random.default_rng(seed).random((n, len(p_one))) < p_one)


def _p_one(part: HashingAutoencoder) -> np.ndarray:
    if part.config.bottleneck != "gaussian":
        return np.full(part.config.n_bits, 0.5)
    t = part.bottleneck.thresholds.float().cpu()
    return (1 - torch.distributions.Normal(0.0, 1.0).cdf(t)).numpy()


# ---- inputs -> reconstruction ------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruct_tensor(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Features (B, d) -> the members' mean reconstruction (B, d), through each bottleneck as in eval."""
    check_reconstructable(model)
    outputs = []
    for part in parts(model):
        z = part.bottleneck(part.logits(x)).z  # (B, n_bits) hard bits, or the gaussian mean
        outputs.append(mean_output(part.config.recon, part.decode(z)))  # labelled models: class unknown
    return torch.stack(outputs).mean(dim=0)


@torch.no_grad()
def reconstruct(hasher: Hasher, features: Features, masks: np.ndarray | None = None) -> Decoded:
    """Features (n, d) -> the code of each and its reconstruction. With ``masks`` bool (n, d) (True: missing),
    the missing values are inpainted: those outputs keep the known values and fill the rest (an item with nothing
    missing is reconstructed as without a mask). The code is that of the completed item."""
    check_reconstructable(hasher.model)
    if masks is not None and sp.issparse(features):
        raise InputError("masks are for pixel and dense inputs, not text", "invalid_input")
    codes, outs = [], []
    for start in range(0, features.shape[0], BLOCK):
        x = to_tensor(features[start : start + BLOCK], hasher.device)  # (B, d) dense
        out = reconstruct_tensor(hasher.model, x)
        if masks is not None:
            missing = torch.from_numpy(masks[start : start + BLOCK]).to(hasher.device)  # (B, d)
            rows = missing.any(dim=1)  # items with nothing missing keep their plain reconstruction
            if rows.any():
                x[rows] = out[rows] = _inpaint(hasher, x[rows], missing[rows])
        codes.append(hasher.encode_features(x.cpu().numpy()).codes)
        outs.append(out.cpu().numpy())
    n_bytes = hasher.n_bits // 8
    empty = np.zeros((0, n_bytes), np.uint8)
    return Decoded(np.concatenate(codes) if codes else empty, _concat(outs, hasher.model.config.input_dim))


def _inpaint(hasher: Hasher, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """(B, d) features and bool (B, d) missing -> the features with the missing values filled (B, d)."""
    known = (~missing).float()
    if hasher.featurizer.kind == "dense":
        fill = torch.zeros(len(x), 1, device=x.device)  # standardised: the training mean
    else:  # the item's mean of its known values; 0.5 when none is known
        count = known.sum(dim=1, keepdim=True)
        fill = torch.where(count > 0, (x * known).sum(dim=1, keepdim=True) / count.clamp(min=1), 0.5)
    x = torch.where(missing, fill, x)
    previous = None
    for _ in range(INPAINT_STEPS):
        code = hasher.model.encode(x)[0]  # (B, n_bits)
        if previous is not None and torch.equal(code, previous):
            break
        x = torch.where(missing, reconstruct_tensor(hasher.model, x), x)
        previous = code
    return x


def _concat(blocks: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(blocks).astype(np.float32) if blocks else np.zeros((0, dim), np.float32)


# ---- feature space -> input space --------------------------------------------------------------------------------


def to_inputs(featurizer: Featurizer, outputs: np.ndarray) -> np.ndarray:
    """Decoded features float32 (n, d) -> the input space: pixels float32 (n, *image shape) in [0, 255], dense
    vectors (n, d) in their units (the featurizer's standardisation undone), text as given (word probabilities)."""
    if featurizer.kind == "pixels":
        return np.clip(outputs * 255.0, 0, 255).reshape(len(outputs), *featurizer.shape).astype(np.float32)
    if featurizer.kind in ("dense", "sentence"):  # a sentence model's outputs are embeddings
        return (outputs * featurizer.std + featurizer.mean).astype(np.float32)
    return outputs


def top_words(featurizer: Featurizer, probabilities: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Word probabilities (n, vocab) -> each row's ``k`` most probable words with their probability, best first."""
    vocabulary = featurizer.state()[0]["vocabulary"]
    k = min(k, probabilities.shape[1])
    if k == 0 or len(probabilities) == 0:
        return [[] for _ in probabilities]
    # the k largest by a partition, then only those sorted (a full sort of 1,000 x 10,000 took 3.6 s of 6); ties
    # at the k-th value go to the lower indices, as a stable sort would give them
    kth = -np.partition(-probabilities, k - 1, axis=1)[:, k - 1 : k]  # (n, 1) the k-th largest value
    above, tied = probabilities > kth, probabilities == kth  # (n, vocab)
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))  # exactly k a row
    part = np.nonzero(chosen)[1].reshape(len(probabilities), k)  # (n, k) by index
    order = np.lexsort((part, -np.take_along_axis(probabilities, part, axis=1)))  # by probability, then index
    best = np.take_along_axis(part, order, axis=1)  # (n, k)
    return [[(vocabulary[j], float(row[j])) for j in order] for row, order in zip(probabilities, best, strict=True)]


def mask_features(featurizer: Featurizer, masks: list[np.ndarray]) -> np.ndarray:
    """One mask per item, each with as many values as the item's features (any shape) -> bool (n, d)."""
    if featurizer.kind in TEXT_INPUT_KINDS:
        raise InputError("masks are for pixel and dense inputs, not text", "invalid_input")
    flat = [np.asarray(m, dtype=bool).reshape(-1) for m in masks]
    for i, m in enumerate(flat):
        if m.size != featurizer.dim:
            raise InputError(f"mask {i} has {m.size} values; the model's inputs have {featurizer.dim}", "input_shape")
    return np.stack(flat) if flat else np.zeros((0, featurizer.dim), bool)
