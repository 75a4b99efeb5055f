import dataclasses

import numpy as np
import pytest
import torch
from hamdex.models import checkpoint
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig
from hamdex.models.ensemble import MemberEnsemble, build_model, parts
from hamdex.models.presets import preset
from hamdex.models.train import TrainConfig, _batch_loss, fit_hasher, training_data
from sklearn.datasets import load_digits


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images * 255 / 16).astype(np.uint8), d.target


def test_build_model_picks_the_class_and_splits_the_bits():
    single = build_model(ModelConfig(input_dim=16, n_bits=32, recon="gaussian"))
    assert type(single) is HashingAutoencoder
    ens = build_model(ModelConfig(input_dim=16, n_bits=32, recon="gaussian", members=2))
    assert isinstance(ens, MemberEnsemble) and len(parts(ens)) == 2
    assert [p.config.n_bits for p in parts(ens)] == [16, 16]
    assert all(p.config.members == 1 and p.config.recon == "gaussian" for p in parts(ens))
    # independent members: their weights start different
    a, b = parts(ens)
    assert not torch.equal(a.encoder[0].weight, b.encoder[0].weight)


@pytest.mark.parametrize("members", [0, 3, 8])
def test_members_must_split_the_code_into_whole_bytes(members):
    with pytest.raises(ValueError, match="members"):
        ModelConfig(input_dim=16, n_bits=32, members=members)  # 32 bits: 3 do not divide it, 8 give 4-bit parts


def test_a_single_autoencoder_refuses_a_members_config():
    with pytest.raises(ValueError, match="build_model"):
        HashingAutoencoder(ModelConfig(input_dim=16, n_bits=16, members=2))


def test_codes_and_loss_are_the_members_side_by_side():
    torch.manual_seed(0)
    ens = build_model(ModelConfig(input_dim=12, n_bits=24, recon="gaussian", members=3)).eval()
    x = torch.randn(5, 12)
    bits, latent = ens.encode(x)
    own = [p.encode(x) for p in parts(ens)]
    assert bits.shape == (5, 24) and latent.shape == (5, 24)
    assert torch.equal(bits, torch.cat([b for b, _ in own], dim=1))
    assert torch.equal(ens.relaxed_codes(x), torch.cat([p.relaxed_codes(x) for p in parts(ens)], dim=1))
    out = ens(x)
    assert torch.allclose(out.loss, sum(p(x).loss for p in parts(ens)))


def test_each_member_gets_its_own_contrastive_and_cluster_terms(digits):
    """The ensemble's batch loss is the sum of each member's loss as if it were trained alone on its own clusters."""
    x = digits[0].reshape(len(digits[0]), -1).astype(np.float32) / 255
    cfg = TrainConfig(neighbours=5, contrastive_weight=1.0, cluster_weight=0.5, n_clusters=10, progress=False)
    data = training_data(x, cfg, n_bits=16, members=2)
    assert data.clusters.shape == (len(x), 2)
    assert (data.clusters[:, 0] != data.clusters[:, 1]).any()  # two k-means runs with different seeds
    torch.manual_seed(0)
    ens = build_model(ModelConfig(input_dim=64, n_bits=16, recon="bernoulli", hidden=(32,), members=2)).eval()
    rows = np.arange(0, 200, 3)
    device = torch.device("cpu")
    whole = _batch_loss(ens, data, rows, cfg, device, np.random.default_rng(7))
    alone = sum(
        _batch_loss(part, dataclasses.replace(data, clusters=data.clusters[:, [m]]), rows, cfg, device, rng)
        for m, (part, rng) in enumerate(zip(parts(ens), [np.random.default_rng(7) for _ in range(2)], strict=True))
    )
    # both members draw the same positives (one rng each, same seed), so the sums agree
    assert torch.allclose(whole, alone, rtol=1e-5)


