"""The vq bottleneck (models.vq): LFQ's terms, its place behind the model interface, checkpoints and training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hamdex.evaluation.metrics import mean_average_precision
from hamdex.models import checkpoint
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig
from hamdex.models.train import TrainConfig, fit_hasher
from hamdex.models.vq import COMMITMENT_WEIGHT, BinaryVQBottleneck
from sklearn.datasets import load_digits


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data.astype(np.float32), d.target  # (1797, 64) as dense vectors: seconds to train


@pytest.fixture(scope="module")
def trained(digits):
    cfg = TrainConfig(epochs=10, batch_size=64, progress=False, seed=0, safeguard=False)
    model = {"n_bits": 16, "hidden": (64,), "bottleneck": "vq", "kl_weight": 0.1}
    with torch_threads(1):
        return fit_hasher(digits[0], "dense", model, cfg)[0]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n_bits", [8, 16, 64])
@pytest.mark.parametrize("batch", [1, 5])
def test_shapes_bits_and_straight_through_gradient(n_bits, batch):
    torch.manual_seed(0)
    bottleneck = BinaryVQBottleneck(n_bits, entropy_weight=0.1).train()
    logits = torch.randn(batch, n_bits, requires_grad=True)
    out = bottleneck(logits)
    assert out.z.shape == out.latent.shape == (batch, n_bits) and out.loss.shape == ()
    assert torch.equal(out.z.detach(), (logits > 0).float())  # the codeword sign(x) as bits, even in training
    out.z.sum().backward()
    torch.testing.assert_close(logits.grad, torch.full_like(logits, 0.5))  # x + (q - x).detach(), mapped to {0, 1}


def test_eval_has_no_terms_and_codes_match_training_codes():
    bottleneck = BinaryVQBottleneck(16, entropy_weight=1.0)
    logits = torch.randn(32, 16)
    train_z = bottleneck.train()(logits).z
    out = bottleneck.eval()(logits)
    assert out.loss.item() == 0.0
    assert torch.equal(out.z, train_z) and torch.equal(out.z.bool(), bottleneck.binarize(logits))


def test_commitment_pulls_outputs_to_the_codewords():
    bottleneck = BinaryVQBottleneck(8, entropy_weight=0.0).train()
    signs = torch.where(torch.rand(64, 8) > 0.5, 1.0, -1.0)
    assert bottleneck(signs).loss.item() == pytest.approx(0.0, abs=1e-6)  # on the codewords
    off = bottleneck(signs * 3).loss.item()  # every output 2 from its codeword: 4 per bit, summed over 8
    assert off == pytest.approx(COMMITMENT_WEIGHT * 8 * 4, rel=1e-5)


def test_entropy_term_prefers_a_batch_spread_over_the_codes():
    torch.manual_seed(0)
    bottleneck = BinaryVQBottleneck(16, entropy_weight=1.0).train()
    one_code = torch.ones(256, 16)  # every item the same code (commitment 0)
    spread = torch.where(torch.rand(256, 16) > 0.5, 1.0, -1.0)  # codes spread (commitment 0)
    assert bottleneck(spread).loss.item() < bottleneck(one_code).loss.item() - 1.0


def test_no_projections_and_only_learned_state_in_the_state_dict():
    model = HashingAutoencoder(ModelConfig(input_dim=12, n_bits=16, bottleneck="vq", recon="gaussian", hidden=(8,)))
    assert isinstance(model.bottleneck.lfq.project_in, torch.nn.Identity)
    assert not [k for k in model.state_dict() if k.startswith("bottleneck.")]


def test_checkpoint_round_trip_gives_identical_codes(tmp_path, digits, trained):
    fp = checkpoint.save(tmp_path / "vq", trained)
    loaded = checkpoint.load(tmp_path / "vq", device="cpu")
    assert loaded.model.config.bottleneck == "vq" and fp == loaded.fingerprint == trained.fingerprint
    codes = loaded.encode(digits[0]).codes
    np.testing.assert_array_equal(codes, trained.encode(digits[0]).codes)
    np.testing.assert_array_equal(codes, loaded.encode(digits[0]).codes)  # deterministic in eval


def test_a_short_training_beats_random_codes(digits, trained):
    images, labels = digits
    codes = trained.encode(images).codes  # uint8 (n, 2)
    assert len(np.unique(codes, axis=0)) > 100  # not collapsed onto a few codes
    q, db = slice(0, 300), slice(300, None)
    learned = mean_average_precision(codes[q], codes[db], labels[q], labels[db])
    rand = np.random.default_rng(0).integers(0, 256, codes.shape, dtype=np.uint8)
    chance = mean_average_precision(rand[q], rand[db], labels[q], labels[db])
    assert learned > chance + 0.2, (learned, chance)
