import numpy as np
import pytest
import torch
from hamdex.evaluation.metrics import code_health
from hamdex.models import checkpoint
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig
from hamdex.models.ensemble import MemberEnsemble, build_model, parts
from hamdex.models.readout import RotationReadout, itq_rotation
from hamdex.models.train import TrainConfig, fit_hasher
from sklearn.datasets import load_digits


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return (load_digits().images * 255 / 16).astype(np.uint8)


def _skewed_scores(n: int = 2000, bits: int = 8, seed: int = 0) -> np.ndarray:
    """Correlated, off-centre scores: most thresholds at 0 would put nearly every item on one side."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 2))
    return base @ rng.standard_normal((2, bits)) * 3 + rng.standard_normal((n, bits)) * 0.3 + 5.0


def test_itq_rotation_is_orthogonal_and_its_loss_never_increases():
    v = _skewed_scores()
    v = v - v.mean(axis=0)
    r, losses = itq_rotation(v, iterations=20, seed=0)
    np.testing.assert_allclose(r @ r.T, np.eye(v.shape[1]), atol=1e-8)
    assert len(losses) == 21
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(itq_rotation(v, 20, seed=0)[0], r)  # seeded


def test_a_fitted_readout_balances_bits_that_a_threshold_does_not():
    scores = torch.from_numpy(_skewed_scores()).float()
    readout = RotationReadout(8)
    np.testing.assert_allclose(readout(scores).numpy(), np.tanh(scores.numpy() / 8), rtol=1e-6)  # until fitted
    plain = (scores > 0).float().mean(dim=0)
    assert (plain > 0.9).sum() >= 4  # most raw bits are nearly constant
    losses = readout.fit(scores, seed=0)
    assert losses[-1] < losses[0]
    rotated = readout(scores)
    np.testing.assert_allclose(rotated.mean(dim=0).numpy(), 0.0, atol=1e-4)  # centred on the training set
    balance = (rotated > 0).float().mean(dim=0)
    assert ((balance - 0.5).abs() < 0.25).all(), balance
    r = readout.rotation.numpy()
    np.testing.assert_allclose(r @ r.T, np.eye(8), atol=1e-5)


def test_readout_needs_two_training_items():
    with pytest.raises(ValueError, match="at least 2"):
        RotationReadout(8).fit(torch.zeros(1, 8))


def test_unknown_readout_is_refused():
    with pytest.raises(ValueError, match="unknown readout 'pca'"):
        ModelConfig(input_dim=4, n_bits=8, readout="pca")


@pytest.mark.parametrize("bottleneck", ["bernoulli", "sign", "gaussian"])
def test_encode_reads_bits_off_the_rotated_scores(bottleneck):
    torch.manual_seed(0)
    model = HashingAutoencoder(ModelConfig(input_dim=6, n_bits=8, bottleneck=bottleneck, readout="itq")).eval()
    x = torch.randn(300, 6)
    model.readout.fit(model.scores(x).detach(), seed=1)
    bits, latent = model.encode(x)
    rotated = (torch.tanh(model.scores(x) / 8) - model.readout.mean) @ model.readout.rotation
    assert torch.equal(bits, rotated > 0)
    assert torch.equal(bits, latent > 0.5)
    assert not torch.equal(bits, model.bottleneck.binarize(model.logits(x)))  # not the bottleneck's own rule


def test_an_ensemble_has_one_rotation_over_all_members():
    ens = build_model(ModelConfig(input_dim=6, n_bits=16, recon="gaussian", members=2, readout="itq")).eval()
    assert isinstance(ens, MemberEnsemble) and ens.readout.rotation.shape == (16, 16)
    assert all(p.readout is None and p.config.readout == "threshold" for p in parts(ens))
    x = torch.randn(5, 6)
    assert torch.equal(ens.scores(x), torch.cat([p.scores(x) for p in parts(ens)], dim=1))


@pytest.mark.parametrize("members", [1, 2])
def test_training_fits_the_readout_and_checkpoints_keep_it(tmp_path, digits, members):
    model_over = {"n_bits": 16, "hidden": (64,), "members": members}
    cfg = TrainConfig(epochs=3, neighbours=5, contrastive_weight=1.0, progress=False, seed=3)
    plain, _ = fit_hasher(digits, "pixels", model_over, cfg)
    rotated, _ = fit_hasher(digits, "pixels", {**model_over, "readout": "itq"}, cfg)
    # the read-out takes no part in training: the same seed trains the same weights
    for (name, a), (_, b) in zip(plain.model.named_parameters(), rotated.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(rotated.model.readout.rotation, torch.eye(16))  # fitted after training
    assert rotated.fingerprint != plain.fingerprint
    codes = rotated.encode(digits).codes
    assert not np.array_equal(codes, plain.encode(digits).codes)
    # centred and rotated: every bit splits the training set more evenly than the thresholds do
    assert code_health(codes)["bit_balance"] < code_health(plain.encode(digits).codes)["bit_balance"]
    fp = checkpoint.save(tmp_path / "m", rotated)
    loaded = checkpoint.load(tmp_path / "m", device="cpu")
    assert loaded.fingerprint == fp and loaded.model.config.readout == "itq"
    np.testing.assert_array_equal(loaded.encode(digits).codes, codes)
