"""The hashing autoencoder: encoder MLP -> binary bottleneck -> decoder MLP, built only from a :class:`ModelConfig`.

Reconstruction losses by input type:
- ``multinomial``: softmax over the vocabulary, log-likelihood weighted by the input's term weights (bag-of-words
  text, as in VDSH (Chaidaroon & Fang 2017) and NASH (Shen et al. 2018));
- ``bernoulli``: per-dimension binary cross-entropy for [0, 1] pixels;
- ``gaussian``: squared error for standardised dense vectors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from hamdex.models.bits import check_n_bits
from hamdex.models.bottlenecks import BOTTLENECKS, make_bottleneck
from hamdex.models.readout import READOUTS, RotationReadout
from torch import nn

RECON_LOSSES = ("multinomial", "bernoulli", "gaussian")


@dataclass(frozen=True)
class ModelConfig:
    input_dim: int  # feature dimension (vocabulary size, pixels, vector length)
    n_bits: int = 32  # code length; a positive multiple of 8
    bottleneck: str = "bernoulli"  # one of BOTTLENECKS
    recon: str = "multinomial"  # one of RECON_LOSSES; follows the featurizer
    hidden: tuple[int, ...] = (512, 512)  # encoder hidden widths
    decoder_hidden: tuple[int, ...] = ()  # () = a linear decoder from the bits, as NASH
    dropout: float = 0.1  # encoder dropout between hidden layers
    input_dropout: float = 0.0  # denoising: drop input features in training (NASH-DN)
    kl_weight: float = 0.01  # weight of the bottleneck's regulariser (bernoulli: KL to Bernoulli(0.5))
    # > 1: the code is this many independent autoencoders' codes of n_bits / members bits each, concatenated
    # (models.ensemble); each member has the whole configuration above at its share of the bits
    members: int = 1
    # what the decoder outputs: 0 = input_dim (it reconstructs the input, or neighbour means of it); else the width
    # of other reconstruction targets (TrainConfig.target_features: scattering coefficients of pixel inputs)
    output_dim: int = 0
    # how scores become the indexed bits (models.readout): "threshold", each bottleneck's own rule, or "itq", a
    # rotation of all members' scores fitted on the training set after training
    readout: str = "threshold"
    # the classes of a model trained with labels (TrainConfig.label_weight; issue 20): its decoders are conditioned
    # on the item's class as in a conditional VAE (Sohn et al. 2015), one learned input per class plus one for
    # "unknown" (unlabelled items). The encoder never sees a label, so queries need none. () = no labels
    label_names: tuple[str, ...] = ()
    # issue 20: prefix widths (increasing multiples of 8; n_bits is added when left out), e.g. (16, 32), at which
    # the code is nested: its first 16 bits are a 16-bit code by themselves, its first 32 a 32-bit code. The code is
    # then an ensemble (models.ensemble) whose members are the groups of bits between two prefixes, cut further at
    # multiples of n_bits / members (16, 32, 64 bits with members 2: members of 16, 16 and 32 bits), each trained as
    # if alone, and the itq read-out rotates each member's bits apart (member_widths, readout_groups). () = not nested
    nested: tuple[int, ...] = ()
    # the width of the scores the itq read-out maps to the n_bits bits, when wider (a multiple of 8): the members are
    # trained at this width and the read-out projects their scores to n_bits by PCA, then rotates them by ITQ. Short
    # codes read this way from a 32-bit model beat a model trained at their width (docs/robustness.md). 0 = n_bits
    readout_from: int = 0

    def __post_init__(self) -> None:
        check_n_bits(self.n_bits)
        if self.input_dim <= 0:
            raise ValueError(f"input_dim must be positive, got {self.input_dim}")
        if self.output_dim < 0:
            raise ValueError(f"output_dim must be >= 0 (0: input_dim), got {self.output_dim}")
        if self.bottleneck not in BOTTLENECKS:
            raise ValueError(f"unknown bottleneck {self.bottleneck!r}; choose one of {', '.join(BOTTLENECKS)}")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose one of {', '.join(READOUTS)}")
        if self.recon not in RECON_LOSSES:
            raise ValueError(f"unknown recon loss {self.recon!r}; choose one of {', '.join(RECON_LOSSES)}")
        if not (0 <= self.dropout < 1 and 0 <= self.input_dropout < 1):
            raise ValueError("dropout and input_dropout must be in [0, 1)")
        if self.kl_weight < 0:
            raise ValueError("kl_weight must be >= 0")
        if self.members < 1 or self.n_bits % (8 * self.members):
            raise ValueError(
                f"members must be >= 1 and split n_bits into whole bytes each; "
                f"got {self.members} members for {self.n_bits} bits"
            )
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "decoder_hidden", tuple(self.decoder_hidden))
        object.__setattr__(self, "label_names", tuple(str(name) for name in self.label_names))
        object.__setattr__(self, "nested", check_nested(self.nested, self.n_bits))
        if self.readout_from:
            check_n_bits(self.readout_from)
            if self.readout_from <= self.n_bits or self.readout != "itq" or self.nested:
                raise ValueError(
                    f"readout_from {self.readout_from} needs the itq read-out, no nested prefixes and more than the "
                    f"code's {self.n_bits} bits (0: off)"
                )
            if self.readout_from % (8 * self.members):
                raise ValueError(f"{self.members} members do not split readout_from {self.readout_from} into bytes")
        if len(self.label_names) == 1 or len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"label_names must be () or two or more distinct names, got {len(self.label_names)}")

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(sorted(unknown))}")
        return cls(**data)


def check_nested(prefixes, n_bits: int) -> tuple[int, ...]:
    """Nested prefix widths -> the normalised tuple (ending at ``n_bits``), or ValueError saying what is wrong."""
    prefixes = tuple(int(p) for p in prefixes)
    if not prefixes:
        return ()
    if any(p <= 0 or p % 8 for p in prefixes):
        raise ValueError(f"nested prefixes must be positive multiples of 8 (whole bytes), got {list(prefixes)}")
    if any(b <= a for a, b in zip(prefixes, prefixes[1:], strict=False)):
        raise ValueError(f"nested prefixes must be strictly increasing, got {list(prefixes)}")
    if prefixes[-1] > n_bits:
        raise ValueError(f"nested prefix {prefixes[-1]} is beyond the code's {n_bits} bits")
    prefixes = prefixes if prefixes[-1] == n_bits else (*prefixes, n_bits)
    if len(prefixes) < 2:
        raise ValueError(f"nested needs at least one prefix shorter than the code's {n_bits} bits")
    return prefixes


def score_bits(config: ModelConfig) -> int:
    """How many scores (and trained bits) the members have together: ``readout_from`` when the read-out projects
    them to fewer bits, else ``n_bits``."""
    return config.readout_from or config.n_bits


def member_widths(config: ModelConfig) -> list[int]:
    """The bits of each member in code order: ``members`` equal shares of :func:`score_bits`, or for a nested config
    the groups between consecutive cuts, a cut at every nested prefix and at every multiple of ``n_bits / members``."""
    width = score_bits(config) // config.members
    if not config.nested:
        return [width] * config.members
    cuts = readout_groups(config)
    return [end - start for start, end in zip((0, *cuts[:-1]), cuts, strict=True)]


def readout_groups(config: ModelConfig) -> tuple[int, ...]:
    """The ends of the groups of bits the itq read-out rotates apart (models.readout.RotationReadout): every nested
    prefix and every multiple of ``n_bits / members`` of a nested config (its members' ends); () otherwise."""
    if not config.nested:
        return ()
    width = config.n_bits // config.members
    return tuple(sorted(set(config.nested) | {width * (m + 1) for m in range(config.members)}))


class AEOutput(NamedTuple):
    recon_logits: torch.Tensor | None  # (B, output width); None from an ensemble, whose members each reconstruct
    z: torch.Tensor  # (B, n_bits) what the decoder saw (bits, or continuous z for gaussian)
    latent: torch.Tensor  # (B, n_bits) continuous pre-binarization
    loss: torch.Tensor  # () recon_loss + reg_loss
    recon_loss: torch.Tensor  # ()
    reg_loss: torch.Tensor  # ()


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)] if dropout else [nn.ReLU()]
    return nn.Sequential(*layers)


class HashingAutoencoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.members != 1 or config.nested or config.readout_from:
            raise ValueError(
                "a config with members > 1, nested or readout_from builds a models.ensemble.MemberEnsemble (use "
                "build_model)"
            )
        self.config = config
        self.bottleneck = make_bottleneck(config.bottleneck, n_bits=config.n_bits, kl_weight=config.kl_weight)
        n_logits = config.n_bits * self.bottleneck.logits_per_bit
        self.encoder = _mlp([config.input_dim, *config.hidden, n_logits], config.dropout)
        self.decoder = _mlp([config.n_bits, *config.decoder_hidden, config.output_dim or config.input_dim], 0.0)
        self.readout = RotationReadout(config.n_bits) if config.readout == "itq" else None
        if config.n_classes:  # one-hot class into the decoder's first layer = a learned vector added to its output
            self.label_embedding = nn.Embedding(config.n_classes + 1, self.decoder[0].out_features)  # last: unknown
            nn.init.zeros_(self.label_embedding.weight)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (B, n_bits) -> decoder output (B, output width); ``labels`` int64 (B,) class indices, -1 (or None
        for all) unknown, used by a model trained with labels (``ModelConfig.label_names``), ignored otherwise."""
        if not self.config.n_classes:
            return self.decoder(z)
        unknown = self.config.n_classes
        labels = (
            torch.full((len(z),), unknown, device=z.device) if labels is None else labels.where(labels >= 0, unknown)
        )
        return self.decoder[1:](self.decoder[0](z) + self.label_embedding(labels).to(z.dtype))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output before binarization, (B, input_dim) -> (B, n_bits * logits_per_bit).

        ``x`` may be a sparse CSR tensor (bag-of-words): the first layer then multiplies it sparsely."""
        dropout = self.config.input_dropout if self.training else 0.0
        if x.layout != torch.sparse_csr:
            return self.encoder(nn.functional.dropout(x, dropout) if dropout else x)
        if dropout:  # drop stored entries, as dense dropout would (zeros stay zero either way)
            x = torch.sparse_csr_tensor(
                x.crow_indices(),
                x.col_indices(),
                nn.functional.dropout(x.values(), dropout),
                size=x.shape,
                check_invariants=False,
            )
        first = self.encoder[0]
        return self.encoder[1:](torch.sparse.mm(x, first.weight.T) + first.bias)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Each bit's continuous score, (B, input_dim) -> (B, n_bits): its logit (the mean for gaussian)."""
        return self.logits(x)[:, : self.config.n_bits]

    def relaxed_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable codes in (-1, 1), (B, input_dim) -> (B, n_bits): tanh of each bit's score; used by
        pairwise objectives."""
        return torch.tanh(self.scores(x))

    def forward(
        self, x: torch.Tensor, target: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> AEOutput:
        """``target`` (B, output_dim or input_dim) is what the decoder reconstructs; the input itself by default.
        ``labels`` int64 (B,) (-1 unknown) condition the decoder of a model trained with labels (:meth:`decode`)."""
        b = self.bottleneck(self.logits(x))
        recon_logits = self.decode(b.z, labels)  # (B, output_dim or input_dim)
        target = x if target is None else target
        target = target.to_dense() if target.layout == torch.sparse_csr else target
        recon_loss = reconstruction_loss(self.config.recon, recon_logits, target)
        return AEOutput(recon_logits, b.z, b.latent, recon_loss + b.loss, recon_loss, b.loss)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic codes: (B, input_dim) -> bool bits (B, n_bits), float32 latent (B, n_bits): the bottleneck's
        (bit probabilities, or the gaussian mean), or with the itq read-out the sigmoid of each rotated score."""
        if self.readout is not None:
            return read_out(self.readout, self.scores(x))
        logits = self.logits(x).float()
        return self.bottleneck.binarize(logits), self.bottleneck.latent(logits)


def read_out(readout: RotationReadout, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B, n_bits) -> bool bits and their float32 probability-like latent (sigmoid of the rotated score)."""
    rotated = readout(scores)
    return rotated > 0, torch.sigmoid(rotated)


def reconstruction_loss(kind: str, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the input under the decoder, summed over dimensions, averaged over the batch."""
    logits = logits.float()
    if kind == "multinomial":
        return -(x * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    if kind == "bernoulli":
        return nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1).mean()
    if kind == "gaussian":
        return 0.5 * ((logits - x) ** 2).sum(dim=1).mean()
    raise ValueError(f"unknown recon loss {kind!r}")
