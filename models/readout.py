"""How a trained model's per-bit scores become the indexed bits: ``ModelConfig.readout``.

``threshold`` (the default): each bottleneck's own rule, bit i = score i above its threshold (bernoulli and sign:
logit > 0; gaussian: mean above the training median).

``itq``: bits = sign((t - mean) @ R), where t = tanh(s / 8) soft-clips the vector s of all per-bit scores (every
member's, side by side), ``mean`` is its training-set mean and R an orthogonal rotation fitted on the training set
after training by iterative quantization (ITQ; Gong & Lazebnik, CVPR 2011, "Iterative quantization: a Procrustean
approach to learning binary codes"): alternately B = sign(V R) and R = argmin ||B - V R|| over rotations. Every bit
becomes a mix of the learned directions, balanced and less correlated, so fewer items share a code and the Hamming
ranking inside a class is finer. The decoder never sees these bits; they are a read-out of the encoder, like VDSH's
median thresholds. The soft clip keeps a few saturated logits (|s| up to 40, where most are under 5) from deciding
the rotation alone: Fashion-MNIST mAP at 16 / 32 bits, mean of four rotation seeds, raw logits 0.567 / 0.600,
tanh(s / 8) 0.598 / 0.603 (more in ``models.presets``).

With ``ModelConfig.readout_from`` the scores are wider than the code and R is a projection: the top principal
directions of the squashed scores, rotated by ITQ. A model trained at 32 bits gives better 16-bit codes this way
than a model trained at 16 bits (docs/robustness.md).

A model trained with labels (issue 20) can have its read-out fitted with them too (``TrainConfig.fisher_readout``,
off by default: it won and lost by turns, docs/quality.md, Labels): the scores are first projected on
their Fisher discriminant directions (:func:`fisher_projection`, fitted on the labelled training items), each scaled
by the square root of its between- to within-class variance ratio, and ITQ rotates that, as CCA-ITQ does with
labels as the second view (Gong et al., TPAMI 2013). The bits then spend themselves on what separates the classes.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA
from torch import nn

READOUTS = ("threshold", "itq")
ITQ_ITERATIONS = 50
# the Fisher read-out (models trained with labels): within-class scatter + FISHER_SHRINK x its mean variance, for
# stable directions from a few labelled items (0.1 beat 0.5 and 1.0: docs/quality.md, Labels);
# used only with FISHER_MIN_PER_CLASS labelled items a class on average, else the plain itq read-out
FISHER_SHRINK = 0.1
FISHER_MIN_PER_CLASS = 10
SCORE_SCALE = 8.0  # scores are soft-clipped as tanh(s / SCORE_SCALE) before the rotation


def squash(scores: torch.Tensor) -> torch.Tensor:
    return torch.tanh(scores.float() / SCORE_SCALE)


def fit_pca(x, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean float64 (d,) and top principal directions float64 (d, n_components) of x (n, d), dense or sparse.

    Sparse input goes through ARPACK with implicit centering (scikit-learn's PCA, never densified); dense input
    through scikit-learn's automatic solver choice. Both are deterministic for a given ``seed``.
    """
    n, d = x.shape
    limit = min(n, d) - 1 if sp.issparse(x) else min(n, d)  # ARPACK needs strictly fewer components
    if n_components > limit:
        raise ValueError(f"PCA to {n_components} bits needs more samples and features than {x.shape}")
    solver = "arpack" if sp.issparse(x) else "auto"
    pca = PCA(n_components=n_components, svd_solver=solver, random_state=seed).fit(x)
    mean = np.asarray(pca.mean_, dtype=np.float64).ravel()  # np.matrix for some sparse inputs
    return mean, np.asarray(pca.components_, dtype=np.float64).T


