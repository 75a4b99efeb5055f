"""An adversarial prior on the codes (issue 20): a discriminator tells a member's codes from independent fair bits,
and the encoder learns to fool it. Fair, independent bits are what the hash index kinds want: every bit on half the
time (balance), no bit predictable from the others (independence), so the codes spread over many buckets.

This is the Adversarial Autoencoder's regulariser (Makhzani et al. 2015, "Adversarial Autoencoders",
arXiv:1511.05644) with a product of Bernoulli(0.5) as the prior, the prior the bernoulli bottleneck's KL term
matches one bit at a time; the discriminator also sees how the bits go together. VAE-GAN (Larsen et al. 2016) and
ALAE (Pidhorskyi et al. 2020) put their discriminators on the reconstructions or on a learned latent instead; here
the codes are what the index holds, so they are what is judged.

One loss and one optimizer train both sides, with no second optimizer or alternating steps in ``models.train``: the
discriminator's binary cross-entropy on codes detached from the encoder (it trains the discriminator only), plus
the encoder's loss through the discriminator's weights detached (it trains the encoder only). The encoder's loss is
feature matching (Salimans et al. 2016, "Improved Techniques for Training GANs"): the squared distance between the
mean of the discriminator's last hidden layer over the batch's codes and over as many fair samples. A batch mean
cannot be matched by sending every item to the one code the discriminator likes best, which is what the other two
losses did on 8x8 digits (16 bits, 600 steps; ``encoder_loss``): a gradient-reversal layer (Ganin & Lempitsky 2015,
DANN), the minimax loss, let the discriminator win within 100 steps (accuracy 0.998) and the codes sat in one bucket
for 300 steps; the non-saturating -log D(codes) (Goodfellow et al. 2014) sent every item to one code at weight 1.
Feature matching at weight 10 and 30 took the distinct codes from 21% to 61% and 79%, bit balance from 0.38 to 0.23
and 0.18, mean |bit correlation| from 0.22 to 0.12 and 0.07 (a 64-128-16 model, kl 0.1, lr 1e-3).

What the discriminator sees: the member's deterministic codes as +-1 (the sign of each bit's score, as thresholding
reads them out), with the identity as their gradient to the scores (straight-through). The tanh of the scores in
(-1, 1) collapsed the codes to one bucket at weights 10 and 30 (the discriminator wins on magnitude, and the tanh's
gradient vanishes where it saturates); the bernoulli bottleneck's sampled bits would let codes that carry nothing
(every probability 0.5) look perfectly fair.

The discriminator is a small MLP written here (a few lines of torch.nn) rather than taken from a library: none of
the well-kept GAN libraries offers a discriminator over binary vectors with these losses, and the parts are all in
torch. Its weights are for training only: ``models.train`` keeps them beside the model, never in it, so a model
trained with the term has the same state dict, checkpoint format and fingerprint rules as any other, and is served
like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient negated backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def reverse_gradient(x: torch.Tensor) -> torch.Tensor:
    return _ReverseGradient.apply(x)


def hard_signs(scores: torch.Tensor) -> torch.Tensor:
    """Scores (B, n) -> exactly +-1 (positive score: +1), with the identity as gradient (straight-through)."""
    hard = torch.where(scores > 0, 1.0, -1.0).to(scores.dtype)
    return scores + (hard - scores).detach()


class CodeDiscriminator(nn.Module):
    """+-1 codes (B, n_bits) -> logit (B,) that they are independent fair bits rather than the model's codes."""

    def __init__(self, n_bits: int, hidden: int | None = None) -> None:
        super().__init__()
        width = hidden or 4 * n_bits  # wide enough to see pairwise and higher-order dependence between the bits
        self.features = nn.Sequential(
            nn.Linear(n_bits, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2)
        )
        self.head = nn.Linear(width, 1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(codes)).squeeze(1)


ENCODER_LOSSES = ("features", "nonsaturating", "minimax")


class AdversarialPrior(nn.Module):
    """One discriminator per ensemble member (``ModelConfig.members``): each member's bits should be fair and
    independent on their own, as every other term of the objective treats the members."""

    def __init__(
        self, n_bits: int, members: int = 1, encoder_loss: str = "features", widths: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if widths is None and (members < 1 or n_bits % members):
            raise ValueError(f"{members} members do not split {n_bits} bits evenly")
        if encoder_loss not in ENCODER_LOSSES:
            raise ValueError(f"unknown encoder_loss {encoder_loss!r}; choose one of {', '.join(ENCODER_LOSSES)}")
        # each member's bits in code order: equal shares, or a nested model's members (models.autoencoder.member_widths)
        self.widths = list(widths) if widths is not None else [n_bits // members] * members
        if sum(self.widths) != n_bits:
            raise ValueError(f"member widths {self.widths} do not add up to {n_bits} bits")
        self.discriminators = nn.ModuleList(CodeDiscriminator(width) for width in self.widths)
        self.encoder_loss = encoder_loss  # "features"; the other two are the failures measured in the docstring

    def _pairs(self, scores: torch.Tensor):
        """(discriminator, the member's codes, a fair sample of the same shape) per member."""
        for disc, member in zip(self.discriminators, scores.split(self.widths, dim=1), strict=True):
            fair = torch.randint(0, 2, member.shape, device=member.device).to(member.dtype) * 2 - 1
            yield disc, hard_signs(member), fair

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """Each bit's score (B, n_bits) -> () summed over members: the discriminator's binary cross-entropy (fair
        bits labelled 1, codes 0; trains the discriminator only) plus the encoder's loss (trains the encoder only)."""
        bce = nn.functional.binary_cross_entropy_with_logits
        total = scores.new_zeros((), dtype=torch.float32)
        for disc, codes, fair in self._pairs(scores):
            if self.encoder_loss == "minimax":
                real, fake = disc(fair).float(), disc(reverse_gradient(codes)).float()
                total = total + bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
                continue
            real, fake = disc(fair).float(), disc(codes.detach()).float()
            total = total + bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
            frozen = {name: p.detach() for name, p in disc.named_parameters()}
            if self.encoder_loss == "nonsaturating":
                fooled = torch.func.functional_call(disc, frozen, (codes,)).float()  # the gradient reaches the codes
                total = total + bce(fooled, torch.ones_like(fooled))
            else:
                feats = {k.removeprefix("features."): v for k, v in frozen.items() if k.startswith("features.")}
                mine = torch.func.functional_call(disc.features, feats, (codes,)).float().mean(dim=0)
                theirs = disc.features(fair).detach().float().mean(dim=0)
                total = total + (mine - theirs).pow(2).sum()
        return total

    @torch.no_grad()
    def accuracy(self, scores: torch.Tensor) -> float:
        """How often the discriminators tell codes from as many fair samples, given the scores (B, n_bits); averaged
        over members (0.5: they cannot)."""
        right = [
            ((disc(fair) > 0).float().mean() + (disc(codes) <= 0).float().mean()).item() / 2
            for disc, codes, fair in self._pairs(scores)
        ]
        return sum(right) / len(right)
