import numpy as np
import pytest
import scipy.sparse as sp
from hamdex.models.neighbours import mutual_neighbours, nearest_neighbours, neighbour_targets, pair_cosines


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
    from hamdex.models.neighbours import whitened

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


def test_full_vocabulary_bm25_keeps_every_shared_word_and_weighs_like_bm25():
    from hamdex.models.featurizers import TextFeaturizer
    from hamdex.models.neighbours import full_vocabulary_bm25

    texts = ["alpha beta gamma", "alpha beta delta", "gamma zeta", "omega unique", "alpha alpha alpha beta"]
    x = full_vocabulary_bm25(texts)
    assert x.shape == (5, 3) and x.dtype == np.float32  # alpha, beta, gamma: in two texts or more; the rest in one
    # a featurizer capped at 2 words drops one of them; the neighbour space does not
    assert TextFeaturizer(max_features=2).fit(texts).dim == 2
    assert full_vocabulary_bm25(["solo apples", "pear trees"]).shape[1] == 4  # no shared word: every word counts
    # hand-computed BM25 for "alpha" in the last text: tf 3, length 4 kept words (mean 2), df 3 of 5 texts
    idf = np.log1p((5 - 3 + 0.5) / (3 + 0.5))
    expected = 3 * 2.2 / (3 + 1.2 * (0.25 + 0.75 * 4 / 2.0)) * idf
    assert x[4, 0] == pytest.approx(expected, rel=1e-5)


def test_neighbours_come_from_the_given_space():
    from hamdex.models.train import TrainConfig, training_data

    rng = np.random.default_rng(0)
    x = sp.csr_matrix(rng.random((30, 8)).astype(np.float32))
    space = sp.csr_matrix(rng.random((30, 5)).astype(np.float32))
    cfg = TrainConfig(neighbours=3, progress=False)
    data = training_data(x, cfg, n_bits=8, space=space)
    assert [set(r) for r in data.neighbours.tolist()] == _brute_force(space.toarray(), 3)
    assert [set(r) for r in training_data(x, cfg, n_bits=8).neighbours.tolist()] == _brute_force(x.toarray(), 3)
    with pytest.raises(ValueError, match="rows"):
        training_data(x, cfg, n_bits=8, space=space[:10])


