"""A fixed 2-D scattering transform of images (Mallat 2012; Bruna & Mallat 2013), as reconstruction targets.

Scattering coefficients are averages of wavelet-modulus cascades: for Morlet wavelets psi at scales 2^j (j < J) and
L orientations and a Gaussian low-pass phi of width 2^J,

    order 0: x * phi,    order 1: |x * psi_j1| * phi,    order 2: ||x * psi_j1| * psi_j2| * phi  (j1 < j2),

each sampled every 2^J pixels. They are stable to small shifts and deformations, unlike pixels: two shirts a pixel
apart are far apart as pixels and close as scattering coefficients. hamdex uses them for one thing (see
``TrainConfig.target_features``): what the pixel model's decoder reconstructs, so the bits learn shape and texture
rather than exact pixel positions. The encoder still reads pixels, so codes need no scattering at query time.

The filters follow the usual Morlet parameters (sigma 0.8 * 2^j, centre frequency 3/4 * pi / 2^j, slant 4 / L;
low-pass sigma 0.8 * 2^(J - 1)). Wavelet convolutions are products in the Fourier domain of the reflect-padded
image; the low-pass is a separable Gaussian blur sampled every 2^J pixels (two small matrix products).
"""

from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np
import torch

from hamdex.progress import progress as progress_bar

LOG = logging.getLogger(__name__)

J_DEFAULT = 2  # scales: the coefficients average over 4 x 4 pixel blocks
L_DEFAULT = 8  # orientations


