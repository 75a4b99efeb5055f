"""The adversarial prior on the codes (models.adversarial, ``TrainConfig.adversarial_weight``): the discriminator
learns to tell unfair codes from fair bits, the encoder's side of the loss moves codes towards fair, independent bits,
the term trains inside ``models.train`` without entering the checkpoint, and the option goes through the CLI and the
robustness benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hamdex.models import checkpoint
from hamdex.models.adversarial import ENCODER_LOSSES, AdversarialPrior
from hamdex.models.autoencoder import ModelConfig
from hamdex.models.bits import pack
from hamdex.models.health import code_health
from hamdex.models.train import TrainConfig, fit_hasher, train
from hamdex.service.cli import app
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from tests.conftest import digit_images
from tests.helpers import short_cli_train


def _skewed_scores(seed: int = 0) -> torch.Tensor:
    """(256, 16) scores whose first 8 bits are on for every item; the other 8 fair."""
    scores = torch.randn(256, 16, generator=torch.Generator().manual_seed(seed))
    scores[:, :8] = scores[:, :8].abs() + 0.5
    return scores


def _health(scores: torch.Tensor) -> dict[str, float]:
    return code_health(pack((scores.detach() > 0).numpy()))


def test_the_discriminator_tells_unfair_codes_from_fair_bits():
    torch.manual_seed(0)
    scores, adversary = _skewed_scores(), AdversarialPrior(16)
    before = adversary.accuracy(scores)
    opt = torch.optim.Adam(adversary.parameters(), lr=3e-3)
    for _ in range(100):  # the scores are fixed: only the discriminator learns
        loss = adversary(scores)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert adversary.accuracy(scores) > 0.9 > before
    fair = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
    assert 0.4 <= adversary.accuracy(fair) <= 0.6  # fair codes: it cannot tell


def test_the_encoders_side_moves_codes_towards_fair_independent_bits():
    torch.manual_seed(0)
    scores = torch.nn.Parameter(_skewed_scores())
    adversary = AdversarialPrior(16)
    opt = torch.optim.Adam([scores, *adversary.parameters()], lr=1e-2)
    before = _health(scores)
    for _ in range(200):
        loss = adversary(scores)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _health(scores)
    assert before["bit_balance"] == pytest.approx(0.53, abs=0.02)  # 8 constant bits, 8 fair ones
    assert after["bit_balance"] < 0.15 and after["distinct_code_fraction"] > 0.95 > before["distinct_code_fraction"]


def test_each_member_has_its_own_discriminator_and_bad_settings_are_refused():
    adversary = AdversarialPrior(32, members=2)
    assert [d.features[0].in_features for d in adversary.discriminators] == [16, 16]
    for encoder_loss in ENCODER_LOSSES:  # the two measured failures stay runnable
        loss = AdversarialPrior(16, encoder_loss=encoder_loss)(torch.randn(8, 16, requires_grad=True))
        assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="unknown encoder_loss"):
        AdversarialPrior(16, encoder_loss="wasserstein")
    with pytest.raises(ValueError, match="do not split"):
        AdversarialPrior(16, members=3)
    nested = AdversarialPrior(64, widths=[16, 16, 32])  # a nested model's members (models.autoencoder.member_widths)
    assert [d.features[0].in_features for d in nested.discriminators] == [16, 16, 32]
    assert torch.isfinite(nested(torch.randn(8, 64)))
    with pytest.raises(ValueError, match="add up"):
        AdversarialPrior(64, widths=[16, 32])


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_non_finite_weight_is_refused(weight):
    with pytest.raises(ValueError, match="adversarial_weight must be a finite number >= 0"):
        TrainConfig(adversarial_weight=weight)


def _digits() -> np.ndarray:
    return (load_digits().data / 16).astype(np.float32)  # (1797, 64) in [0, 1]


def _train(weight: float):
    torch.set_num_threads(1)
    config = ModelConfig(input_dim=64, n_bits=16, recon="bernoulli", hidden=(64,), kl_weight=0.1, members=2)
    cfg = TrainConfig(epochs=1, min_steps=300, batch_size=128, lr=1e-3, adversarial_weight=weight, progress=False)
    return train(config, cfg, _digits())


def test_the_term_trains_balanced_independent_codes_with_the_same_weights_as_without():
    base, adversarial = _train(0.0), _train(10.0)
    codes = {}
    for name, result in (("base", base), ("adversarial", adversarial)):
        assert all(np.isfinite(row["train_loss"]) for row in result.history)
        with torch.no_grad():
            codes[name] = _health(result.model.scores(torch.from_numpy(_digits())))
    # the same model, the same weights' names and shapes: no discriminator in the state dict
    assert {k: v.shape for k, v in adversarial.model.state_dict().items()} == {
        k: v.shape for k, v in base.model.state_dict().items()
    }
    assert codes["adversarial"]["distinct_code_fraction"] > 1.5 * codes["base"]["distinct_code_fraction"]
    assert codes["adversarial"]["bit_balance"] < codes["base"]["bit_balance"]


def test_weight_zero_is_the_model_without_the_term():
    config = ModelConfig(input_dim=64, n_bits=16, recon="bernoulli", hidden=(16,))
    plain = train(config, TrainConfig(epochs=2, progress=False), _digits()[:300])
    zero = train(config, TrainConfig(epochs=2, adversarial_weight=0.0, progress=False), _digits()[:300])
    assert [row["train_loss"] for row in plain.history] == [row["train_loss"] for row in zero.history]
    for a, b in zip(plain.model.state_dict().values(), zero.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_model_trained_with_the_term_checkpoints_and_serves_like_any(tmp_path):
    cfg = TrainConfig(epochs=2, adversarial_weight=5.0, progress=False)
    hasher, _ = fit_hasher(digit_images(), "pixels", {"n_bits": 16, "hidden": (16,)}, cfg)
    assert hasher.info["train_config"]["adversarial_weight"] == 5.0
    fp = checkpoint.save(tmp_path / "m", hasher)
    loaded = checkpoint.load(tmp_path / "m", "cpu")  # rebuilt from the model config alone; the fingerprint checks
    assert loaded.fingerprint == fp and loaded.info["train_config"]["adversarial_weight"] == 5.0
    images = digit_images()[:20]
    assert np.array_equal(loaded.encode(images).codes, hasher.encode(images).codes)


def test_a_nested_model_trains_with_the_term():
    cfg = TrainConfig(epochs=1, adversarial_weight=1.0, progress=False)
    model = {"n_bits": 64, "hidden": (16,), "members": 2, "nested": (16, 32)}  # members of 16, 16 and 32 bits
    hasher, result = fit_hasher(digit_images(), "pixels", model, cfg)
    assert np.isfinite(result.history[-1]["train_loss"])
    assert hasher.encode(digit_images()[:5]).codes.shape == (5, 8)


def test_the_cli_records_the_weight_and_refuses_a_negative_one(tmp_path):
    path = tmp_path / "digits.npy"
    np.save(path, digit_images())
    common = ["train", str(path), "--bits", "16", "--hidden", "16", "--epochs", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "m"), "--adversarial-weight", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m" / "hamdex.json").read_text())["train_config"]["adversarial_weight"] == 3.0
    result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "bad"), "--adversarial-weight", "-1"])
    assert (
        result.exit_code == 2
        and "adversarial-weight" in result.output
        and "greater than or equal to 0" in result.output
    )
    assert not (tmp_path / "bad").exists()


def test_the_robustness_benchmark_trains_each_variant_through_the_cli(monkeypatch):
    from benchmarks import robustness

    seen = short_cli_train(monkeypatch)
    d = load_digits()
    images, labels = np.round(d.images[:240] * (255 / 16)).astype(np.uint8), d.target[:240]
    split = robustness.Split(
        robustness._block(images[:200], labels[:200], "image"), robustness._block(images[200:], labels[200:], "image")
    )
    monkeypatch.setitem(robustness.DATASETS, "digits", lambda: split)
    variants = robustness.parse_args(["--variants", '{"adv3": {"adversarial_weight": 3}}']).variants
    cell = robustness.run(["digits-16"], None, [None], variants)["digits-16"]
    assert [o.get("adversarial_weight") for o in seen] == [None, 3]
    assert {"hamdex", "hamdex_adv3", "itq", "lsh_centered"} == set(cell)
    for row in (cell["hamdex"], cell["hamdex_adv3"]):
        assert 0 <= row["bit_balance"] <= 1 and 0 <= row["mean_abs_bit_correlation"] <= 1
        # the model's own scores come from the safeguard, which 20 held-out items are too few for
        assert row["safeguard"] == "unchecked" and "model_probe_map" not in row
    with pytest.raises(SystemExit):
        robustness.parse_args(["--variants", "[1, 2]"])


def test_the_quality_harness_trains_the_adversarial_variant_only_when_named(monkeypatch):
    from hamdex.evaluation import harness

    images, labels = digit_images(), load_digits().target[: len(digit_images())].astype(str)
    split = harness.Split(images[:200], labels[:200], images[200:260], labels[200:260])
    tiny = harness.Scale(epochs=1, batch_size=64)
    dataset = harness.Dataset("digits", "pixels", lambda scale, seed: split, (16,), tiny, tiny)
    real_train, seen = harness.train_model, []

    def small_train(inputs, featurizer, bottleneck, n_bits, scale, seed=0, train_options=None):
        seen.append(train_options)
        hasher, seconds = real_train(inputs, featurizer, bottleneck, n_bits, scale, seed, train_options)
        assert hasher.info["train_config"]["adversarial_weight"] == (train_options or {}).get("adversarial_weight", 0)
        return hasher, seconds

    monkeypatch.setattr(harness, "train_model", small_train)
    run = harness.run_dataset(dataset, [16], quick=True, methods=["hamdex_adversarial"], progress=False)
    assert seen == [None, harness.OBJECTIVE_VARIANTS["hamdex_adversarial"]]
    assert {"hamdex", "hamdex_adversarial", "itq"} <= set(run.results[16])
    assert "hamdex_adversarial" not in harness.model_variants("pixels")  # not in a default run
