"""Training objectives added to an autoencoder's own loss.

``neighbour_infonce``: a contrastive term that pulls an item's relaxed code towards one of its nearest
neighbours' and away from the other items in the batch (InfoNCE, van den Oord et al. 2018, with feature-space
neighbours as positives, in the spirit of CIBHash (Qiu et al., IJCAI 2021) and of PairRec's neighbour pairs
(Hansen et al., SIGIR 2021)). It works on any bottleneck through ``HashingAutoencoder.relaxed_codes``.

``teacher_bce`` and ``cluster_supcon`` use the targets of ``models.teacher``: per-item teacher bits, and cluster
pseudo-labels whose members are all positives of one another (supervised contrastive, Khosla et al. 2020).
``similarity_distillation``: each item's softmax distribution of similarities to the other items of the batch,
by input cosine (the teacher) and by relaxed-code cosine (the student), matched by KL divergence: relational
knowledge distillation (Park et al., CVPR 2019) applied to hashing, so codes keep the order of an item's nearest
neighbours, not only which topic it has. Used by the dense preset, where users measure codes by recall of the
float vectors' neighbours (issue 21).

Measured on 20 Newsgroups (P@100, seed 0; see ``TrainConfig``): cluster_supcon at weight 0.3 with 100 clusters
raised the text default from 0.508 / 0.539 / 0.550 / 0.548 to 0.530 / 0.553 / 0.562 / 0.564 at 16 / 32 / 64 / 128
bits (128 with patience 30); teacher bits at weight 1 gave 0.551 at 32 bits but 0.538 at 64.
"""

from __future__ import annotations

import torch
from torch import nn


def neighbour_infonce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between relaxed codes a[i] and b[i] (positives), (B, n_bits) each -> () loss."""
    a, b = nn.functional.normalize(a.float(), dim=1), nn.functional.normalize(b.float(), dim=1)
    sim = a @ b.T / temperature  # (B, B); the diagonal holds the positive pairs
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (nn.functional.cross_entropy(sim, labels) + nn.functional.cross_entropy(sim.T, labels))


def teacher_bce(probs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between bit probabilities (B, n_bits) and teacher bits (B, n_bits) in {0, 1}, averaged
    over bits and batch (so its weight does not depend on the code width)."""
    probs = probs.float().clamp(1e-6, 1 - 1e-6)
    return nn.functional.binary_cross_entropy(probs, teacher.float())


def cluster_supcon(codes: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised-contrastive loss (Khosla et al. 2020) over relaxed codes (N, n_bits) with pseudo-labels (N,):
    every other item with the same label is a positive. Anchors without a positive are skipped."""
    z = nn.functional.normalize(codes.float(), dim=1)
    sim = z @ z.T / temperature  # (N, N)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(dim=1)
    has = count > 0
    if not has.any():
        return codes.new_zeros(())
    per_anchor = log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has] / count[has]
    return -per_anchor.mean()


def similarity_distillation(
    codes: torch.Tensor, x: torch.Tensor, teacher_temperature: float, student_temperature: float
) -> torch.Tensor:
    """KL(teacher || student) over each row's similarities to the other rows: relaxed codes (N, n_bits) against
    inputs (N, d) -> () loss, averaged over rows."""
    z = nn.functional.normalize(codes.float(), dim=1)
    x = nn.functional.normalize(x.float(), dim=1)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    teacher = (x @ x.T / teacher_temperature).masked_fill(self_mask, float("-inf"))  # (N, N)
    student = (z @ z.T / student_temperature).masked_fill(self_mask, float("-inf"))
    p = torch.softmax(teacher, dim=1)
    log_ratio = (torch.log_softmax(teacher, dim=1) - torch.log_softmax(student, dim=1)).masked_fill(self_mask, 0.0)
    return (p * log_ratio).sum(dim=1).mean()
