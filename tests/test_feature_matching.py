"""VAE-GAN's feature-matching reconstruction term (models.feature_matching, ``TrainConfig.feature_matching_weight``):
the discriminator learns to tell reconstructions from targets, the feature distance trains the autoencoder only and
pulls reconstructions towards their targets, the term changes training without entering the checkpoint, and the
option goes through the CLI (images only) and the quality harness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hamdex.models import checkpoint
from hamdex.models.autoencoder import ModelConfig
from hamdex.models.ensemble import build_model, parts
from hamdex.models.feature_matching import FeatureMatching, reconstructions
from hamdex.models.train import TrainConfig, fit_hasher, train
from hamdex.service.cli import app
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from tests.conftest import digit_images, synthetic_texts


def _digits(n: int = 1797) -> np.ndarray:
    return (load_digits().data[:n] / 16).astype(np.float32)  # (n, 64) in [0, 1]


def _blurred(x: torch.Tensor) -> torch.Tensor:
    """Each 8 x 8 image (B, 64) averaged with its neighbours: what an element-wise loss settles for."""
    images = x.view(-1, 1, 8, 8)
    return torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1).view(len(x), -1)


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(1e-3, 1 - 1e-3))


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_non_finite_weight_is_refused(weight):
    with pytest.raises(ValueError, match="feature_matching_weight must be a finite number >= 0"):
        TrainConfig(feature_matching_weight=weight)
    assert TrainConfig().feature_matching_weight == 0.0  # off unless asked for


def test_the_discriminator_tells_blurred_reconstructions_from_targets():
    torch.manual_seed(0)
    target = torch.from_numpy(_digits(256))
    recon_logits = _logit(_blurred(target))  # fixed: only the discriminator learns
    matcher = FeatureMatching(64, "bernoulli", hidden=64)
    before = matcher.accuracy(recon_logits, target)
    opt = torch.optim.Adam(matcher.parameters(), lr=3e-3)
    for _ in range(100):
        loss = matcher([recon_logits], target)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert matcher.accuracy(recon_logits, target) > 0.9 > before
    assert 0.4 <= matcher.accuracy(_logit(target), target) <= 0.6  # perfect reconstructions: it cannot tell


def test_the_feature_distance_trains_the_reconstructions_only():
    """The discriminator's gradients are its cross-entropy's alone; the reconstructions' come from the distance."""
    torch.manual_seed(0)
    target = torch.from_numpy(_digits(64))
    recon = _logit(_blurred(target)).requires_grad_()
    matcher = FeatureMatching(64, "bernoulli", hidden=32)
    matcher([recon], target).backward()
    with_distance = {k: p.grad.clone() for k, p in matcher.named_parameters()}
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    matcher.zero_grad()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    real, fake = matcher.discriminator(target), matcher.discriminator(torch.sigmoid(recon.detach()))
    (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))).backward()
    for name, p in matcher.named_parameters():
        assert torch.allclose(with_distance[name], p.grad, atol=1e-6), name


