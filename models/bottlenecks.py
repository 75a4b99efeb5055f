"""Binary bottlenecks: encoder logits -> bits in {0, 1} with a gradient.

Each bottleneck is one small module with one interface:

- ``forward(logits)`` -> :class:`BottleneckOutput` (bits used by the decoder, the continuous latent, a regulariser);
  stochastic in training where the method is, deterministic in eval;
- ``binarize(logits)`` -> bool bits, always deterministic (what gets indexed).

``sign``: deterministic binary autoencoder, bits = 1[sigmoid(logits) > 0.5] with a straight-through estimator
(Bengio et al. 2013, "Estimating or propagating gradients through stochastic neurons").

``bernoulli``: NASH (Shen et al., ACL 2018, "NASH: Toward End-to-End Neural Architecture for Generative Semantic
Hashing"): bits ~ Bernoulli(sigmoid(logits)) in training with a straight-through gradient, threshold 0.5 in eval,
and a KL term to a Bernoulli(0.5) prior.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class BottleneckOutput(NamedTuple):
    bits: torch.Tensor  # (B, n_bits) float in {0, 1}, straight-through gradient
    latent: torch.Tensor  # (B, n_bits) continuous pre-binarization value, probability of bit = 1
    loss: torch.Tensor  # () regulariser to add to the reconstruction loss (already weighted)


class SignBottleneck(nn.Module):
    """Deterministic bits with a straight-through estimator."""

    def forward(self, logits: torch.Tensor) -> BottleneckOutput:
        probs = torch.sigmoid(logits)  # (B, n_bits)
        hard = (probs > 0.5).to(probs.dtype)
        bits = probs + (hard - probs).detach()
        return BottleneckOutput(bits, probs, logits.new_zeros(()))

    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        return logits > 0  # sigmoid(x) > 0.5  <=>  x > 0, without rounding at the boundary


class BernoulliBottleneck(nn.Module):
    """Sampled bits in training, thresholded in eval, KL(q(b|x) || Bernoulli(0.5)) weighted by ``kl_weight``."""

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


def bernoulli_kl(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum over bits of KL(Bernoulli(sigmoid(logits)) || Bernoulli(0.5)), in nats."""
    log_p = nn.functional.logsigmoid(logits)  # log p(b=1), stable for large |logits|
    log_q = nn.functional.logsigmoid(-logits)  # log p(b=0)
    p = log_p.exp()
    kl = p * log_p + (1 - p) * log_q + torch.log(torch.tensor(2.0, device=logits.device))  # (B, n_bits)
    return kl.sum(dim=1).mean()


BOTTLENECKS = ("sign", "bernoulli")


def make_bottleneck(name: str, *, kl_weight: float) -> nn.Module:
    """The registry: the name stored in a model config -> its module."""
    if name == "sign":
        return SignBottleneck()
    if name == "bernoulli":
        return BernoulliBottleneck(kl_weight)
    raise ValueError(f"unknown bottleneck {name!r}; choose one of {', '.join(BOTTLENECKS)}")
