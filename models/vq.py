"""``vq``: a binary VQ-VAE bottleneck by lookup-free quantization (LFQ; Yu et al. 2023, "Language Model Beats
Diffusion: Tokenizer is Key to Visual Generation", MAGVIT-v2), through ``vector-quantize-pytorch``'s ``LFQ``.

The codebook is {-1, 1}^n_bits, so the nearest codeword of the encoder output x is sign(x) with no lookup: bit i is
1[x_i > 0], the same rule as the other bottlenecks, with the straight-through gradient ``x + (q - x).detach()``.
What makes it a VQ-VAE rather than ``sign`` are its two terms, added in training only:

- commitment: ||x - sign(x)||^2 keeps the encoder's outputs near the codewords (VQ-VAE's beta term);
- entropy: the mean per-item entropy of the soft code assignment minus the entropy of the batch's mean assignment,
  so each item commits to a code while the batch spreads over all codes (balanced, decorrelated bits).

LFQ's soft assignment is a softmax over the codebook; over 2^n_bits codes it cannot be held, so the bits are split
into codebooks of ``GROUP_BITS`` (a byte: 256 codes each) and the batch entropy is taken per byte. The library fits
as is: with ``dim`` equal to the bits it adds no projections, and it quantizes in float32 under autocast.
The decoder sees the bits in {0, 1}, as from every other bottleneck.
"""

from __future__ import annotations

import torch
from hamdex.models.bottlenecks import BottleneckOutput
from torch import nn

GROUP_BITS = 8  # bits per LFQ codebook: the batch entropy is over each byte's 256 codes
# LFQ's soft assignment over one codebook factors into independent bits with p(bit = 1) = sigmoid(4 T x); with T = 1
# a bit at its codeword (|x| = 1, where the commitment pulls it) has p = 0.98 (the library's T = 100 saturates:
# no entropy gradient beyond |x| > 0.01)
INV_TEMPERATURE = 1.0
COMMITMENT_WEIGHT = 0.25  # VQ-VAE's beta, per bit


class BinaryVQBottleneck(nn.Module):
    """Bits = 1[x > 0] with a straight-through gradient; LFQ's commitment and entropy terms as the regulariser,
    each summed over the code (the entropy weighted by ``entropy_weight``, ``ModelConfig.kl_weight``)."""

    logits_per_bit = 1

    def __init__(self, n_bits: int, entropy_weight: float) -> None:
        super().__init__()
        from vector_quantize_pytorch import LFQ  # imported here: only vq models pay its import

        assert n_bits % GROUP_BITS == 0, "ModelConfig checks n_bits is whole bytes"
        groups = n_bits // GROUP_BITS
        self.lfq = LFQ(
            dim=n_bits,
            codebook_size=2**GROUP_BITS,
            num_codebooks=groups,
            entropy_loss_weight=entropy_weight * groups,  # LFQ averages the entropies over codebooks: sum them
            commitment_loss_weight=COMMITMENT_WEIGHT * n_bits,  # and the squared error over bits: sum it
        )
        # a constant LFQ rebuilds; kept out of the checkpoint (and so the fingerprint), which holds learned state
        mask = self.lfq.mask
        delattr(self.lfq, "mask")
        self.lfq.register_buffer("mask", mask, persistent=False)

    def forward(self, logits: torch.Tensor) -> BottleneckOutput:
        quantized, _, loss = self.lfq(logits.unsqueeze(1), inv_temperature=INV_TEMPERATURE)  # (B, 1, n_bits) in +-1
        bits = (quantized.squeeze(1) + 1) / 2  # (B, n_bits) in {0, 1}, straight-through in training
        return BottleneckOutput(bits, self.latent(logits), loss)

    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        return logits > 0  # LFQ's codeword sign(x)

    def latent(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(4 * INV_TEMPERATURE * logits)  # (B, n_bits) LFQ's soft p(bit = 1)