def test_full_vocab_neighbours_settings():
    from hamdex.models.train import TrainConfig, fit_hasher

    with pytest.raises(ValueError, match="needs neighbours"):
        TrainConfig(full_vocab_neighbours=True)
    with pytest.raises(ValueError, match="exclude each other"):
        TrainConfig(neighbours=5, full_vocab_neighbours=True, neighbour_whiten=4)
    images = np.random.default_rng(0).integers(0, 255, (20, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="needs text inputs"):
        fit_hasher(images, "pixels", {"n_bits": 8}, TrainConfig(neighbours=3, full_vocab_neighbours=True))


def test_text_model_trains_with_full_vocab_neighbours():
    from hamdex.models.train import TrainConfig, fit_hasher

    from tests.conftest import synthetic_texts

    texts = [f"Subject: topic {i % 4}\n\n{t}" for i, t in enumerate(synthetic_texts())]
    cfg = TrainConfig(
        epochs=2,
        neighbours=3,
        contrastive_weight=1.0,
        full_vocab_neighbours=True,
        subject_weight=0.5,
        progress=False,
    )
    hasher, result = fit_hasher(texts, "text", {"n_bits": 16, "hidden": (32,)}, cfg)
    assert hasher.encode(texts).codes.shape == (len(texts), 2) and len(result.history) == 2
    assert hasher.info["train_config"]["full_vocab_neighbours"] is True
    assert hasher.info["train_config"]["subject_weight"] == 0.5


def test_subject_line_comes_from_the_headers_without_reply_prefixes():
    from hamdex.models.neighbours import subject_line

    post = "From: a@b.org\nSubject: Re: RE: Fwd: Shuttle launch  \nLines: 3\n\nbody text\nSubject: not a header"
    assert subject_line(post) == "Shuttle launch"
    assert subject_line("subject:aw: Orbit\n\nbody") == "Orbit"  # case and spacing vary between mailers
    assert subject_line("no headers here\n\nSubject: in the body") == ""  # only before the first blank line
    assert subject_line("") == ""


def test_text_neighbour_space_adds_the_weighted_subject_beside_the_body():
    from hamdex.models.neighbours import full_vocabulary_bm25, text_neighbour_space, unit_rows

    texts = [
        "Subject: engine oil\n\nthe car runs well today",
        "Subject: Re: engine oil\n\nmy bike runs well today",
        "Subject: bike tyres\n\nthe car runs well today",
        "no subject at all\n\nmy bike runs well today",
    ]
    body = unit_rows(full_vocabulary_bm25(texts))
    assert abs(text_neighbour_space(texts) - body).max() == 0  # weight 0: the body alone
    space = text_neighbour_space(texts, subject_weight=0.5)
    assert space.shape == (4, body.shape[1] + 4) and space.dtype == np.float32  # engine, oil, bike, tyres
    assert abs(space[:, : body.shape[1]] - body).max() == 0
    subject = space[:, body.shape[1] :].toarray()
    np.testing.assert_allclose(np.linalg.norm(subject, axis=1), [0.5, 0.5, 0.5, 0.0], rtol=1e-5)
    added = (space @ space.T).toarray() - (body @ body.T).toarray()
    # posts 0 and 1 have the same subject (after "Re:"): their similarity gains 0.5 * 0.5; 0 and 2 share no subject word
    assert added[0, 1] == pytest.approx(0.25, rel=1e-5)
    assert added[0, 2] == pytest.approx(0.0, abs=1e-7) and added[0, 3] == pytest.approx(0.0, abs=1e-7)
    no_subjects = ["alpha beta", "beta gamma"]
    assert text_neighbour_space(no_subjects, 0.5).shape == full_vocabulary_bm25(no_subjects).shape
    with pytest.raises(ValueError, match="subject_weight"):
        text_neighbour_space(texts, -1.0)


def test_subject_weight_needs_text_neighbours():
    from hamdex.models.train import TrainConfig

    with pytest.raises(ValueError, match="full_vocab_neighbours"):
        TrainConfig(neighbours=3, subject_weight=0.5)
    with pytest.raises(ValueError, match="subject_weight"):
        TrainConfig(neighbours=3, full_vocab_neighbours=True, subject_weight=-0.1)
    assert TrainConfig(neighbours=3, full_vocab_neighbours=True, subject_weight=0.5).subject_weight == 0.5


def test_pair_cosines_in_blocks_match_the_definition():
    """Blocks of pairs (so wide dense features never copy all pairs at once) give each pair's plain cosine."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 7)).astype(np.float32)
    a, b = rng.integers(0, 20, 50), rng.integers(0, 20, 50)
    expected = np.array([x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]) for i, j in zip(a, b, strict=True)])
    for block in (3, 50, 1000):
        np.testing.assert_allclose(pair_cosines(x, a, b, block_size=block), expected, rtol=1e-5)
        np.testing.assert_allclose(pair_cosines(sp.csr_matrix(x), a, b, block_size=block), expected, rtol=1e-5)
    assert pair_cosines(x, a[:0], b[:0]).shape == (0,)


def test_with_lsa_adds_unit_lsa_rows_beside_the_space():
    from hamdex.models.neighbours import text_neighbour_space, with_lsa
    from sklearn.feature_extraction.text import TfidfVectorizer

    from tests.conftest import synthetic_texts

    texts = synthetic_texts()
    x = TfidfVectorizer().fit_transform(texts)
    space = text_neighbour_space(texts)
    mixed = with_lsa(space, x, 5, weight=0.5)
    assert mixed.shape == (len(texts), space.shape[1] + 5)
    assert np.allclose(mixed[:, : space.shape[1]].toarray(), space.toarray())  # the space itself is unchanged
    lsa_norms = np.linalg.norm(mixed[:, space.shape[1] :].toarray(), axis=1)
    assert np.allclose(lsa_norms, 0.5, atol=1e-5)
    assert np.allclose(np.linalg.norm(with_lsa(space, x, 5, weight=1.0)[:, space.shape[1] :].toarray(), axis=1), 1)
    assert with_lsa(space, x, 5, weight=0.0).shape == space.shape  # no weight, no LSA
    assert with_lsa(space[:3], x[:3], 50, weight=0.5).shape[1] == space.shape[1] + 2  # no more axes than the rows allow
    assert with_lsa(space[:1], x[:1], 50, weight=0.5).shape == space[:1].shape  # one text: no axis at all


def test_lsa_finds_neighbours_that_share_no_word():
    """Texts about one topic with disjoint words: BM25 sees no similarity, LSA sees the words' co-occurrence."""
    from hamdex.models.neighbours import text_neighbour_space, with_lsa
    from sklearn.feature_extraction.text import TfidfVectorizer

    topics = [["rocket", "orbit", "launch", "nasa"], ["flour", "oven", "bake", "dough"]]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(topics[i % 2], 3, replace=False)) for i in range(40)]
    texts += ["rocket orbit", "launch nasa"]  # 40 and 41 share no word but one topic
    x = TfidfVectorizer().fit_transform(texts)
    bm25, mixed = text_neighbour_space(texts), with_lsa(text_neighbour_space(texts), x, 2, weight=0.5)
    assert (bm25[40] @ bm25[41].T).toarray()[0, 0] == 0.0
    assert (mixed[40] @ mixed[41].T).toarray()[0, 0] > 0.9 * 0.5**2  # same topic in the LSA part
    topic = np.arange(42) % 2
    topic[40:] = 0
    neighbours = nearest_neighbours(mixed, 5)
    assert (topic[neighbours] == topic[:, None]).all()


def test_lsa_neighbours_setting():
    from hamdex.models.train import TrainConfig, fit_hasher

    from tests.conftest import synthetic_texts

    with pytest.raises(ValueError, match="lsa_neighbours"):
        TrainConfig(neighbours=3, lsa_neighbours=50)  # without full_vocab_neighbours
    with pytest.raises(ValueError, match="lsa_neighbours"):
        TrainConfig(neighbours=3, full_vocab_neighbours=True, lsa_neighbours=-1)
    with pytest.raises(ValueError, match="lsa_weight"):
        TrainConfig(neighbours=3, full_vocab_neighbours=True, lsa_neighbours=50, lsa_weight=0.0)
    cfg = TrainConfig(epochs=1, neighbours=3, full_vocab_neighbours=True, lsa_neighbours=4, progress=False)
    hasher, _ = fit_hasher(synthetic_texts(), "text", {"n_bits": 16, "hidden": (32,)}, cfg)
    assert hasher.info["train_config"]["lsa_neighbours"] == 4
