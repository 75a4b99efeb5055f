"""Codes from several independent autoencoders, concatenated: ``ModelConfig.members``.

A 128-bit code made of four 32-bit members, each with its own encoder, bottleneck and decoder, each trained on the
whole objective (reconstruction, contrastive and cluster terms on its own bits, its own k-means seed), ranks
documents better than one 128-bit autoencoder: every member must capture the coarse topic structure on its own, so
the Hamming distance adds four noisy votes on it instead of spending most bits on fine detail. Measured on 20
Newsgroups (P@100, one training run, seed 0): one 64-bit model 0.594 (seed 1: 0.604), two 32-bit members trained
together 0.616; two separately trained 32-bit models concatenated 0.615; one model whose 64 bits are split into two
groups with their own contrastive and cluster terms but a shared encoder and decoder 0.598 (no gain: the
independence is what counts). Two 16-bit members at 32 bits were worse than one 32-bit model (0.577 vs 0.585), so
the text preset uses 32-bit members (``models.presets``).

Nested codes (``ModelConfig.nested``, issue 20): the members are the groups of bits between two prefixes (cut also
every ``n_bits / members`` bits), of unequal widths, and the itq read-out rotates each member's bits apart, so that
a prefix is the code of the members before it. On digits this matched the dedicated models of each width where one
Matryoshka-trained model (every prefix decoded and contrasted, Kusupati et al. 2022) lost 0.125 mAP at its full
width: the bits after a prefix learned detail within classes, which Hamming distance weighs like the coarse bits
(docs/nested.md).

Short codes from wider scores (``ModelConfig.readout_from``): the members train at the wider width and the itq
read-out projects their scores to the code's bits (PCA, then ITQ), so a 16-bit code is read from one 32-bit model.

``build_model`` is the one constructor: a plain :class:`HashingAutoencoder` for ``members == 1`` and not nested (the
same weights and names as always), a :class:`MemberEnsemble` otherwise. Both offer what training, encoding and
checkpoints use.
"""

from __future__ import annotations

import dataclasses

import torch
from hamdex.models.autoencoder import (
    AEOutput,
    HashingAutoencoder,
    ModelConfig,
    member_widths,
    read_out,
    readout_groups,
    score_bits,
)
from hamdex.models.readout import RotationReadout
from torch import nn


class MemberEnsemble(nn.Module):
    """``config.members`` HashingAutoencoders of ``score_bits / members`` bits each (a nested config: of the widths of
    ``member_widths``); codes concatenated in member order (with ``readout_from``, projected to n_bits)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        member = dataclasses.replace(config, members=1, readout="threshold", nested=(), readout_from=0)
        self.members = nn.ModuleList(
            HashingAutoencoder(dataclasses.replace(member, n_bits=width)) for width in member_widths(config)
        )
        # one rotation over all members' scores (so it also decorrelates the members' bits); a nested config's
        # rotates each member apart, so that its prefixes stay nested
        # readout_from: the members' wider scores are projected to n_bits (PCA, then the ITQ rotation)
        self.readout = (
            RotationReadout(config.n_bits, readout_groups(config), score_bits(config))
            if config.readout == "itq"
            else None
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) -> (B, score_bits), members' scores side by side."""
        return torch.cat([m.scores(x) for m in self.members], dim=1)

    def relaxed_codes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) -> (B, score_bits) in (-1, 1), members' bits side by side."""
        return torch.cat([m.relaxed_codes(x) for m in self.members], dim=1)

    def forward(
        self, x: torch.Tensor, target: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> AEOutput:
        """Each member reconstructs the target from its own bits (and the labels, when trained with them); the
        losses add up (they share no weights)."""
        outs = [m(x, target, labels) for m in self.members]
        return AEOutput(
            None,  # no one reconstruction: each member has its own (no extra work per training step)
            torch.cat([o.z for o in outs], dim=1),
            torch.cat([o.latent for o in outs], dim=1),
            sum(o.loss for o in outs),
            sum(o.recon_loss for o in outs),
            sum(o.reg_loss for o in outs),
        )

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, input_dim) -> bool bits (B, n_bits), float32 latent (B, n_bits)."""
        if self.readout is not None:
            return read_out(self.readout, self.scores(x))
        parts = [m.encode(x) for m in self.members]
        return torch.cat([b for b, _ in parts], dim=1), torch.cat([z for _, z in parts], dim=1)


Model = HashingAutoencoder | MemberEnsemble


def build_model(config: ModelConfig) -> Model:
    ensemble = config.members > 1 or config.nested or config.readout_from
    return MemberEnsemble(config) if ensemble else HashingAutoencoder(config)


def parts(model: Model) -> list[HashingAutoencoder]:
    """The single autoencoders a model is made of, in code order (itself when it is one)."""
    return list(model.members) if isinstance(model, MemberEnsemble) else [model]
