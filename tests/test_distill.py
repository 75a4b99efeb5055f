"""The similarity-distillation objective (models.objectives.similarity_distillation) and its training switch."""

import numpy as np
import pytest
import torch
from hamdex.models.objectives import similarity_distillation
from hamdex.models.train import TrainConfig, fit_hasher


def test_zero_when_the_codes_rank_like_the_inputs_and_positive_otherwise():
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    assert similarity_distillation(x, x, 0.1, 0.1).abs() < 1e-6  # same similarities, same temperature
    shuffled = x[torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    assert similarity_distillation(shuffled, x, 0.1, 0.1) > 0.1


def test_prefers_codes_that_keep_each_items_nearest_neighbour():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])  # two pairs of near neighbours
    good = torch.tensor([[1.0, 1.0], [1.0, 0.9], [-1.0, -1.0], [-0.9, -1.0]])
    bad = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 0.9], [-0.9, -1.0]])
    assert similarity_distillation(good, x, 0.05, 0.3) < similarity_distillation(bad, x, 0.05, 0.3)


def test_gradients_reach_the_codes():
    codes = torch.randn(8, 4, requires_grad=True)
    similarity_distillation(codes, torch.randn(8, 6), 0.05, 0.3).backward()
    assert codes.grad is not None and codes.grad.abs().sum() > 0


@pytest.mark.parametrize("neighbours", [0, 3])
def test_training_with_the_term_keeps_neighbours_closer_than_strangers(neighbours):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 24)).astype(np.float32)
    x = np.repeat(centres, 30, axis=0) + 0.1 * rng.standard_normal((120, 24)).astype(np.float32)
    cfg = TrainConfig(epochs=30, distill_weight=1.0, neighbours=neighbours, progress=False)
    hasher, result = fit_hasher(x, "dense", {"n_bits": 16, "hidden": (32,)}, cfg)
    assert np.isfinite(result.history[-1]["train_loss"])
    bits = np.unpackbits(hasher.encode(x).codes, axis=1).astype(np.int32)  # (120, 16)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)  # (120, 120)
    same = np.repeat(np.arange(4), 30)[:, None] == np.repeat(np.arange(4), 30)[None, :]
    assert dist[same].mean() + 3 < dist[~same].mean()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="distill"):
        TrainConfig(distill_weight=-1.0)
    with pytest.raises(ValueError, match="distill"):
        TrainConfig(distill_weight=1.0, distill_temperature=0.0)
