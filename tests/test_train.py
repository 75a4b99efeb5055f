import numpy as np
import pytest
import torch
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig, reconstruction_loss
from hamdex.models.train import TrainConfig, fit_hasher, train
from sklearn.datasets import load_digits


def test_training_lowers_validation_loss_and_keeps_best_epoch():
    x = (load_digits().images.reshape(-1, 64) / 16).astype(np.float32)
    cfg = ModelConfig(input_dim=64, n_bits=16, recon="bernoulli", hidden=(64,))
    result = train(cfg, TrainConfig(epochs=8, progress=False), x)
    losses = [h["val_loss"] for h in result.history]
    assert losses[result.best_epoch - 1] == min(losses)
    assert min(losses) < losses[0]


def test_early_stopping_stops_before_epoch_limit():
    x = np.random.default_rng(0).random((64, 8)).astype(np.float32)  # noise: nothing to learn for long
    cfg = ModelConfig(input_dim=8, n_bits=8, recon="gaussian", hidden=(8,), bottleneck="sign")
    result = train(cfg, TrainConfig(epochs=200, patience=2, lr=1e-2, progress=False), x)
    assert len(result.history) < 200


@pytest.mark.parametrize("kind", ["multinomial", "bernoulli", "gaussian"])
def test_reconstruction_loss_is_lower_for_a_better_fit(kind):
    x = torch.rand(4, 10)
    good = (
        torch.log(x + 1e-3)
        if kind == "multinomial"
        else (torch.logit(x.clamp(0.01, 0.99)) if kind == "bernoulli" else x)
    )
    bad = -good
    assert reconstruction_loss(kind, good, x) < reconstruction_loss(kind, bad, x)


def test_digits_codes_find_same_class_neighbours():
    d = load_digits()
    images = (d.images * 255 / 16).astype(np.uint8)
    hasher, _ = fit_hasher(images, "pixels", {"n_bits": 32, "hidden": (256,)}, TrainConfig(epochs=30, progress=False))
    codes = hasher.encode(images).codes
    from hamdex.models.bits import hamming

    dist = hamming(codes, codes).astype(float)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :10]
    precision = (d.target[nearest] == d.target[:, None]).mean()
    assert precision > 0.5  # chance is 0.1


def test_input_dropout_only_in_training():
    model = HashingAutoencoder(ModelConfig(input_dim=16, n_bits=8, input_dropout=0.5, recon="gaussian")).eval()
    x = torch.randn(4, 16)
    assert torch.equal(model.logits(x), model.logits(x))


def test_infonce_prefers_aligned_pairs():
    from hamdex.models.objectives import neighbour_infonce

    torch.manual_seed(0)
    a = torch.tanh(torch.randn(32, 16) * 3)
    aligned = neighbour_infonce(a, a + 0.05 * torch.randn_like(a), temperature=0.3)
    shuffled = neighbour_infonce(a, a[torch.randperm(32)], temperature=0.3)
    assert aligned < shuffled


def test_contrastive_training_needs_neighbours_and_runs_with_them():
    with pytest.raises(ValueError, match="needs neighbours"):
        TrainConfig(contrastive_weight=1.0)
    texts = [f"{w} {w} item {i}" for w in ("orbit rocket", "engine brake", "piano violin") for i in range(20)]
    cfg = TrainConfig(epochs=2, neighbours=3, contrastive_weight=1.0, progress=False)
    hasher, result = fit_hasher(texts, "text", {"n_bits": 8, "hidden": (16,)}, cfg)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["train_loss"])
    assert hasher.encode(texts).codes.shape == (60, 1)


def test_sparse_and_dense_inputs_give_the_same_logits_loss_and_gradients():
    import scipy.sparse as sp
    from hamdex.models.hasher import to_tensor

    x = sp.random(16, 50, density=0.1, format="csr", dtype=np.float32, random_state=0)
    model = HashingAutoencoder(ModelConfig(input_dim=50, n_bits=8, hidden=(12,), bottleneck="sign")).eval()
    dense, sparse = to_tensor(x, "cpu"), to_tensor(x, "cpu", sparse=True)
    assert sparse.layout == torch.sparse_csr and dense.layout == torch.strided
    torch.testing.assert_close(model.logits(sparse), model.logits(dense))
    grads = []
    for inp in (dense, sparse):
        model.zero_grad()
        model(inp).loss.backward()
        grads.append(model.encoder[0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_sparse_input_dropout_drops_entries_in_training_only():
    import scipy.sparse as sp
    from hamdex.models.hasher import to_tensor

    x = to_tensor(sp.random(64, 40, density=0.5, format="csr", dtype=np.float32, random_state=1), "cpu", sparse=True)
    model = HashingAutoencoder(ModelConfig(input_dim=40, n_bits=8, hidden=(8,), input_dropout=0.5, dropout=0.0))
    torch.manual_seed(0)
    assert not torch.equal(model.train().logits(x), model.train().logits(x))
    assert torch.equal(model.eval().logits(x), model.eval().logits(x))


def test_whitened_neighbours_train_on_pixels_and_refuse_sparse_text():
    from hamdex.models.train import training_data

    with pytest.raises(ValueError, match="needs neighbours"):
        TrainConfig(neighbour_whiten=8)
    d = load_digits()
    images = (d.images[:200] * 255 / 16).astype(np.uint8)
    cfg = TrainConfig(epochs=1, neighbours=5, contrastive_weight=1.0, neighbour_whiten=20, progress=False)
    _, result = fit_hasher(images, "pixels", {"n_bits": 8, "hidden": (16,)}, cfg)
    assert len(result.history) == 1 and np.isfinite(result.history[-1]["train_loss"])
    import scipy.sparse as sp

    with pytest.raises(ValueError, match="dense"):
        training_data(sp.csr_matrix(np.eye(10, dtype=np.float32)), TrainConfig(neighbours=2, neighbour_whiten=4), 8)
