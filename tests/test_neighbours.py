import numpy as np
import pytest
import scipy.sparse as sp

from models.neighbours import mutual_neighbours, nearest_neighbours, neighbour_targets


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


@pytest.mark.parametrize("sparse", [False, True])
def test_similarity_weighted_targets(sparse):
    x = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    features = sp.csr_matrix(x) if sparse else x
    neighbours = np.array([[1, 2], [0, 2], [1, 0]])
    c = 1 / np.sqrt(2)  # cos(x0, x1); cos(x0, x2) = 0
    for power in (1.0, 2.0):
        targets = neighbour_targets(features, neighbours, sim_power=power)
        dense = targets.toarray() if sparse else targets
        np.testing.assert_allclose(dense[0], (x[0] + c**power * x[1]) / (1 + c**power), rtol=1e-6)
    uniform = neighbour_targets(features, neighbours)
    expected = (x + x[neighbours].sum(axis=1)) / 3  # power 0: the plain mean of the item and its 2 neighbours
    np.testing.assert_allclose(uniform.toarray() if sparse else uniform, expected, rtol=1e-6)
    with pytest.raises(ValueError):
        neighbour_targets(features, neighbours, sim_power=-1.0)


def test_mutual_neighbours():
    neighbours = np.array([[1, 2], [0, 3], [3, 1], [2, 0]])  # mutual pairs: 0-1, 2-3
    got = mutual_neighbours(neighbours)
    assert got.shape == neighbours.shape
    assert got.tolist() == [[1, 1], [0, 0], [3, 3], [2, 2]]
    lonely = np.array([[1], [2], [0]])  # a 3-cycle: nobody is mutual, rows are kept
    assert mutual_neighbours(lonely).tolist() == lonely.tolist()


def test_whitened_has_unit_variance_and_drops_constant_axes():
    from models.neighbours import whitened

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 5)).astype(np.float32) * np.array([10, 3, 1, 0.5, 0.1], np.float32)
    x = np.concatenate([x, np.ones((500, 1), np.float32)], axis=1)  # a constant column: zero variance
    w = whitened(x, 10)
    assert w.shape == (500, 5)  # the constant axis is dropped, dim capped at d
    np.testing.assert_allclose(w.std(axis=0, ddof=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(np.corrcoef(w.T), np.eye(5), atol=1e-3)
    assert whitened(x, 2).shape == (500, 2)
    with pytest.raises(ValueError, match="dense"):
        whitened(sp.csr_matrix(x), 2)
