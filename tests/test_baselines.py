"""Classic hashing baselines: shapes, determinism, ITQ's objective, quality on digits, sparse input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hamdex.evaluation.baselines import BASELINE_NAMES, ITQ, LSH, Hasher, PCAHash, make_baseline
from hamdex.evaluation.metrics import precision_at_k
from hamdex.models.bits import unpack
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler


def gaussian(n: int = 200, d: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def low_rank(n: int = 300, d: int = 60, rank: int = 20, seed: int = 0) -> np.ndarray:
    """Data with well-separated principal values, so that PCA directions are stable across solvers."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((n, rank)))[0]
    v = np.linalg.qr(rng.standard_normal((d, rank)))[0]
    scales = 100.0 * 0.8 ** np.arange(rank)
    return ((u * scales) @ v.T + 1.0).astype(np.float32)  # offset: centering matters


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("n_bits", [8, 16, 32])
@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_shapes_and_dtypes(name: str, n_bits: int, sparse: bool) -> None:
    X = gaussian()
    data = sp.csr_matrix(X) if sparse else X
    hasher = make_baseline(name, n_bits).fit(data)
    assert isinstance(hasher, Hasher)
    assert hasher.name == name
    codes = hasher.encode(data[:17])
    assert codes.dtype == np.uint8
    assert codes.shape == (17, n_bits // 8)
    # Not degenerate: every bit takes both values somewhere on Gaussian data.
    bits = unpack(hasher.encode(data))
    assert np.all(bits.min(axis=0) == 0) and np.all(bits.max(axis=0) == 1)


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_deterministic_for_a_seed(name: str) -> None:
    X = gaussian()
    first = make_baseline(name, 16, seed=3).fit(X).encode(X)
    again = make_baseline(name, 16, seed=3).fit(X).encode(X)
    assert np.array_equal(first, again)


@pytest.mark.parametrize("name", ["lsh", "lsh_centered", "itq"])
def test_seed_changes_random_hashers(name: str) -> None:
    X = gaussian()
    assert not np.array_equal(
        make_baseline(name, 16, seed=0).fit(X).encode(X), make_baseline(name, 16, seed=1).fit(X).encode(X)
    )


def test_lsh_bits_are_signs_of_projections() -> None:
    X = gaussian()
    for centered in (False, True):
        lsh = LSH(16, centered=centered, seed=0).fit(X)
        mean = X.mean(axis=0) if centered else np.zeros(X.shape[1])
        expected = (X - mean) @ lsh.projection_ >= 0
        assert np.array_equal(unpack(lsh.encode(X)), expected)


def test_pcah_bits_are_signs_of_principal_components() -> None:
    X = low_rank()
    codes = PCAHash(8).fit(X).encode(X)
    centered = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    scores = centered @ vt[:8].T  # (n, 8), each component up to sign
    bits = unpack(codes).astype(bool)
    for j in range(8):
        agree = np.mean(bits[:, j] == (scores[:, j] >= 0))
        assert agree > 0.99 or agree < 0.01


def test_itq_loss_never_increases_and_rotation_is_orthogonal() -> None:
    X = low_rank(rank=40)
    itq = ITQ(32, n_iter=30, seed=0).fit(X)
    losses = np.array(itq.loss_history_)
    assert len(losses) == 31
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    assert losses[-1] < 0.95 * losses[0]  # it actually learns something
    assert np.allclose(itq.rotation_ @ itq.rotation_.T, np.eye(32), atol=1e-10)


def test_itq_with_no_iterations_is_a_random_rotation_of_pca() -> None:
    itq = ITQ(16, n_iter=0).fit(gaussian())
    assert len(itq.loss_history_) == 1


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(X))
    queries, database = order[:300], order[300:]
    return X[queries], y[queries], X[database], y[database]


def test_itq_beats_lsh_on_digits() -> None:
    # Measured at 32 bits over seeds 0-4 (300 queries, 1497 database): ITQ .654-.666, LSH .459-.505,
    # centered LSH .460-.508, PCAH .407; chance is 0.1.
    xq, yq, xdb, ydb = digits_split()
    scores = {}
    for name in ("lsh", "itq"):
        hasher = make_baseline(name, 32, seed=0).fit(xdb)
        scores[name] = precision_at_k(hasher.encode(xq), hasher.encode(xdb), yq, ydb, k=100)
    assert scores["lsh"] > 0.2
    assert scores["itq"] > 0.55
    assert scores["itq"] > scores["lsh"] + 0.08


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_sparse_input_gives_the_dense_codes(name: str) -> None:
    X = low_rank()
    dense = make_baseline(name, 16).fit(X)
    sparse = make_baseline(name, 16).fit(sp.csr_matrix(X))
    agree = np.mean(unpack(dense.encode(X)) == unpack(sparse.encode(sp.csr_matrix(X))))
    assert agree > 0.99


def test_sparse_tfidf_like_input() -> None:
    X = sp.random(500, 2000, density=0.01, format="csr", dtype=np.float32, random_state=0)
    for name in BASELINE_NAMES:
        codes = make_baseline(name, 32).fit(X).encode(X)
        assert codes.shape == (500, 4) and codes.dtype == np.uint8


def test_errors() -> None:
    with pytest.raises(ValueError, match="valid names are: lsh, lsh_centered, pcah, itq"):
        make_baseline("spectral", 32)
    with pytest.raises(ValueError, match="multiple of 8"):
        make_baseline("itq", 12)
    with pytest.raises(RuntimeError, match="fitted"):
        ITQ(16).encode(gaussian())
    with pytest.raises(ValueError, match="columns"):
        LSH(16).fit(gaussian(d=40)).encode(gaussian(d=41))
    with pytest.raises(ValueError, match="PCA to 64 bits"):
        PCAHash(64).fit(gaussian(d=40))
