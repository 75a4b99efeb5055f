"""Short codes read out of wider scores (``ModelConfig.readout_from``): the members train at the wider width and
the itq read-out projects their scores to the code's bits by PCA, then ITQ. What the preset does with it (text and
image codes under 32 bits), what turns it off, the checkpoint round trip and the CLI option."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hamdex.models import checkpoint
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig, member_widths, score_bits
from hamdex.models.ensemble import MemberEnsemble, build_model, parts
from hamdex.models.presets import resolve
from hamdex.models.readout import RotationReadout, fit_itq, squash
from hamdex.models.train import TrainConfig, fit_hasher
from hamdex.service.cli import app
from typer.testing import CliRunner

from tests.conftest import digit_images


def test_the_members_train_at_the_wider_width():
    config = ModelConfig(input_dim=6, n_bits=16, recon="gaussian", readout="itq", readout_from=32)
    assert score_bits(config) == 32 and member_widths(config) == [32]
    model = build_model(config).eval()
    assert isinstance(model, MemberEnsemble) and [p.config.n_bits for p in parts(model)] == [32]
    assert all(p.config.readout_from == 0 and p.readout is None for p in parts(model))
    assert model.readout.rotation.shape == (32, 16) and model.readout.mean.shape == (32,)
    bits, latent = model.encode(torch.randn(5, 6))
    assert bits.shape == latent.shape == (5, 16)
    two = ModelConfig(input_dim=6, n_bits=16, recon="gaussian", readout="itq", readout_from=64, members=2)
    assert member_widths(two) == [32, 32] and build_model(two).scores(torch.randn(3, 6)).shape == (3, 64)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"readout_from": 32}, "needs the itq read-out"),  # threshold read-out
        ({"readout_from": 16, "readout": "itq"}, "more than the code's 16 bits"),
        ({"readout_from": 12, "readout": "itq"}, "multiple of 8"),
        ({"readout_from": 32, "readout": "itq", "nested": (8,)}, "no nested prefixes"),
        ({"readout_from": 40, "readout": "itq", "members": 2}, "do not split"),
    ],
)
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(input_dim=6, n_bits=16, **options)
    with pytest.raises(ValueError, match="MemberEnsemble"):
        HashingAutoencoder(ModelConfig(input_dim=6, n_bits=16, readout="itq", readout_from=32))


def test_the_projection_is_itq_on_the_squashed_scores():
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.standard_normal((500, 4)) @ rng.standard_normal((4, 24)) * 6, dtype=torch.float32)
    readout = RotationReadout(8, in_bits=24)
    readout.fit(scores, seed=3)
    r = readout.rotation.double()
    np.testing.assert_allclose((r.T @ r).numpy(), np.eye(8), atol=1e-8)  # orthonormal columns: PCA, then a rotation
    v = squash(scores).double().numpy()
    mean, projection = fit_itq(v, 8, seed=3)  # ITQ with the scores as features: the same bits
    want = (v - mean) @ projection >= 0
    assert np.array_equal(readout(scores).numpy() > 0, want)
    with pytest.raises(ValueError, match="never up"):
        RotationReadout(16, in_bits=8)


def test_the_preset_reads_narrow_codes_out_of_32_bits():
    model, _ = resolve("pixels", 1000, {"n_bits": 16}, {})
    assert (
        model["readout_from"] == 32
        and model["kl_weight"] == resolve("pixels", 1000, {"n_bits": 32}, {})[0]["kl_weight"]
    )  # the 32-bit model's settings
    for given in ({"readout": "threshold"}, {"readout_from": 0}, {"members": 1}, {"nested": (8,)}):
        assert not resolve("pixels", 1000, {"n_bits": 16, **given}, {})[0].get("readout_from"), given
    assert "readout_from" not in resolve("pixels", 1000, {"n_bits": 32}, {})[0]
    assert resolve("text", 1000, {"n_bits": 16}, {})[0]["readout_from"] == 32
    assert "readout_from" not in resolve("dense", 1000, {"n_bits": 16}, {})[0]
    assert resolve("pixels", 1000, {"n_bits": 16, "readout_from": 64}, {})[0]["readout_from"] == 64


def test_a_trained_model_round_trips_and_older_fingerprints_stay(tmp_path, make_client):
    images = digit_images(200)
    over = {"n_bits": 16, "hidden": (32,), "readout": "itq", "readout_from": 32}
    hasher, _ = fit_hasher(images, "pixels", over, TrainConfig(epochs=2, progress=False, seed=0, device="cpu"))
    codes = hasher.encode(images).codes
    assert codes.shape == (200, 2) and len(np.unique(codes, axis=0)) > 10
    fp = checkpoint.save(tmp_path / "m", hasher)
    loaded = checkpoint.load(tmp_path / "m", device="cpu")
    assert loaded.fingerprint == fp and loaded.model.config.readout_from == 32
    np.testing.assert_array_equal(loaded.encode(images).codes, codes)
    assert checkpoint.LATER_FIELDS["readout_from"] == 0  # left out of older models' fingerprints
    # served like any model: /info says how the code is read out, and the service's codes are the model's
    client = make_client(tmp_path / "m")
    info = client.get("/info").json()
    assert info["n_bits"] == 16 and info["readout_from"] == 32 and info["fingerprint"] == fp
    resp = client.post("/v1/encode", json={"inputs": images[:5].tolist(), "format": "bits", "latent": True})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    from hamdex.models.bits import unpack

    assert body["codes"] == unpack(codes[:5]).astype(int).tolist()
    assert np.asarray(body["latent"]).shape == (5, 16)  # a score per bit of the code, not per trained bit
    # the decoder sees the 32 trained bits: a code is projected back through the read-out (models.generate)
    from hamdex.models.generate import generate

    decoded = generate(loaded, codes[:5]).outputs
    assert decoded.shape == (5, 64) and np.isfinite(decoded).all()
    assert np.corrcoef(decoded.ravel(), hasher.features(images[:5]).ravel())[0, 1] > 0.2  # a likeness of the items


def test_the_cli_option_reaches_the_model(tmp_path):
    data = tmp_path / "digits.npz"
    images = digit_images(300)
    np.savez(data, X=images)
    runner = CliRunner()
    for option, want in ((["--readout-from", "0"], 0), ([], 32)):
        out = tmp_path / f"m{want}"
        args = ["train", str(data), "--out", str(out), "--bits", "16", "--epochs", "1", "--hidden", "16"]
        result = runner.invoke(app, [*args, "--no-safeguard", *option])
        assert result.exit_code == 0, result.output
        assert checkpoint.load(out, device="cpu").model.config.readout_from == want
    result = runner.invoke(
        app, ["train", str(data), "--out", str(tmp_path / "bad"), "--bits", "16", "--readout-from", "12"]
    )
    assert result.exit_code != 0 and "multiple of 8" in result.output
