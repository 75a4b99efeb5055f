"""Training objectives added to an autoencoder's own loss.

``neighbour_infonce``: a contrastive term that pulls an item's relaxed code towards one of its nearest
neighbours' and away from the other items in the batch (InfoNCE, van den Oord et al. 2018, with feature-space
neighbours as positives, in the spirit of CIBHash (Qiu et al., IJCAI 2021) and of PairRec's neighbour pairs
(Hansen et al., SIGIR 2021)). It works on any bottleneck through ``HashingAutoencoder.relaxed_codes``.
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
