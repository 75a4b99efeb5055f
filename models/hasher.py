"""A trained hasher: featurizer + autoencoder on a device, turning raw inputs into packed codes.

This is what the service, the bulk job and ``hamdex eval`` hold; ``models.checkpoint`` saves and loads it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from hamdex.models import bits
from hamdex.models.ensemble import Model
from hamdex.models.featurizers import Features, Featurizer

LOG = logging.getLogger(__name__)


class EncodeResult(NamedTuple):
    codes: np.ndarray  # uint8 (n, n_bits // 8), bit order of models.bits
    latent: np.ndarray | None  # float32 (n, n_bits) each bit's continuous value (see model.encode), when asked for


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch (with a clear error)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
    return device


def to_tensor(features: Features, device: torch.device | str, *, sparse: bool = False) -> torch.Tensor:
    """A block of features -> float32 tensor (B, d) on the device.

    With ``sparse=True``, scipy CSR features become a torch sparse CSR tensor on the CPU (the encoder's first layer
    multiplies it sparsely: about twice as fast for TF-IDF, <1% non-zero); elsewhere features are dense.
    """
    device = torch.device(device)
    if sp.issparse(features) and sparse and device.type == "cpu":
        m = sp.csr_matrix(features, dtype=np.float32)
        with warnings.catch_warnings():  # "sparse CSR is beta": the one use here (sparse.mm + autograd) is tested
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.from_numpy(m.indptr.astype(np.int64)),
                torch.from_numpy(m.indices.astype(np.int64)),
                torch.from_numpy(m.data),
                size=m.shape,
                check_invariants=False,  # built from a valid scipy CSR matrix
            )
    dense = features.toarray() if sp.issparse(features) else np.asarray(features)
    tensor = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
    if device.type == "cuda":
        tensor = tensor.pin_memory()  # page-locked, so the copy below is asynchronous (non_blocking)
    return tensor.to(device, non_blocking=True)


@dataclass
class Hasher:
    model: Model
    featurizer: Featurizer
    fingerprint: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    info: dict[str, Any] = field(default_factory=dict)  # versions, training summary (from the checkpoint)

    def __post_init__(self) -> None:
        self.model.to(self.device).eval()
        if hasattr(self.featurizer, "to"):  # a featurizer with a network of its own (models.sentence) runs here too
            self.featurizer.to(self.device)

    @property
    def n_bits(self) -> int:
        return self.model.config.n_bits

    def features(self, inputs: Sequence[Any] | np.ndarray) -> Features:
        """Raw inputs -> features; raises featurizers.InputError on bad input."""
        return self.featurizer.transform(inputs)

    def encode(self, inputs: Sequence[Any] | np.ndarray, *, latent: bool = False) -> EncodeResult:
        return self.encode_features(self.features(inputs), latent=latent)

    def encode_features(self, features: Features, *, latent: bool = False, batch_size: int = 2048) -> EncodeResult:
        """Features (n, d) -> packed codes, in batches so memory stays bounded."""
        codes, latents = [], []
        for start in range(0, features.shape[0], batch_size):
            x = to_tensor(features[start : start + batch_size], self.device, sparse=True)  # (B, d)
            b, z = self.model.encode(x)  # (B, n_bits) bool, (B, n_bits) float
            codes.append(bits.pack(b.cpu().numpy()))
            if latent:
                latents.append(z.cpu().numpy().astype(np.float32))
        n_bytes = self.n_bits // 8
        out = np.concatenate(codes) if codes else np.zeros((0, n_bytes), np.uint8)
        lat = (np.concatenate(latents) if latents else np.zeros((0, self.n_bits), np.float32)) if latent else None
        return EncodeResult(out, lat)
