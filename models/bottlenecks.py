"""Binary bottlenecks: encoder logits -> bits in {0, 1} with a gradient.

Each bottleneck is one small module with one interface:

- ``logits_per_bit``: how many encoder outputs each bit takes (the encoder emits ``n_bits * logits_per_bit``);
- ``forward(logits)`` -> :class:`BottleneckOutput` (what the decoder sees, the continuous latent, a regulariser);
  stochastic in training where the method is, deterministic in eval;
- ``binarize(logits)`` -> bool bits, always deterministic (what gets indexed);
- ``latent(logits)`` -> the continuous code (bit probabilities, or the Gaussian mean);
- ``calibrate(logits)`` (optional): fit thresholds on the training set's logits after training.

``sign``: deterministic binary autoencoder, bits = 1[sigmoid(logits) > 0.5] with a straight-through estimator
(Bengio et al. 2013, "Estimating or propagating gradients through stochastic neurons").

``bernoulli``: NASH (Shen et al., ACL 2018, "NASH: Toward End-to-End Neural Architecture for Generative Semantic
Hashing"): bits ~ Bernoulli(sigmoid(logits)) in training with a straight-through gradient, threshold 0.5 in eval,
and a KL term to a Bernoulli(0.5) prior.

``gaussian``: VDSH (Chaidaroon & Fang, SIGIR 2017, "Variational Deep Semantic Hashing"): a Gaussian VAE with the
re-parameterization trick z = mu + sigma * eps and a KL term to N(0, I); the decoder sees the continuous z, and
codes threshold the mean at each dimension's training median (so every bit is balanced on the training set).

``vq``: a binary VQ-VAE by lookup-free quantization (LFQ, MAGVIT-v2): sign bits with commitment and entropy terms
(``models.vq``; needs ``vector-quantize-pytorch``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class BottleneckOutput(NamedTuple):
    z: torch.Tensor  # (B, n_bits) what the decoder sees: bits in {0, 1} (straight-through), or continuous z
    latent: torch.Tensor  # (B, n_bits) continuous pre-binarization value
    loss: torch.Tensor  # () regulariser to add to the reconstruction loss (already weighted)


class SignBottleneck(nn.Module):
    """Deterministic bits with a straight-through estimator."""

    logits_per_bit = 1

    def forward(self, logits: torch.Tensor) -> BottleneckOutput:
        probs = torch.sigmoid(logits)  # (B, n_bits)
        hard = (probs > 0.5).to(probs.dtype)
        bits = probs + (hard - probs).detach()
        return BottleneckOutput(bits, probs, logits.new_zeros(()))  # (B, n_bits) each

    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        return logits > 0  # sigmoid(x) > 0.5  <=>  x > 0, without rounding at the boundary

    def latent(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)  # (B, n_bits) probability of each bit


class BernoulliBottleneck(nn.Module):
    """Sampled bits in training, thresholded in eval, KL(q(b|x) || Bernoulli(0.5)) weighted by ``kl_weight``."""

    logits_per_bit = 1

    def __init__(self, kl_weight: float) -> None:
        super().__init__()
        self.kl_weight = kl_weight

    def forward(self, logits: torch.Tensor) -> BottleneckOutput:
        probs = torch.sigmoid(logits)  # (B, n_bits)
        if self.training:
            hard = torch.bernoulli(probs.detach())
        else:
            hard = (logits > 0).to(probs.dtype)
        bits = probs + (hard - probs).detach()
        return BottleneckOutput(bits, probs, self.kl_weight * bernoulli_kl(logits))

    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        return logits > 0

    def latent(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


def bernoulli_kl(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum over bits of KL(Bernoulli(sigmoid(logits)) || Bernoulli(0.5)), in nats."""
    log_p = nn.functional.logsigmoid(logits)  # log p(b=1), stable for large |logits|
    log_q = nn.functional.logsigmoid(-logits)  # log p(b=0)
    p = log_p.exp()
    kl = p * log_p + (1 - p) * log_q + torch.log(torch.tensor(2.0, device=logits.device))  # (B, n_bits)
    return kl.sum(dim=1).mean()


class GaussianBottleneck(nn.Module):
    """Re-parameterized Gaussian latent; bits = mean above the per-dimension training median."""

    logits_per_bit = 2  # mean and log-variance

    def __init__(self, n_bits: int, kl_weight: float) -> None:
        super().__init__()
        self.kl_weight = kl_weight
        self.register_buffer("thresholds", torch.zeros(n_bits))  # (n_bits,) set by calibrate(); saved with weights

    def forward(self, logits: torch.Tensor) -> BottleneckOutput:
        mu, logvar = logits.chunk(2, dim=1)  # (B, n_bits) each
        logvar = logvar.clamp(-10, 10)  # keeps exp() finite early in training
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1).mean()
        return BottleneckOutput(z, mu, self.kl_weight * kl)

    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.chunk(2, dim=1)[0] > self.thresholds

    def latent(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.chunk(2, dim=1)[0]  # (B, n_bits) the mean

    @torch.no_grad()
    def calibrate(self, logits: torch.Tensor) -> None:
        """Thresholds = the median of each mean dimension over the training set (VDSH's binarization)."""
        self.thresholds.copy_(logits.chunk(2, dim=1)[0].float().median(dim=0).values)


BOTTLENECKS = ("sign", "bernoulli", "gaussian", "vq")


def make_bottleneck(name: str, *, n_bits: int, kl_weight: float) -> nn.Module:
    """The registry: the name stored in a model config -> its module."""
    if name == "sign":
        return SignBottleneck()
    if name == "bernoulli":
        return BernoulliBottleneck(kl_weight)
    if name == "gaussian":
        return GaussianBottleneck(n_bits, kl_weight)
    if name == "vq":
        from hamdex.models.vq import BinaryVQBottleneck  # imports this module; and only vq pays the library's import

        return BinaryVQBottleneck(n_bits, kl_weight)
    raise ValueError(f"unknown bottleneck {name!r}; choose one of {', '.join(BOTTLENECKS)}")
