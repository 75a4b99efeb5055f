import pytest
import torch
from hamdex.models.bottlenecks import (
    BernoulliBottleneck,
    GaussianBottleneck,
    SignBottleneck,
    bernoulli_kl,
    make_bottleneck,
)


@pytest.mark.parametrize("name", ["sign", "bernoulli", "vq"])
def test_bits_are_binary_and_carry_gradients(name):
    torch.manual_seed(0)
    bottleneck = make_bottleneck(name, n_bits=16, kl_weight=0.1).train()
    logits = torch.randn(8, 16, requires_grad=True)
    out = bottleneck(logits)
    assert set(out.z.unique().tolist()) <= {0.0, 1.0}
    assert out.z.shape == out.latent.shape == (8, 16)
    (out.z.sum() + out.loss).backward()
    # straight-through: d bits / d logits > 0 everywhere (sigmoid'(logits); vq: 1/2 before its terms)
    assert logits.grad is not None and (logits.grad.abs() > 0).all()


@pytest.mark.parametrize("name", ["sign", "bernoulli", "vq"])
def test_eval_is_deterministic_threshold(name):
    bottleneck = make_bottleneck(name, n_bits=64, kl_weight=0.1).eval()
    logits = torch.randn(32, 64)
    a, b = bottleneck(logits).z, bottleneck(logits).z
    assert torch.equal(a, b)
    assert torch.equal(a.bool(), logits > 0)
    assert torch.equal(bottleneck.binarize(logits), logits > 0)


def test_bernoulli_samples_in_training():
    torch.manual_seed(0)
    bottleneck = BernoulliBottleneck(kl_weight=0.0).train()
    logits = torch.zeros(2000, 8)  # p = 0.5: samples, not a threshold
    mean = bottleneck(logits).z.mean().item()
    assert 0.45 < mean < 0.55
    assert not torch.equal(bottleneck(logits).z, bottleneck(logits).z)


def test_sign_is_deterministic_in_training():
    bottleneck = SignBottleneck().train()
    logits = torch.randn(16, 8)
    assert torch.equal(bottleneck(logits).z, bottleneck(logits).z)


def test_kl_is_zero_at_half_and_grows():
    assert bernoulli_kl(torch.zeros(4, 8)).item() == pytest.approx(0.0, abs=1e-6)
    small, large = bernoulli_kl(torch.full((1, 8), 1.0)), bernoulli_kl(torch.full((1, 8), 5.0))
    assert 0 < small.item() < large.item() < 8 * torch.log(torch.tensor(2.0)).item() + 1e-6
    assert torch.isfinite(bernoulli_kl(torch.full((1, 4), 200.0)))


def test_kl_weight_scales_loss():
    logits = torch.randn(4, 8)
    a = BernoulliBottleneck(kl_weight=1.0).eval()(logits).loss
    b = BernoulliBottleneck(kl_weight=0.25).eval()(logits).loss
    assert b.item() == pytest.approx(a.item() * 0.25, rel=1e-5)


def test_unknown_bottleneck_names_choices():
    with pytest.raises(ValueError, match="sign, bernoulli, gaussian, vq"):
        make_bottleneck("nope", n_bits=8, kl_weight=0.0)


def test_gaussian_reparameterizes_in_training_and_uses_the_mean_in_eval():
    torch.manual_seed(0)
    bottleneck = GaussianBottleneck(n_bits=4, kl_weight=1.0)
    logits = torch.cat([torch.randn(64, 4), torch.full((64, 4), -2.0)], dim=1)  # mean, log-variance
    logits.requires_grad_(True)
    out = bottleneck.train()(logits)
    assert out.z.shape == (64, 4) and not torch.equal(out.z, logits[:, :4])
    (out.z.sum() + out.loss).backward()
    assert (logits.grad[:, :4] != 0).all() and (logits.grad[:, 4:] != 0).all()  # mean and variance both learn
    assert torch.equal(bottleneck.eval()(logits).z, logits[:, :4])


def test_gaussian_kl_is_zero_for_the_prior():
    logits = torch.zeros(3, 8)  # mean 0, log-variance 0
    assert GaussianBottleneck(n_bits=4, kl_weight=1.0)(logits).loss.item() == pytest.approx(0.0, abs=1e-6)


def test_gaussian_codes_threshold_the_mean_at_the_training_median():
    bottleneck = GaussianBottleneck(n_bits=3, kl_weight=1.0).eval()
    mean = torch.randn(101, 3) + torch.tensor([5.0, -3.0, 0.0])  # off-centre dimensions
    logits = torch.cat([mean, torch.zeros(101, 3)], dim=1)
    bottleneck.calibrate(logits)
    bits = bottleneck.binarize(logits)
    assert torch.equal(bits.sum(dim=0), torch.tensor([50, 50, 50]))  # balanced: half above each median
    assert "thresholds" in bottleneck.state_dict()