def test_an_ensemble_trains_saves_and_loads(tmp_path, digits):
    images = digits[0]
    model_over = {"n_bits": 32, "hidden": (64,), "members": 2}
    cfg = TrainConfig(epochs=4, neighbours=5, contrastive_weight=1.0, progress=False)
    hasher, result = fit_hasher(images, "pixels", model_over, cfg)
    assert isinstance(hasher.model, MemberEnsemble) and hasher.n_bits == 32
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    codes = hasher.encode(images).codes
    assert codes.shape == (len(images), 4)
    fp = checkpoint.save(tmp_path / "m", hasher)
    loaded = checkpoint.load(tmp_path / "m", device="cpu")
    assert isinstance(loaded.model, MemberEnsemble) and loaded.fingerprint == fp
    np.testing.assert_array_equal(loaded.encode(images).codes, codes)


def test_presets_use_32_bit_members_from_64_bits():
    assert preset("pixels", 32)[0].get("members", 1) == 1 and preset("pixels", 64)[0]["members"] == 2
    # pixels: KL weight 0.1 for 32-bit members, 0.3 for narrower codes (models.presets); codes under 32 bits are
    # read out of a 32-bit model (readout_from), which takes the 32-bit weight
    assert [preset("pixels", b)[0]["kl_weight"] for b in (16, 24, 32, 64, 128)] == [0.1, 0.1, 0.1, 0.1, 0.1]
    assert [preset("pixels", b, read_narrow=False)[0]["kl_weight"] for b in (16, 24)] == [0.3, 0.3]
    assert preset("pixels", 64, members=4)[0]["kl_weight"] == 0.3
    assert preset("dense", 128)[0].get("members", 1) == 1
    for bits, members in [(16, 1), (32, 1), (64, 2), (128, 4), (256, 8)]:
        model, _ = preset("text", bits)
        assert model.get("members", 1) == members
        # the KL weight is the 32-bit preset's for every 32-bit member, and for shorter codes too
        assert model["kl_weight"] == preset("text", 32)[0]["kl_weight"]
    # a width that 32 does not divide is one model, its KL weight scaled down to the 32-bit budget
    model, _ = preset("text", 40)
    assert model.get("members", 1) == 1
    assert model["kl_weight"] == pytest.approx(preset("text", 32)[0]["kl_weight"] * 32 / 40)


def test_cluster_labels_must_match_the_members(digits):
    from hamdex.models.train import train

    x = digits[0].reshape(len(digits[0]), -1).astype(np.float32) / 255
    config = ModelConfig(input_dim=64, n_bits=16, recon="bernoulli", hidden=(16,), members=2)
    cfg = TrainConfig(epochs=1, neighbours=3, cluster_weight=0.5, progress=False)
    nb = np.tile(np.arange(1, 4), (len(x), 1))
    with pytest.raises(ValueError, match="1 label columns for 2 members"):
        train(config, cfg, x, neighbours=nb, clusters=np.zeros(len(x), np.int64))


def test_each_gaussian_member_is_calibrated_and_saved(tmp_path, digits):
    """Median thresholds are set per member (each sees only its own logits), and survive a checkpoint."""
    cfg = TrainConfig(epochs=2, progress=False)
    over = {"n_bits": 16, "hidden": (32,), "bottleneck": "gaussian", "members": 2}
    hasher = fit_hasher(digits[0], "pixels", over, cfg)[0]
    assert all(part.bottleneck.thresholds.abs().sum() > 0 for part in parts(hasher.model))
    checkpoint.save(tmp_path / "g", hasher)
    codes = checkpoint.load(tmp_path / "g", device="cpu").encode(digits[0]).codes
    np.testing.assert_array_equal(codes, hasher.encode(digits[0]).codes)
    balance = np.unpackbits(codes, axis=1, bitorder="little").mean(axis=0)
    np.testing.assert_allclose(balance, 0.5, atol=0.01)  # every bit of both members splits the training set
