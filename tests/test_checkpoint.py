import json

import numpy as np
import pytest
from hamdex.models import checkpoint
from hamdex.models.autoencoder import ModelConfig
from hamdex.models.train import TrainConfig, fit_hasher
from sklearn.datasets import load_digits


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images * 255 / 16).astype(np.uint8), d.target


@pytest.fixture(scope="module")
def trained(digits):
    cfg = TrainConfig(epochs=3, progress=False, seed=0)
    return fit_hasher(digits[0], "pixels", {"n_bits": 16, "hidden": (32,)}, cfg)[0]


def test_round_trip_gives_identical_codes_and_fingerprint(tmp_path, digits, trained):
    fp = checkpoint.save(tmp_path / "m", trained)
    loaded = checkpoint.load(tmp_path / "m", device="cpu")
    assert fp == trained.fingerprint == loaded.fingerprint
    np.testing.assert_array_equal(loaded.encode(digits[0]).codes, trained.encode(digits[0]).codes)
    meta = json.loads((tmp_path / "m" / checkpoint.META).read_text())
    assert ModelConfig.from_dict(meta["model_config"]) == trained.model.config
    assert {"torch", "numpy", "faiss-cpu", "python"} <= set(meta["versions"])
    assert meta["train_config"]["seed"] == 0


def test_same_seed_same_fingerprint_other_seed_differs(digits, trained):
    cfg = TrainConfig(epochs=3, progress=False, seed=0)
    again = fit_hasher(digits[0], "pixels", {"n_bits": 16, "hidden": (32,)}, cfg)[0]
    other = fit_hasher(
        digits[0], "pixels", {"n_bits": 16, "hidden": (32,)}, TrainConfig(epochs=3, progress=False, seed=1)
    )[0]
    assert again.fingerprint == trained.fingerprint
    assert other.fingerprint != trained.fingerprint


def test_damaged_weights_are_reported(tmp_path, trained):
    checkpoint.save(tmp_path / "m", trained)
    weights = tmp_path / "m" / checkpoint.WEIGHTS
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the last tensor's data
    weights.write_bytes(bytes(raw))
    with pytest.raises(checkpoint.CheckpointError, match="fingerprint"):
        checkpoint.load(tmp_path / "m")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no hamdex checkpoint"):
        checkpoint.load(tmp_path / "none")


def test_save_replaces_existing_checkpoint(tmp_path, trained):
    checkpoint.save(tmp_path / "m", trained)
    checkpoint.save(tmp_path / "m", trained)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([checkpoint.META, checkpoint.WEIGHTS])
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown ModelConfig keys: nope"):
        ModelConfig.from_dict({"input_dim": 4, "nope": 1})
    for bad in ({"n_bits": 12}, {"bottleneck": "x"}, {"recon": "x"}, {"dropout": 1.0}, {"kl_weight": -1}):
        with pytest.raises(ValueError):
            ModelConfig(input_dim=4, **bad)


def test_gaussian_thresholds_are_saved_and_codes_are_balanced(tmp_path, digits):
    cfg = TrainConfig(epochs=3, progress=False, seed=0)
    hasher = fit_hasher(digits[0], "pixels", {"n_bits": 16, "hidden": (32,), "bottleneck": "gaussian"}, cfg)[0]
    thresholds = hasher.model.bottleneck.thresholds
    assert thresholds.abs().sum() > 0  # calibrated after training
    checkpoint.save(tmp_path / "g", hasher)
    loaded = checkpoint.load(tmp_path / "g", device="cpu")
    codes = loaded.encode(digits[0]).codes
    np.testing.assert_array_equal(codes, hasher.encode(digits[0]).codes)
    balance = np.unpackbits(codes, axis=1, bitorder="little").mean(axis=0)
    np.testing.assert_allclose(balance, 0.5, atol=0.01)  # median thresholds split the training set in half


def test_fingerprints_from_before_the_members_field_still_match():  # and output_dim
    """A fixed model's fingerprint as the release before ``ModelConfig.members`` computed it: checkpoints and the
    collections that store their fingerprint must keep opening."""
    import torch
    from hamdex.models.autoencoder import HashingAutoencoder
    from hamdex.models.featurizers import make_featurizer

    feat = make_featurizer("dense").fit(np.arange(24, dtype=np.float32).reshape(6, 4))
    model = HashingAutoencoder(ModelConfig(input_dim=4, n_bits=8, recon="gaussian", hidden=(4,)))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (i + 1))
    assert checkpoint.compute_fingerprint(model, feat) == "fe9f531efeb30795"  # computed at commit 52eb94e
