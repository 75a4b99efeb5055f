import numpy as np
import pytest
import scipy.sparse as sp

from models.neighbours import nearest_neighbours, neighbour_targets


def _brute_force(x: np.ndarray, k: int) -> list[set[int]]:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in sim]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("block_size", [3, 1024])
def test_neighbours_match_brute_force(sparse, block_size):
    rng = np.random.default_rng(0)
    x = rng.random((40, 6)).astype(np.float32) + 0.01
    got = nearest_neighbours(sp.csr_matrix(x) if sparse else x, k=4, block_size=block_size)
    assert got.shape == (40, 4)
    for i, (row, expected) in enumerate(zip(got, _brute_force(x, 4), strict=True)):
        assert i not in row
        assert set(row.tolist()) == expected


@pytest.mark.parametrize("sparse", [False, True])
def test_targets_are_neighbourhood_means(sparse):
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    features = sp.csr_matrix(x) if sparse else x
    targets = neighbour_targets(features, nearest_neighbours(features, k=1))
    assert sp.issparse(targets) == sparse
    dense = targets.toarray() if sparse else targets
    np.testing.assert_allclose(dense[0], (x[0] + x[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(dense[2], (x[2] + x[3]) / 2, rtol=1e-6)


def test_k_larger_than_data_is_capped():
    x = np.eye(3, dtype=np.float32) + 0.1
    assert nearest_neighbours(x, k=10).shape == (3, 2)
