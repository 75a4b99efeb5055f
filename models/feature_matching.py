"""A learned similarity for image reconstructions (issue 20): VAE-GAN's feature-matching term. A discriminator tells
what the decoder should reconstruct from what it did reconstruct, and the autoencoder learns to make the two alike in
the discriminator's hidden features, beside its element-wise reconstruction loss.

This is the reconstruction term of VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned
similarity metric", arXiv:1512.09300): the squared distance between a hidden layer of the discriminator applied to the
input and to its reconstruction, per item. The hope for retrieval: an element-wise loss spends the bits on exact
pixel values, a learned feature space on what tells images apart. Unlike VAE-GAN the element-wise loss stays (the
term is added at ``TrainConfig.feature_matching_weight``), the discriminator judges reconstructions only (no samples
decoded from the prior: the codes, not generated images, are what the index holds) and the decoder gets no
adversarial loss of its own, only the feature distance.

"Real" is the decoder's target: the input features, or what ``models.train`` reconstructs instead (the mean over an
item's neighbours, the scattering coefficients of the pixel preset). "Reconstructed" is the decoder's output in the
target's units: the sigmoid of the logits for a bernoulli decoder (pixels in [0, 1]), the output itself for a
gaussian one. An ensemble's members each reconstruct the target; one discriminator judges them all, and their
distances add up, as their reconstruction losses do.

One loss and one optimizer train both sides, as ``models.adversarial`` does: the discriminator's binary
cross-entropy on reconstructions detached from the autoencoder (it trains the discriminator only), plus the feature
distance through the discriminator's weights detached (it trains the autoencoder only). The distance is summed over
the features and averaged over the batch, as ``reconstruction_loss`` is over the input's dimensions.

The discriminator is a small MLP on the flattened target (a few lines of torch.nn; the pixel preset's targets are
scattering coefficients, not an image, so convolutions would not apply to them). Its weights are for training only:
``models.train`` keeps them beside the model, never in it, so the checkpoint, its format and its fingerprint are
those of any model.
"""

from __future__ import annotations

import torch
from hamdex.models.autoencoder import AEOutput, member_widths
from hamdex.models.ensemble import Model, parts
from torch import nn

# the decoder's output (logits) -> a reconstruction in the target's units, per reconstruction loss
_OUTPUTS = {"bernoulli": torch.sigmoid, "gaussian": lambda logits: logits, "multinomial": lambda z: z.softmax(1)}


class ReconstructionDiscriminator(nn.Module):
    """Targets or reconstructions (B, dim) -> logit (B,) that they are targets; ``features`` is the hidden layer
    whose activations are matched."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2)
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def reconstructions(model: Model, out: AEOutput, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Each member's decoder output (B, output width) for the codes ``out.z`` it saw; a single model's is already in
    ``out``, an ensemble's members decode their own bits again (the decoder only, on the same sampled bits)."""
    if out.recon_logits is not None:
        return [out.recon_logits]
    codes = out.z.split(list(member_widths(model.config)), dim=1)  # (B, member bits) each
    return [member.decode(z, labels) for member, z in zip(parts(model), codes, strict=True)]


class FeatureMatching(nn.Module):
    """The discriminator and both sides' losses for a decoder of ``dim`` outputs and reconstruction loss ``recon``."""

    def __init__(self, dim: int, recon: str, hidden: int = 256, seed: int | None = None) -> None:
        super().__init__()
        if recon not in _OUTPUTS:
            raise ValueError(f"unknown recon loss {recon!r}; choose one of {', '.join(_OUTPUTS)}")
        # ``seed``: initialised from its own random stream, so that the model's draws (bits sampled, dropout) are
        # those of the same run without the term, and the term alone makes the difference
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.discriminator = ReconstructionDiscriminator(dim, hidden)
        self.recon = recon

    def forward(self, recon_logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Each member's decoder output (B, dim) and the target (B, dim) -> (): the discriminator's binary
        cross-entropy (targets labelled 1, reconstructions 0; trains the discriminator only) plus each member's
        feature distance to the target (trains the autoencoder only)."""
        bce = nn.functional.binary_cross_entropy_with_logits
        disc = self.discriminator
        fakes = [_OUTPUTS[self.recon](logits.float()) for logits in recon_logits]  # (B, dim) each
        target = target.to_dense() if target.layout == torch.sparse_csr else target
        real_features = disc.features(target.float())  # (B, hidden)
        real = disc.head(real_features).squeeze(1)
        fake = disc(torch.cat(fakes).detach())  # (members * B,)
        total = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
        frozen = {
            k.removeprefix("features."): p.detach() for k, p in disc.named_parameters() if k.startswith("features.")
        }
        wanted = real_features.detach()
        for recon in fakes:
            mine = torch.func.functional_call(
                disc.features, frozen, (recon,)
            )  # (B, hidden); the gradient reaches recon
            total = total + (mine - wanted).pow(2).sum(dim=1).mean()
        return total

    @torch.no_grad()
    def accuracy(self, recon_logits: torch.Tensor, target: torch.Tensor) -> float:
        """How often the discriminator tells targets (B, dim) from reconstructions (B, dim), given the decoder's
        output (0.5: it cannot)."""
        fake = self.discriminator(_OUTPUTS[self.recon](recon_logits.float()))
        real = self.discriminator(target.float())
        return ((real > 0).float().mean() + (fake <= 0).float().mean()).item() / 2