def test_matching_the_features_pulls_reconstructions_towards_their_targets():
    torch.manual_seed(0)
    target = torch.from_numpy(_digits(256))
    recon = torch.nn.Parameter(_logit(_blurred(target)))
    matcher = FeatureMatching(64, "bernoulli", hidden=64)
    opt = torch.optim.Adam([recon, *matcher.parameters()], lr=1e-2)
    error = lambda: (torch.sigmoid(recon) - target).pow(2).sum(1).mean().item()  # noqa: E731
    before = error()
    for _ in range(200):
        loss = matcher([recon], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert error() < 0.75 * before  # 3.29 -> 2.15; it levels off near 2.1 while the discriminator still tells


def test_an_ensemble_reconstructs_once_per_member_from_its_own_bits():
    torch.manual_seed(0)
    config = ModelConfig(input_dim=64, n_bits=32, recon="bernoulli", hidden=(16,), members=2)
    model, x = build_model(config).eval(), torch.from_numpy(_digits(20))
    got = reconstructions(model, model(x))
    assert len(got) == 2
    for member, recon in zip(parts(model), got, strict=True):
        assert torch.allclose(recon, member(x).recon_logits)  # eval: deterministic bits
    single = build_model(ModelConfig(input_dim=64, n_bits=16, recon="bernoulli", hidden=(16,))).eval()
    out = single(x)
    assert reconstructions(single, out)[0] is out.recon_logits  # already there: nothing decoded twice
    with pytest.raises(ValueError, match="unknown recon loss"):
        FeatureMatching(64, "poisson")


def _train(weight: float, members: int = 1):
    torch.set_num_threads(1)
    config = ModelConfig(input_dim=64, n_bits=16, recon="bernoulli", hidden=(32,), kl_weight=0.1, members=members)
    cfg = TrainConfig(epochs=1, min_steps=40, batch_size=128, lr=1e-3, feature_matching_weight=weight, progress=False)
    return train(config, cfg, _digits(600))


@pytest.mark.parametrize("members", [1, 2])
def test_the_term_changes_training_but_not_the_model(members):
    base, matched = _train(0.0, members), _train(1.0, members)
    assert all(np.isfinite(row["train_loss"]) for row in matched.history)
    # the same model, the same weights' names and shapes: no discriminator in the state dict
    assert {k: v.shape for k, v in matched.model.state_dict().items()} == {
        k: v.shape for k, v in base.model.state_dict().items()
    }
    differ = [
        not torch.equal(a, b)
        for a, b in zip(base.model.state_dict().values(), matched.model.state_dict().values(), strict=True)
    ]
    assert all(differ)


def test_weight_zero_is_the_model_without_the_term():
    config = ModelConfig(input_dim=64, n_bits=16, recon="bernoulli", hidden=(16,))
    plain = train(config, TrainConfig(epochs=2, progress=False), _digits(300))
    zero = train(config, TrainConfig(epochs=2, feature_matching_weight=0.0, progress=False), _digits(300))
    assert [row["train_loss"] for row in plain.history] == [row["train_loss"] for row in zero.history]
    for a, b in zip(plain.model.state_dict().values(), zero.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_fingerprint_is_the_models_alone(tmp_path):
    """Weight 0 fingerprints as the plain run; a trained term changes the weights (so the fingerprint) but neither
    the model config nor the checkpoint's tensors, and the train config records it."""
    model = {"n_bits": 16, "hidden": (16,)}
    plain, _ = fit_hasher(digit_images(), "pixels", model, TrainConfig(epochs=2, progress=False))
    zero, _ = fit_hasher(digit_images(), "pixels", model, TrainConfig(epochs=2, progress=False))
    matched, _ = fit_hasher(
        digit_images(), "pixels", model, TrainConfig(epochs=2, feature_matching_weight=1.0, progress=False)
    )
    assert zero.fingerprint == plain.fingerprint != matched.fingerprint
    assert matched.model.config == plain.model.config
    assert matched.info["train_config"]["feature_matching_weight"] == 1.0
    fp = checkpoint.save(tmp_path / "m", matched)
    loaded = checkpoint.load(tmp_path / "m", "cpu")  # rebuilt from the model config alone; the fingerprint checks
    assert fp == matched.fingerprint == loaded.fingerprint
    assert loaded.info["train_config"]["feature_matching_weight"] == 1.0
    assert not [k for k in loaded.model.state_dict() if "discriminator" in k]
    images = digit_images()[:20]
    assert np.array_equal(loaded.encode(images).codes, matched.encode(images).codes)


def test_text_is_refused():
    with pytest.raises(ValueError, match="feature_matching_weight needs images"):
        fit_hasher(synthetic_texts(), "text", {"n_bits": 16}, TrainConfig(epochs=1, feature_matching_weight=1.0))


def test_the_cli_records_the_weight_and_refuses_text_and_a_negative_one(tmp_path):
    images = tmp_path / "digits.npy"
    np.save(images, digit_images())
    common = ["--bits", "16", "--hidden", "16", "--epochs", "2", "--device", "cpu"]
    result = CliRunner().invoke(
        app, ["train", str(images), *common, "--out", str(tmp_path / "m"), "--feature-matching-weight", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m" / "hamdex.json").read_text())["train_config"]["feature_matching_weight"] == 0.5
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic_texts()))
    result = CliRunner().invoke(
        app, ["train", str(texts), *common, "--out", str(tmp_path / "t"), "--feature-matching-weight", "1"]
    )
    assert result.exit_code == 2 and "feature_matching_weight needs images" in result.output, result.output
    assert not (tmp_path / "t").exists()
    result = CliRunner().invoke(
        app, ["train", str(images), *common, "--out", str(tmp_path / "bad"), "--feature-matching-weight", "-1"]
    )
    assert result.exit_code == 2 and "feature-matching-weight" in result.output
    assert not (tmp_path / "bad").exists()


def test_the_quality_harness_runs_the_variant_on_images_only():
    from hamdex.evaluation import harness

    assert harness.OBJECTIVE_VARIANTS["hamdex_feature_matching"] == {"feature_matching_weight": 0.01}
    assert "hamdex_feature_matching" in harness.objective_variants("pixels")
    assert "hamdex_feature_matching" not in harness.objective_variants("text")
    assert "hamdex_adversarial" in harness.objective_variants("text")
    assert "hamdex_feature_matching" not in harness.model_variants("pixels")  # not in a default run
