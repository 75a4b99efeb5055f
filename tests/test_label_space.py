"""The user's classes in the neighbour space (models.label_space; TrainConfig.label_space)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from hamdex.models.label_space import class_probabilities, class_space, with_classes
from hamdex.models.neighbours import nearest_neighbours
from hamdex.models.train import TrainConfig, fit_hasher
from sklearn.datasets import load_digits


def _digits(every: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    labels = np.where(np.arange(len(x)) % every == 0, digits.target, -1).astype(np.int64)
    return x, labels, digits.target


def test_labelled_rows_keep_their_class_and_the_rest_are_predicted():
    x, labels, truth = _digits()
    rows = np.arange(len(x))[: int(0.9 * len(x))]  # the last tenth held out
    proba = class_probabilities(x, labels, rows)
    assert proba is not None and proba.shape == (len(x), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    known = rows[labels[rows] >= 0]
    assert (proba[known] == np.eye(10, dtype=np.float32)[labels[known]]).all()
    unlabelled = np.setdiff1d(rows, known)
    assert (proba[unlabelled].argmax(axis=1) == truth[unlabelled]).mean() > 0.85
    held = np.arange(int(0.9 * len(x)), len(x))
    held_labelled = held[labels[held] >= 0]
    assert len(held_labelled) > 0
    assert (proba[held_labelled].max(axis=1) < 1.0).all(), "a held-out item's label never enters the space"


def test_too_few_labels_or_one_class_fit_nothing():
    x, labels, _ = _digits()
    few = np.full(len(x), -1, dtype=np.int64)
    few[:10] = np.arange(10)  # one labelled item a class
    assert class_probabilities(x, few, np.arange(len(x))) is None
    one = np.where(labels == 3, 3, -1)
    assert class_probabilities(x, one, np.arange(len(x))) is None


@pytest.mark.parametrize("sparse", [False, True])
def test_the_block_is_as_long_as_the_row_times_the_weight(sparse):
    rng = np.random.default_rng(0)
    space = rng.normal(size=(6, 4)).astype(np.float32) * np.arange(1, 7)[:, None]  # rows of different lengths
    proba = rng.dirichlet(np.ones(3), size=6).astype(np.float32)
    out = with_classes(sp.csr_matrix(space) if sparse else space, proba, 0.5)
    out = out.toarray() if sparse else out
    assert out.shape == (6, 7)
    np.testing.assert_allclose(out[:, :4], space)
    np.testing.assert_allclose(np.linalg.norm(out[:, 4:], axis=1), 0.5 * np.linalg.norm(space, axis=1), rtol=1e-5)
    assert with_classes(space, proba, 0.0) is space


def _noisy_classes(n: int = 1500, classes: int = 10, noise_dims: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Items whose class is a linear direction (a classifier finds it) under many noise dimensions (which
    cosine neighbours mostly follow)."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, classes, n)
    x = np.hstack([2.5 * np.eye(classes)[truth], rng.normal(size=(n, noise_dims))]).astype(np.float32)
    return x, truth


def _purity(space, truth: np.ndarray) -> float:
    return float((truth[nearest_neighbours(space, 10)] == truth[:, None]).mean())


def test_neighbours_follow_the_classes():
    x, truth = _noisy_classes()
    labels = np.where(np.arange(len(x)) % 10 == 0, truth, -1)
    space, info = class_space(x, labels, np.arange(len(x)), 1.0)
    assert info["used"] and info["check"]["with"] > info["check"]["without"]
    assert _purity(space, truth) > _purity(x, truth) + 0.1


def test_the_check_keeps_out_classes_a_linear_classifier_cannot_tell():
    # three classes in twelve interleaved sectors of a circle: neighbours by angle share a class, while a linear
    # classifier's probabilities only say where on the circle an item is
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, 1500)
    truth = (angle / (2 * np.pi) * 12).astype(int) % 3
    x = np.hstack([np.stack([np.cos(angle), np.sin(angle)], 1), 0.05 * rng.normal(size=(1500, 3))]).astype(np.float32)
    labels = np.where(np.arange(1500) % 5 == 0, truth, -1)
    space, info = class_space(x, labels, np.arange(1500), 1.0)
    assert not info["used"] and info["check"]["with"] <= info["check"]["without"]
    assert space is x


def test_too_few_labels_to_check_leave_the_space():
    x, truth = _noisy_classes()
    labels = np.where(np.arange(len(x)) % 30 == 0, truth, -1)  # 50 labelled: 10 to hide, under MIN_CHECKS
    space, info = class_space(x, labels, np.arange(len(x)), 1.0)
    assert space is x and info["check"] is None and not info["used"]


def test_training_reports_it_and_refuses_a_negative_weight():
    cfg = TrainConfig(
        epochs=1, min_steps=0, neighbours=5, label_space=1.0, progress=False, safeguard=False, device="cpu"
    )
    x, truth = _noisy_classes(600)
    names = [str(c) if i % 5 == 0 else None for i, c in enumerate(truth)]
    hasher, _ = fit_hasher(x, "dense", {"n_bits": 16, "hidden": (32,)}, cfg, labels=names)
    used = hasher.info["report"]["labels"]["label_space"]
    assert used["used"] and used["weight"] == 1.0 and used["check"]["with"] > used["check"]["without"]
    off, _ = fit_hasher(
        x,
        "dense",
        {"n_bits": 16, "hidden": (32,)},
        TrainConfig(
            epochs=1, min_steps=0, neighbours=5, label_space=0.0, progress=False, safeguard=False, device="cpu"
        ),
        labels=names,
    )
    assert off.info["report"]["labels"]["label_space"] is None
    with pytest.raises(ValueError, match="label_space"):
        TrainConfig(label_space=-1.0)


def test_the_classifier_reads_whichever_input_is_right_more_often():
    x, truth = _noisy_classes()
    labels = np.where(np.arange(len(x)) % 10 == 0, truth, -1)
    noise = np.random.default_rng(1).normal(size=(len(x), 20)).astype(np.float32)  # a space without the classes
    _, info = class_space(noise, labels, np.arange(len(x)), 1.0, features=x)
    assert info["classifier"] == "features" and info["accuracy"] > 0.9
    _, info = class_space(x, labels, np.arange(len(x)), 1.0, features=noise)
    assert info["classifier"] == "neighbour space"


def test_the_label_free_probe_clusters_the_space_with_the_classes(monkeypatch):
    import hamdex.models.train as train_module

    seen = []
    real = train_module.build_probe

    def spy(x, *args, **kwargs):
        seen.append(x.shape[1])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(train_module, "build_probe", spy)
    x, truth = _noisy_classes(800)
    names = [str(c) if i % 5 == 0 else None for i, c in enumerate(truth)]  # 16 labelled held-out: the clusters judge
    cfg = TrainConfig(epochs=1, min_steps=0, neighbours=5, progress=False, safeguard=False, device="cpu")
    hasher, _ = fit_hasher(x, "dense", {"n_bits": 16, "hidden": (32,)}, cfg, labels=names)
    assert hasher.info["report"]["labels"]["label_space"]["used"]
    assert hasher.info["report"]["validation"]["signal"] != "label mAP"
    assert seen == [x.shape[1] + 10], "the probe's clusters are found beside the classes' block"
    seen.clear()
    fit_hasher(x, "dense", {"n_bits": 16, "hidden": (32,)}, dataclasses.replace(cfg, label_space=0.0), labels=names)
    assert seen == [x.shape[1]]
