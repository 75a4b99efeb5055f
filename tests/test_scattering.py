"""The scattering transform behind the pixel preset's reconstruction targets (models.scattering) and its use in
training (TrainConfig.target_features)."""

import numpy as np
import pytest
import torch
from hamdex.models.autoencoder import ModelConfig
from hamdex.models.scattering import _blur_matrix, _modulus, filter_bank, n_channels, scattering, scattering_features
from hamdex.models.train import TrainConfig, fit_hasher, training_data

from tests.conftest import digit_images


def _blobs(n: int = 6, size: int = 28, seed: int = 0) -> np.ndarray:
    """float32 (n, size, size): smooth random shapes on an empty border, like centred object images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        for _ in range(4):
            cy, cx = rng.uniform(8, size - 8, 2)
            sy, sx = rng.uniform(1.5, 4, 2)
            out[i] += np.exp(-((yy - cy) ** 2) / (2 * sy**2) - (xx - cx) ** 2 / (2 * sx**2))
    return out / out.max()


def test_shapes_follow_scales_orientations_and_channels():
    assert n_channels(2, 8) == 81 and n_channels(3, 4) == 1 + 12 + 16 * 3
    assert scattering(torch.from_numpy(_blobs(3))).shape == (3, 81, 7, 7)
    assert scattering(torch.zeros(2, 16, 24)).shape == (2, 81, 4, 6)  # not square
    assert scattering(torch.zeros(1, 30, 30)).shape == (1, 81, 8, 8)  # not a multiple of 2^J: ceil
    grey = _blobs(2).reshape(2, -1)
    assert scattering_features(grey, (28, 28)).shape == (2, 81 * 49)
    colour = np.repeat(_blobs(2)[..., None], 3, axis=3)  # (2, 28, 28, 3): each channel on its own
    feats = scattering_features(colour.reshape(2, -1), (28, 28, 3))
    assert feats.shape == (2, 3 * 81 * 49)
    np.testing.assert_allclose(feats[:, : 81 * 49], scattering_features(grey, (28, 28)), rtol=1e-5, atol=1e-6)


def test_a_flat_image_has_only_its_average():
    """Wavelets sum to zero, so a constant image has no order-1 or order-2 energy; order 0 is its value."""
    out = scattering(torch.full((1, 28, 28), 0.7))
    np.testing.assert_allclose(out[0, 0].numpy(), 0.7, rtol=1e-5)
    assert out[0, 1:].abs().max() < 1e-5


def _rectangles(n: int = 8, size: int = 28, seed: int = 0) -> np.ndarray:
    """float32 (n, size, size): a few sharp-edged rectangles each, inside an empty border."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        for _ in range(3):
            (y, x), (h, w) = rng.integers(4, 16, 2), rng.integers(3, 9, 2)
            out[i, y : y + h, x : x + w] = rng.uniform(0.3, 1)
    return out


def test_coefficients_barely_move_when_the_image_shifts():
    """The point of scattering: a one-pixel shift moves sharp edges a lot as pixels (0.55 relative change here)
    and little as coefficients (0.15)."""
    images = _rectangles()
    shifted = np.roll(images, 1, axis=2)  # the border is empty, so nothing wraps
    pixels = np.linalg.norm(shifted - images) / np.linalg.norm(images)
    a, b = (scattering_features(x.reshape(len(x), -1), (28, 28)) for x in (images, shifted))
    coeffs = np.linalg.norm(b - a) / np.linalg.norm(a)
    assert coeffs < 0.4 * pixels, (coeffs, pixels)


def test_second_order_matches_a_full_resolution_computation():
    """Order 2 is computed on a grid folded 2x coarser (a spectrum sum); it must match the plain full-resolution
    cascade: convolve, modulus, convolve, modulus, blur, sample every 4 pixels."""
    images = torch.from_numpy(_blobs(3))
    x = torch.nn.functional.pad(images[:, None], (4, 4, 4, 4), mode="reflect")[:, 0]  # (3, 36, 36)
    psi = filter_bank((36, 36), 2, 8)
    u1 = _modulus(torch.fft.ifft2(torch.fft.fft2(x)[:, None] * psi[0]))  # (3, 8, 36, 36)
    u2 = _modulus(torch.fft.ifft2(torch.fft.fft2(u1)[:, :, None] * psi[1]))  # (3, 8, 8, 36, 36)
    blur = _blur_matrix(36, 1.6, 4, 7)
    expected = (blur.T @ u2 @ blur).flatten(1, 2)  # (3, 64, 7, 7)
    got = scattering(images)[:, 17:]
    assert torch.linalg.norm(got - expected) / torch.linalg.norm(expected) < 0.01


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="not images of shape"):
        scattering_features(np.zeros((2, 100), np.float32), (28, 28))
    with pytest.raises(ValueError, match="too small"):
        scattering(torch.zeros(1, 6, 6))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        scattering(torch.zeros(6, 6))


def test_train_config_names_the_target_features():
    assert TrainConfig().target_features == "input"
    with pytest.raises(ValueError, match="input, scattering"):
        TrainConfig(target_features="edges")


def test_training_data_reconstructs_neighbour_means_of_standardised_coefficients():
    x = digit_images(60).reshape(60, -1).astype(np.float32) / 255
    data = training_data(x, TrainConfig(neighbours=3, target_features="scattering"), 16, image_shape=(8, 8))
    assert data.targets.shape == (60, 81 * 2 * 2)
    alone = training_data(x, TrainConfig(target_features="scattering"), 16, image_shape=(8, 8)).targets
    np.testing.assert_allclose(alone.mean(axis=0), 0, atol=1e-4)  # standardised over the training rows
    # each target is the mean of the item's and its neighbours' standardised coefficients
    rows = np.concatenate([[0], data.neighbours[0]])
    np.testing.assert_allclose(data.targets[0], alone[rows].mean(axis=0), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="image shape"):
        training_data(x, TrainConfig(target_features="scattering"), 16)


def test_pixel_models_train_on_scattering_targets():
    images = digit_images(120)
    cfg = TrainConfig(epochs=2, neighbours=5, contrastive_weight=1.0, target_features="scattering", progress=False)
    hasher, result = fit_hasher(images, "pixels", {"n_bits": 16, "hidden": (32,)}, cfg)
    config = hasher.model.config
    assert config.output_dim == 81 * 2 * 2 and config.recon == "gaussian"  # the decoder's width and loss
    assert np.isfinite([h["train_loss"] for h in result.history]).all()
    codes = hasher.encode(images[:10]).codes  # the encoder reads pixels: no scattering at query time
    assert codes.shape == (10, 2)
    again, _ = fit_hasher(images, "pixels", {"n_bits": 16, "hidden": (32,)}, cfg)
    np.testing.assert_array_equal(again.encode(images[:10]).codes, codes)  # seeded
    with pytest.raises(ValueError, match="needs images"):
        fit_hasher(["a text", "another"], "text", {"n_bits": 16}, cfg)


def test_model_config_output_dim():
    assert ModelConfig(input_dim=10).output_dim == 0  # the decoder reconstructs the input
    assert ModelConfig.from_dict({"input_dim": 10, "n_bits": 16}).output_dim == 0  # checkpoints from before it
    with pytest.raises(ValueError, match="output_dim"):
        ModelConfig(input_dim=10, output_dim=-1)