def fit_itq(x, n_bits: int, seed: int = 0, iterations: int = ITQ_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """ITQ on features x (n, d): mean float64 (d,) and projection float64 (d, n_bits), bits = (x - mean) @ P >= 0
    (PCA to ``n_bits``, then :func:`itq_rotation`; evaluation.baselines.ITQ is the same computation)."""
    mean, pcs = fit_pca(x, n_bits, seed)
    rotation, _ = itq_rotation(np.asarray(x @ pcs) - mean @ pcs, iterations, seed)
    return mean, pcs @ rotation


def fisher_projection(
    v: np.ndarray, labels: np.ndarray, n_out: int, shrink: float = FISHER_SHRINK, power: float = 0.5
) -> np.ndarray | None:
    """Fisher discriminant directions of v (n, d) by the classes ``labels`` int64 (n,) (-1 unlabelled), the top
    ``n_out`` by between- to within-class variance ratio, each scaled by its ratio ** ``power`` (0.5, its root, beat
    0 and 1: docs/quality.md, Labels): float64 (d, n_out).
    None with fewer than two classes or ``FISHER_MIN_PER_CLASS`` labelled items a class on average.

    Hand-written (a generalized symmetric eigenproblem, ``scipy.linalg.eigh(Sb, Sw)``) because scikit-learn's
    LinearDiscriminantAnalysis keeps only classes - 1 directions with their ratios, and a code is often wider."""
    known = labels >= 0
    classes, counts = np.unique(labels[known], return_counts=True)
    if len(classes) < 2 or known.sum() < FISHER_MIN_PER_CLASS * len(classes):
        return None
    y, centred = labels[known], v[known] - v[known].mean(axis=0)  # (m,), (m, d)
    means = np.stack([centred[y == c].mean(axis=0) for c in classes])  # (c, d)
    within = centred - means[np.searchsorted(classes, y)]  # (m, d)
    d = v.shape[1]
    sw = within.T @ within / len(y)
    sw += shrink * np.trace(sw) / d * np.eye(d)
    sb = (means * counts[:, None]).T @ means / len(y)
    ratios, directions = scipy.linalg.eigh(sb, sw)  # ascending
    top = np.argsort(ratios)[::-1][:n_out]
    return directions[:, top] * np.maximum(ratios[top], 0.0) ** power


def itq_rotation(v: np.ndarray, iterations: int = ITQ_ITERATIONS, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Centred v (n, c) -> orthogonal R (c, c) from a seeded random start, and the quantization loss
    ``||B - V R||_F^2`` (B = sign(V R)) at the start and after each Procrustes step (``iterations + 1`` values,
    never increasing)."""
    c = v.shape[1]
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((c, c)))  # random orthogonal start
    losses = []
    for step in range(iterations + 1):
        projected = v @ rotation  # (n, c)
        codes = np.where(projected >= 0, 1.0, -1.0)  # (n, c)
        losses.append(float(np.sum((codes - projected) ** 2)))
        if step == iterations:
            break
        # argmin_R ||B - V R||_F over orthogonal R: with V^T B = U S W^T, R = U W^T
        u, _, wt = np.linalg.svd(v.T @ codes)
        rotation = u @ wt
    return rotation, losses


class RotationReadout(nn.Module):
    """bits = (squash(scores) - mean) @ rotation > 0; buffers saved with the weights (so in the fingerprint).

    ``in_bits`` above ``n_bits`` (``ModelConfig.readout_from``): the rotation is a projection (in_bits, n_bits), the
    top n_bits principal directions of the squashed scores rotated by ITQ: ITQ on the model's scores as features.

    ``groups``, the prefix widths of a nested model (``ModelConfig.nested``, ending at ``n_bits``): the rotation is
    block-diagonal, one ITQ per group of bits between two prefixes, fitted on that group's scores alone, so the
    first p bits read out from the first p scores only and a prefix stays the code of its own bits (the first
    group's rotation is the one a model of that width alone would fit). () = one rotation over all bits."""

    def __init__(self, n_bits: int, groups: tuple[int, ...] = (), in_bits: int = 0) -> None:
        super().__init__()
        self.groups = tuple(groups) or (n_bits,)
        self.in_bits = in_bits or n_bits
        if self.groups[-1] != n_bits:
            raise ValueError(f"read-out groups {list(self.groups)} must end at the {n_bits} bits")
        if self.in_bits < n_bits or (self.in_bits > n_bits and len(self.groups) > 1):
            raise ValueError(f"a read-out projects {self.in_bits} scores to {n_bits} bits in one group, never up")
        self.register_buffer("mean", torch.zeros(self.in_bits))  # (in_bits,)
        self.register_buffer("rotation", torch.eye(self.in_bits, n_bits))  # (in_bits, n_bits); the first n until fitted
        self.fisher_fitted = False  # whether the last fit projected along the classes (not saved: the report says)

    @torch.no_grad()
    def fit(self, scores: torch.Tensor, seed: int = 0, labels: np.ndarray | None = None) -> list[float]:
        """Fit on the training set's scores (n, in_bits); returns ITQ's loss history (summed over the groups).
        ``labels`` int64 (n,) (-1 unlabelled), for a model trained with labels: the Fisher projection first (the
        module's docstring), where there are enough labelled items and no nested groups."""
        if scores.shape[0] < 2:
            raise ValueError(f"the itq read-out needs at least 2 training items, got {scores.shape[0]}")
        v = squash(scores).double().cpu().numpy()
        mean = v.mean(axis=0)
        fisher = None
        if labels is not None and len(self.groups) == 1:
            fisher = fisher_projection(v, np.asarray(labels), self.groups[-1])  # (in_bits, n_bits)
        self.fisher_fitted = fisher is not None
        if fisher is not None:
            block, losses = itq_rotation((v - mean) @ fisher, seed=seed)
            self.mean.copy_(torch.from_numpy(mean))
            self.rotation.copy_(torch.from_numpy(fisher @ block))
            return [float(loss) for loss in losses]
        if self.in_bits > self.groups[-1]:  # fewer bits than scores: PCA to the bits, then the ITQ rotation
            _, pcs = fit_pca(v, self.groups[-1], seed)  # (in_bits, n_bits)
            block, losses = itq_rotation((v - mean) @ pcs, seed=seed)
            self.mean.copy_(torch.from_numpy(mean))
            self.rotation.copy_(torch.from_numpy(pcs @ block))
            return [float(loss) for loss in losses]
        rotation = np.zeros((v.shape[1], v.shape[1]))
        losses = np.zeros(ITQ_ITERATIONS + 1)
        for start, end in zip((0, *self.groups[:-1]), self.groups, strict=True):
            block, block_losses = itq_rotation(v[:, start:end] - mean[start:end], seed=seed)
            rotation[start:end, start:end] = block
            losses += block_losses
        self.mean.copy_(torch.from_numpy(mean))
        self.rotation.copy_(torch.from_numpy(rotation))
        return [float(loss) for loss in losses]

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, in_bits) scores -> (B, n_bits) rotated scores; bit i is 1 where column i is > 0."""
        return (squash(scores) - self.mean) @ self.rotation