def _gabor(shape: tuple[int, int], sigma: float, theta: float, xi: float, slant: float = 1.0) -> np.ndarray:
    """complex128 (h, w): a Gabor filter centred on pixel (0, 0), periodised over the h x w grid."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    curv = rot @ np.diag([1.0, slant**2]) @ rot.T / (2 * sigma**2)
    h, w = shape
    out = np.zeros(shape, np.complex128)
    for dx in (-2, -1, 0, 1, 2):
        for dy in (-2, -1, 0, 1, 2):
            x, y = np.meshgrid(np.arange(h) + dx * h, np.arange(w) + dy * w, indexing="ij")
            quad = curv[0, 0] * x * x + (curv[0, 1] + curv[1, 0]) * x * y + curv[1, 1] * y * y
            out += np.exp(-quad + 1j * xi * (c * x + s * y))
    return out / (2 * math.pi * sigma**2 / slant)


def _morlet(shape: tuple[int, int], sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """A Gabor filter minus the multiple of its envelope that makes it sum to zero (no response to flat regions)."""
    wave, envelope = _gabor(shape, sigma, theta, xi, slant), _gabor(shape, sigma, theta, 0.0, slant)
    return wave - envelope * (wave.sum() / envelope.sum())


def _blur_matrix(n: int, sigma: float, stride: int, count: int) -> torch.Tensor:
    """float32 (n, count): column c is a unit-sum Gaussian (circular on n samples) centred on sample (c + 1) * stride;
    ``maps @ matrix`` blurs rows and keeps every stride-th sample, skipping the first."""
    offsets = (np.arange(n)[:, None] - (np.arange(count)[None, :] + 1) * stride) % n
    distance = np.minimum(offsets, n - offsets)
    weights = np.exp(-(distance**2) / (2 * sigma**2))
    return torch.from_numpy(weights / weights.sum(axis=0)).float()


@functools.lru_cache(maxsize=8)
def filter_bank(shape: tuple[int, int], J: int, L: int) -> torch.Tensor:
    """complex64 (J, L, h, w): the Fourier transforms of the Morlet wavelets on an h x w grid (cached: read only)."""
    psi = [
        [_morlet(shape, 0.8 * 2**j, (L // 2 - 1 - t) * math.pi / L, 0.75 * math.pi / 2**j, 4 / L) for t in range(L)]
        for j in range(J)
    ]
    return torch.fft.fft2(torch.from_numpy(np.array(psi))).to(torch.complex64)


def _modulus(z: torch.Tensor) -> torch.Tensor:
    """|z| of a complex tensor (faster than torch.abs, which guards against overflow these values cannot reach)."""
    return torch.view_as_real(z).square().sum(-1).sqrt()


def n_channels(J: int = J_DEFAULT, L: int = L_DEFAULT) -> int:
    """Coefficient maps per image channel: 1 + J L + L^2 J (J - 1) / 2 (81 for J=2, L=8)."""
    return 1 + J * L + L * L * J * (J - 1) // 2


def scattering(images: torch.Tensor, J: int = J_DEFAULT, L: int = L_DEFAULT) -> torch.Tensor:
    """(B, H, W) real images -> (B, n_channels(J, L), ceil(H / 2^J), ceil(W / 2^J)) coefficients (>= 0 but order 0)."""
    if images.ndim != 3:
        raise ValueError(f"images must be (B, H, W), got shape {tuple(images.shape)}")
    step = 2**J
    h, w = images.shape[1:]
    if min(h, w) < 2 * step:
        raise ValueError(f"images of {h} x {w} pixels are too small for J={J} (need {2 * step} or more a side)")
    out_h, out_w = -(-h // step), -(-w // step)
    side_h, side_w = (out_h + 2) * step, (out_w + 2) * step  # a whole number of output samples, padding included
    # reflect-pad by 2^J above and left (the rest below and right) so the filters see no wrap-around at the edges
    pad = (step, side_w - w - step, step, side_h - h - step)
    x = torch.nn.functional.pad(images.float()[:, None], pad, mode="reflect")[:, 0]
    psi = filter_bank((side_h, side_w), J, L)
    sigma = 0.8 * 2 ** (J - 1)  # of the low-pass, in pixels

    def lowpass(u: torch.Tensor, k: int = 1) -> torch.Tensor:
        """(..., H', W') maps sampled every k pixels -> (..., out_h, out_w): blurred, sampled every 2^J pixels."""
        # the first output sample of each side averages the 2^J pixels of padding, so it is skipped
        rows = _blur_matrix(u.shape[-2], sigma / k, step // k, out_h)  # (H', out_h)
        cols = _blur_matrix(u.shape[-1], sigma / k, step // k, out_w)  # (W', out_w)
        return rows.T @ u @ cols

    x_hat = torch.fft.fft2(x)  # (B, side_h, side_w)
    maps = [lowpass(x)[:, None]]
    u1 = _modulus(torch.fft.ifft2(x_hat[:, None, None] * psi))  # (B, J, L, side_h, side_w)
    maps.append(lowpass(u1).flatten(1, 2))
    u1_hat = torch.fft.fft2(u1[:, : J - 1])
    for j1 in range(J - 1):
        for j2 in range(j1 + 1, J):
            # |u1 * psi_j2| varies no faster than 2^j2 pixels: fold the spectrum onto the coarser grid, which
            # samples the convolution every 2^j2 pixels at 1 / 4^j2 of the cost
            k, n, m = 2**j2, side_h // 2**j2, side_w // 2**j2
            spectrum = u1_hat[:, j1, :, None] * psi[j2][None, None]  # (B, L, L, side_h, side_w)
            folded = sum(spectrum[..., a * n : (a + 1) * n, b * m : (b + 1) * m] for a in range(k) for b in range(k))
            u2 = _modulus(torch.fft.ifft2(folded)) / (k * k)  # (B, L, L, n, m)
            maps.append(lowpass(u2, k).flatten(1, 2))
    return torch.cat(maps, dim=1)


def scattering_features(
    pixels: np.ndarray,
    shape: tuple[int, ...],
    J: int = J_DEFAULT,
    L: int = L_DEFAULT,
    batch_size: int = 1000,
    progress: bool = False,
) -> np.ndarray:
    """float32 (n, d) pixel rows of images ``shape`` ((h, w) or (h, w, c)) -> float32 (n, c * n_channels * h' * w'):
    the square root of each coefficient (which evens out their dynamic range), every channel's maps side by side."""
    if len(shape) not in (2, 3) or int(np.prod(shape)) != pixels.shape[1]:
        raise ValueError(f"pixel rows of {pixels.shape[1]} values are not images of shape {tuple(shape)}")
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    dim = c * n_channels(J, L) * -(-h // 2**J) * -(-w // 2**J)
    out = [np.zeros((0, dim), np.float32)]
    with torch.no_grad():
        for start in progress_bar(range(0, len(pixels), batch_size), desc="scattering", unit="batch", enabled=progress):
            imgs = torch.from_numpy(np.asarray(pixels[start : start + batch_size], np.float32)).view(-1, h, w, c)
            coeffs = scattering(imgs.permute(0, 3, 1, 2).reshape(-1, h, w), J, L)  # (b * c, C, h', w')
            out.append(coeffs.abs().sqrt().reshape(len(imgs), -1).numpy())
    return np.concatenate(out)


def scattering_targets(pixels: np.ndarray, shape: tuple[int, ...], progress: bool = False) -> np.ndarray:
    """float32 (n, d'): :func:`scattering_features` standardised per coefficient over these rows (zero mean, unit
    variance; coefficients that barely vary, such as those of an always-empty border, are divided by at least
    1e-3 rather than blown up)."""
    t0 = time.perf_counter()
    feats = scattering_features(pixels, shape, progress=progress)
    feats = (feats - feats.mean(axis=0)) / np.maximum(feats.std(axis=0), 1e-3)
    LOG.info(
        "scattering targets: %d coefficients for %d images in %.1fs",
        feats.shape[1],
        len(feats),
        time.perf_counter() - t0,
    )
    return feats.astype(np.float32)
