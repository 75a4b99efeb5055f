import numpy as np
import pytest
import torch
from hamdex.models.neighbours import nearest_neighbours
from hamdex.models.objectives import cluster_supcon, teacher_bce
from hamdex.models.teacher import cluster_labels, knn_affinity, spectral_embedding, spectral_teacher_bits
from hamdex.models.train import TrainConfig, fit_hasher


def _blobs(n_per: int = 40, n_blobs: int = 4, dim: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative clusters: each blob has its own block of active features (like topics over words)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_per * n_blobs, dim)).astype(np.float32) * 0.1
    labels = np.repeat(np.arange(n_blobs), n_per)
    block = dim // n_blobs
    for b in range(n_blobs):
        x[labels == b, b * block : (b + 1) * block] += 1.0
    return x, labels


def test_affinity_is_symmetric_and_positive_on_edges():
    x, _ = _blobs()
    w = knn_affinity(x, nearest_neighbours(x, 5))
    assert abs(w - w.T).max() == 0
    assert w.nnz >= 5 * len(x) and w.data.min() > 0


def test_spectral_embedding_and_teacher_bits_separate_blobs():
    x, labels = _blobs()
    nb = nearest_neighbours(x, 5)
    emb = spectral_embedding(knn_affinity(x, nb), 3)
    assert emb.shape == (len(x), 3)
    bits = spectral_teacher_bits(x, nb, 8)
    assert bits.shape == (len(x), 8) and bits.dtype == bool
    dist = (bits[:, None] != bits[None]).sum(axis=2)  # (n, n) Hamming distances
    same = labels[:, None] == labels[None]
    assert dist[same].mean() < 0.5 * dist[~same].mean()


def test_cluster_labels_recover_blobs():
    from sklearn.metrics import adjusted_rand_score

    x, labels = _blobs()
    found = cluster_labels(x, nearest_neighbours(x, 5), 4, dim=3)
    assert adjusted_rand_score(labels, found) > 0.9


def test_a_small_training_set_gets_fewer_clusters():
    x, _ = _blobs()
    few = x[:30]
    found = cluster_labels(few, nearest_neighbours(few, 5), 100)  # the text preset's 100 on 30 items
    assert len(found) == 30 and 2 <= len(set(found.tolist())) <= 30 // 5
    tiny = x[:8]
    assert cluster_labels(tiny, nearest_neighbours(tiny, 3), 100).tolist() == [0] * 8  # one cluster


def test_teacher_bce_and_supcon_prefer_agreement():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert teacher_bce(torch.tensor([[0.9, 0.1], [0.1, 0.9]]), teacher) < teacher_bce(1 - teacher * 0.8, teacher)
    codes = torch.tensor([[1.0, 1.0], [0.9, 1.0], [-1.0, -1.0], [-1.0, -0.9]])
    good, bad = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    assert cluster_supcon(codes, good, 0.3) < cluster_supcon(codes, bad, 0.3)
    assert cluster_supcon(codes, torch.arange(4), 0.3) == 0  # no positives: nothing to learn


@pytest.mark.parametrize("option", [{"teacher_weight": 1.0}, {"cluster_weight": 1.0, "n_clusters": 3}])
def test_teacher_terms_need_neighbours_and_train(option):
    with pytest.raises(ValueError, match="need neighbours"):
        TrainConfig(**option)
    texts = [f"{w} {w} item {i}" for w in ("orbit rocket", "engine brake", "piano violin") for i in range(20)]
    cfg = TrainConfig(epochs=2, neighbours=3, contrastive_weight=1.0, progress=False, **option)
    hasher, result = fit_hasher(texts, "text", {"n_bits": 8, "hidden": (16,)}, cfg)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["train_loss"])
    assert hasher.encode(texts).codes.shape == (60, 1)
