"""Shared fixtures: one tiny seeded checkpoint per featurizer kind (text, pixels, dense), trained once per session
in about a second each, and a factory of ``TestClient``s whose lifespan has run.
"""

from __future__ import annotations

import os

# FAISS's OpenMP threads fight over the 2 cores CI has (and over the cores of other tests' servers): one thread
# per process keeps small searches at microseconds. Set before FAISS is first imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import itertools  # noqa: E402
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hamdex.models import checkpoint
from hamdex.models.train import TrainConfig, fit_hasher
from hamdex.service.app import create_app
from hamdex.service.app import wait_ready as wait_until_ready
from hamdex.service.settings import Settings
from sklearn.datasets import load_digits

# in CI a skip fails the run unless tests/ci_skips.py allows it
from tests.ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401

TRAIN = TrainConfig(epochs=3, progress=False, seed=0, device="cpu")
TOPICS = {
    "sport": ["football", "goal", "team", "match", "league", "coach", "striker", "season"],
    "cooking": ["recipe", "oven", "flour", "butter", "sauce", "garlic", "simmer", "dough"],
    "space": ["rocket", "orbit", "planet", "telescope", "galaxy", "astronaut", "launch", "comet"],
    "finance": ["stock", "market", "bond", "interest", "bank", "dividend", "inflation", "investor"],
}
N_DIGITS = 360  # a fifth of load_digits keeps the pixel model well under the time budget

MakeClient = Callable[..., TestClient]


def synthetic_texts(n_per_topic: int = 10, seed: int = 0) -> list[str]:
    """Short documents of 4-6 words, each drawn from one topic's vocabulary."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(words, size=rng.integers(4, 7))) for words in TOPICS.values() for _ in range(n_per_topic)
    ]


def digit_images(n: int = N_DIGITS) -> np.ndarray:
    """The first ``n`` scikit-learn digits as uint8 (n, 8, 8) in 0..255 (the originals are 0..16)."""
    images = load_digits().images[:n]  # (n, 8, 8) float64 in [0, 16]
    return np.round(images * (255 / 16)).astype(np.uint8)


def dense_vectors(n: int = 200, d: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)  # (n, d)


def _train_and_save(path: Path, inputs: Any, kind: str, overrides: dict[str, Any]) -> Path:
    hasher, _ = fit_hasher(inputs, kind, overrides, TRAIN)
    checkpoint.save(path, hasher)
    return path


def settings_for(model_dir: Path, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of an app on ``model_dir`` whose collections live under ``tmp_path``, on the CPU."""
    values = {
        "model_path": model_dir,
        "collection_path": tmp_path / "collection",
        "collections_dir": tmp_path / "collections",
        "models_dir": tmp_path / "models",
        "device": "cpu",
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(autouse=True)
def one_faiss_thread() -> None:
    """One FAISS thread in every test: OpenMP threads spin against each other on a loaded 2-core machine (20 ms
    for a 200-item search), and an app's lifespan sets the count for its server."""
    faiss.omp_set_num_threads(1)


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "text"
    return _train_and_save(path, synthetic_texts(), "text", {"n_bits": 16, "hidden": (32,)})


@pytest.fixture(scope="session")
def pixel_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "pixels"
    # two 16-bit members (models.ensemble): every service test of the pixels kind runs on an ensemble
    return _train_and_save(path, digit_images(), "pixels", {"n_bits": 32, "hidden": (64,), "members": 2})


@pytest.fixture(scope="session")
def dense_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "dense"
    return _train_and_save(path, dense_vectors(), "dense", {"n_bits": 16, "hidden": (32,)})


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    """``make_client(model_dir, **settings_overrides)`` -> a started ``TestClient`` on a fresh collection, ready
    (model and default collection loaded; ``wait_ready=False`` returns as soon as the server answers).

    Pass ``collection_path=`` to reopen an existing collection (an app restart: shut the first client down with
    ``client.__exit__(None, None, None)`` first, a collection is open in one app at a time). Named collections go
    to a fresh ``collections_dir`` and named models are looked up in ``tmp_path / "models"`` unless given. Every
    client is shut down (lifespan exit) at the end of the test.
    """
    counter = itertools.count()
    with ExitStack() as stack:

        def make(model_dir: Path, *, wait_ready: bool = True, **settings_overrides: Any) -> TestClient:
            n = next(counter)
            values = {
                "model_path": model_dir,
                "collection_path": tmp_path / f"collection-{n}",
                "collections_dir": tmp_path / f"collections-{n}",
                "models_dir": tmp_path / "models",
                "device": "cpu",
                **settings_overrides,
            }
            client = stack.enter_context(TestClient(create_app(Settings(**values))))
            if wait_ready:
                wait_until_ready(client.app, timeout=60)
            return client

        yield make
