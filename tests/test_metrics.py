"""Hamming-ranking metrics: hand-computed cases, a brute-force reference, blocking and validation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hamdex.evaluation.metrics import (
    _as_words,
    _hamming_words,
    code_health,
    float_precision_at_k,
    hamming_distance_histograms,
    mean_average_precision,
    precision_at_k,
    precision_at_k_tie_aware,
    precision_at_ks,
    precision_within_radius,
)
from hamdex.models.bits import hamming, pack


def codes8(*values: int) -> np.ndarray:
    """8-bit codes written as integers -> uint8 (n, 1)."""
    return np.array(values, dtype=np.uint8)[:, None]


# The hand case. Distances (popcount of XOR):
#              d0=0x00 A  d1=0x01 B  d2=0x03 A  d3=0x0F B  d4=0xFF B
#   q0=0x00 A      0          1          2          4          8
#   q1=0xFF B      8          7          6          4          0
# No ties within a query, so every tie order gives the same ranking:
#   q0: d0(A) d1(B) d2(A) d3(B) d4(B)      q1: d4(B) d3(B) d2(A) d1(B) d0(A)
Q = codes8(0x00, 0xFF)
DB = codes8(0x00, 0x01, 0x03, 0x0F, 0xFF)
QL = np.array(["A", "B"])
DBL = np.array(["A", "B", "A", "B", "B"])


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 1.0),  # q0: d0 rel; q1: d4 rel
        (2, 0.75),  # q0: 1/2; q1: 2/2
        (3, 2 / 3),  # q0: A,B,A -> 2/3; q1: B,B,A -> 2/3
        (5, 0.5),  # q0: 2/5; q1: 3/5
    ],
)
def test_precision_at_k_hand_case_no_ties(k: int, expected: float) -> None:
    plain = precision_at_k(Q, DB, QL, DBL, k=k, seed=0)
    assert plain == pytest.approx(expected, abs=1e-12)
    # Without ties the tie-aware expectation is the same number, whatever the seed.
    assert precision_at_k_tie_aware(Q, DB, QL, DBL, k=k) == pytest.approx(expected, abs=1e-12)
    assert precision_at_k(Q, DB, QL, DBL, k=k, seed=123) == plain


def test_precision_at_ks_hand_case() -> None:
    result = precision_at_ks(Q, DB, QL, DBL, ks=(1, 2, 3, 5))
    assert result == pytest.approx({1: 1.0, 2: 0.75, 3: 2 / 3, 5: 0.5})
    assert all(isinstance(v, float) for v in result.values())


def test_mean_average_precision_hand_case() -> None:
    # q0: relevant at ranks 1, 3 -> AP = (1/1 + 2/3) / 2 = 5/6
    # q1: relevant at ranks 1, 2, 4 -> AP = (1 + 1 + 3/4) / 3 = 11/12
    assert mean_average_precision(Q, DB, QL, DBL) == pytest.approx((5 / 6 + 11 / 12) / 2)
    # top=3, R = relevant retrieved in the top 3: q0 ranks 1, 3 -> 5/6; q1 ranks 1, 2 -> 1
    assert mean_average_precision(Q, DB, QL, DBL, top=3) == pytest.approx((5 / 6 + 1) / 2)
    # top=2: q0 rank 1 only -> 1; q1 ranks 1, 2 -> 1
    assert mean_average_precision(Q, DB, QL, DBL, top=2) == pytest.approx(1.0)


def test_map_query_without_relevant_items_counts_zero() -> None:
    # A third query with label C, which no database item has: AP 0, and the mean is over 3 queries.
    q = codes8(0x00, 0xFF, 0x00)
    labels = np.array(["A", "B", "C"])
    assert mean_average_precision(q, DB, labels, DBL) == pytest.approx((5 / 6 + 11 / 12 + 0) / 3)
    assert mean_average_precision(q, DB, labels, DBL, top=2) == pytest.approx((1 + 1 + 0) / 3)


@pytest.mark.parametrize(
    ("radius", "expected"),
    [
        (0, 1.0),  # q0: {d0} all A; q1: {d4} all B
        (2, (2 / 3 + 1) / 2),  # q0: {d0, d1, d2} = A,B,A; q1: {d4}
        (4, (2 / 4 + 2 / 2) / 2),  # q0: {d0..d3} = A,B,A,B; q1: {d3, d4} = B,B
        (8, (2 / 5 + 3 / 5) / 2),  # everything
    ],
)
def test_precision_within_radius_hand_case(radius: int, expected: float) -> None:
    assert precision_within_radius(Q, DB, QL, DBL, radius=radius) == pytest.approx(expected)


def test_precision_within_radius_empty_ball_scores_zero() -> None:
    # 0x3C = 00111100 is at distance 4, 5, 6, 4, 4 from the database: nothing within radius 2.
    q = codes8(0x00, 0x3C)
    labels = np.array(["A", "B"])
    # q0 as before (2/3), q1 retrieves nothing -> 0.
    assert precision_within_radius(q, DB, labels, DBL, radius=2) == pytest.approx((2 / 3 + 0) / 2)


# The tie case: one query 0x00 (A) against
#   t0=0x00 B (distance 0), then a tie at distance 1: t1=0x01 A, t2=0x02 B, t3=0x04 B, t4=0x08 A.
# k=2: t0 is first (irrelevant) and one of the four tied items fills the second place.
#   plain: 0/2 or 1/2 depending on which tied item the seeded permutation puts first
#   tie-aware: (0 + (2 - 1) * 2/4) / 2 = 0.25
TQ = codes8(0x00)
TDB = codes8(0x00, 0x01, 0x02, 0x04, 0x08)
TQL = np.array([1])
TDBL = np.array([0, 1, 0, 0, 1])


def test_tie_aware_differs_from_seeded_plain_under_ties() -> None:
    tie_aware = precision_at_k_tie_aware(TQ, TDB, TQL, TDBL, k=2)
    assert tie_aware == pytest.approx(0.25)
    plains = [precision_at_k(TQ, TDB, TQL, TDBL, k=2, seed=s) for s in range(400)]
    assert set(plains) == {0.0, 0.5}
    # The tie-aware value is the expectation of the plain one over random tie orders.
    assert np.mean(plains) == pytest.approx(tie_aware, abs=0.05)


def test_tie_aware_when_the_whole_tie_fits() -> None:
    # k=5 takes everything: (0 + (5 - 1) * 2/4) / 5 = 2/5, equal to the plain value for every seed.
    assert precision_at_k_tie_aware(TQ, TDB, TQL, TDBL, k=5) == pytest.approx(0.4)
    assert precision_at_k(TQ, TDB, TQL, TDBL, k=5, seed=7) == pytest.approx(0.4)


def test_seeded_tie_order_follows_the_permutation() -> None:
    # The documented order: ties go to the item that comes first in default_rng(seed).permutation(n).
    for seed in range(10):
        perm = np.random.default_rng(seed).permutation(len(TDB))
        first_tied = next(i for i in perm if i != 0)
        expected = (TDBL[first_tied] == 1) / 2
        assert precision_at_k(TQ, TDB, TQL, TDBL, k=2, seed=seed) == expected


# ---------------------------------------------------------------------------------------------------
# A brute-force reference on random data with many ties
# ---------------------------------------------------------------------------------------------------


def random_case(n_q: int = 23, n_db: int = 150, n_bytes: int = 1, n_labels: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (n_q, n_bytes), dtype=np.uint8)
    db = rng.integers(0, 256, (n_db, n_bytes), dtype=np.uint8)
    return q, db, rng.integers(0, n_labels, n_q), rng.integers(0, n_labels, n_db)


def reference_relevance(q, db, ql, dbl, seed):
    """Brute-force rankings: (relevance in rank order per query, distances) with the documented tie order."""
    dist = hamming(q, db)  # (n_q, n_db)
    position = np.empty(len(db), dtype=np.int64)
    position[np.random.default_rng(seed).permutation(len(db))] = np.arange(len(db))
    ranked = [np.lexsort((position, dist[i])) for i in range(len(q))]
    return np.array([dbl[r] == ql[i] for i, r in enumerate(ranked)]), dist


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("k", [1, 10, 37])
def test_precision_matches_brute_force(seed: int, k: int) -> None:
    q, db, ql, dbl = random_case()
    rel, dist = reference_relevance(q, db, ql, dbl, seed)
    assert precision_at_k(q, db, ql, dbl, k=k, seed=seed) == pytest.approx(rel[:, :k].mean())
    expected = []
    for i in range(len(q)):
        kth = np.sort(dist[i])[k - 1]
        closer, tied = dist[i] < kth, dist[i] == kth
        relevant = dbl == ql[i]
        share = (relevant & tied).sum() / tied.sum()
        expected.append(((relevant & closer).sum() + (k - closer.sum()) * share) / k)
    assert precision_at_k_tie_aware(q, db, ql, dbl, k=k) == pytest.approx(np.mean(expected))


@pytest.mark.parametrize("top", [None, 1, 20, 150])
def test_map_matches_brute_force(top: int | None) -> None:
    q, db, ql, dbl = random_case(seed=1)
    rel, _ = reference_relevance(q, db, ql, dbl, seed=0)
    rel = rel[:, :top]
    aps = []
    for row in rel:
        precisions = np.cumsum(row) / np.arange(1, len(row) + 1)
        aps.append(precisions[row].sum() / max(row.sum(), 1))
    assert mean_average_precision(q, db, ql, dbl, top=top) == pytest.approx(np.mean(aps))


def test_precision_at_ks_agrees_with_precision_at_k() -> None:
    q, db, ql, dbl = random_case(seed=2)
    ks = (1, 5, 50, 150)
    result = precision_at_ks(q, db, ql, dbl, ks=ks, seed=4)
    for k in ks:
        assert result[k] == pytest.approx(precision_at_k(q, db, ql, dbl, k=k, seed=4), abs=1e-12)


@pytest.mark.parametrize("n_bytes", [1, 2, 3, 4, 8, 12, 16])
def test_hamming_words_matches_popcount_of_xor(n_bytes: int) -> None:
    q, db, _, _ = random_case(n_q=9, n_db=31, n_bytes=n_bytes)
    assert np.array_equal(_hamming_words(_as_words(q), _as_words(db)), hamming(q, db))


@pytest.mark.parametrize("n_bytes", [1, 4])
def test_blocks_smaller_than_the_query_count_change_nothing(n_bytes: int) -> None:
    q, db, ql, dbl = random_case(n_q=11, n_bytes=n_bytes, seed=5)
    metrics = [
        lambda b: precision_at_k(q, db, ql, dbl, k=10, block_size=b),
        lambda b: precision_at_k_tie_aware(q, db, ql, dbl, k=10, block_size=b),
        lambda b: precision_at_ks(q, db, ql, dbl, ks=(1, 10), block_size=b),
        lambda b: mean_average_precision(q, db, ql, dbl, block_size=b),
        lambda b: mean_average_precision(q, db, ql, dbl, top=7, block_size=b),
        lambda b: precision_within_radius(q, db, ql, dbl, radius=2, block_size=b),
        lambda b: tuple(map(tuple, hamming_distance_histograms(q, db, ql, dbl, n_bytes * 8, block_size=b))),
    ]
    for metric in metrics:
        one_block = metric(1024)
        assert metric(1) == one_block
        assert metric(4) == one_block


@pytest.mark.parametrize("n_labels", [1, 3, 50])
@pytest.mark.parametrize("n_bytes", [1, 2])
def test_metrics_are_python_floats_in_unit_interval(n_labels: int, n_bytes: int) -> None:
    q, db, ql, dbl = random_case(n_bytes=n_bytes, n_labels=n_labels, seed=6)
    values = [
        precision_at_k(q, db, ql, dbl, k=10),
        precision_at_k_tie_aware(q, db, ql, dbl, k=10),
        mean_average_precision(q, db, ql, dbl),
        mean_average_precision(q, db, ql, dbl, top=10),
        precision_within_radius(q, db, ql, dbl, radius=1),
        *precision_at_ks(q, db, ql, dbl, ks=(1, 10, 100)).values(),
        *code_health(db).values(),
    ]
    for value in values:
        assert type(value) is float
        assert 0.0 <= value <= 1.0 + 1e-12
    if n_labels == 1:  # every item is relevant (radius precision may still be 0 for an empty ball)
        assert values[:4] == pytest.approx([1.0] * 4)


# ---------------------------------------------------------------------------------------------------
# Float reference, histograms, code health
# ---------------------------------------------------------------------------------------------------

# Queries q0=[1, 0] (A), q1=[0, 1] (B); database a0=[1, 0] A, a1=[10, 1] B, a2=[0, 1] B, a3=[1, 10] A.
# cosine from q0: a0 1, a1 .995, a3 .0995, a2 0      -> top 3 = A,B,A = 2/3
# cosine from q1: a2 1, a3 .995, a1 .0995, a0 0      -> top 3 = B,A,B = 2/3
# euclidean from q0: a0 0, a2 1.41, a1 9.06, a3 10   -> top 3 = A,B,B = 1/3
# euclidean from q1: a2 0, a0 1.41, a3 9.06, a1 10   -> top 3 = B,A,A = 1/3
FQ = np.array([[1, 0], [0, 1]], dtype=np.float32)
FDB = np.array([[1, 0], [10, 1], [0, 1], [1, 10]], dtype=np.float32)
FQL, FDBL = np.array(["A", "B"]), np.array(["A", "B", "B", "A"])


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(
    ("metric", "k", "expected"),
    [("cosine", 1, 1.0), ("cosine", 3, 2 / 3), ("euclidean", 1, 1.0), ("euclidean", 3, 1 / 3)],
)
def test_float_precision_hand_case(sparse: bool, metric: str, k: int, expected: float) -> None:
    q, db = (sp.csr_matrix(FQ), sp.csr_matrix(FDB)) if sparse else (FQ, FDB)
    assert float_precision_at_k(q, db, FQL, FDBL, k=k, metric=metric, block_size=1) == pytest.approx(expected)


def test_float_precision_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="metric"):
        float_precision_at_k(FQ, FDB, FQL, FDBL, k=1, metric="manhattan")


def test_distance_histograms_hand_case() -> None:
    # Relevant pairs: (q0,d0)=0 (q0,d2)=2 (q1,d1)=7 (q1,d3)=4 (q1,d4)=0
    # Irrelevant pairs: (q0,d1)=1 (q0,d3)=4 (q0,d4)=8 (q1,d0)=8 (q1,d2)=6
    rel, irrel = hamming_distance_histograms(Q, DB, QL, DBL, n_bits=8)
    assert rel == pytest.approx(np.array([2, 0, 1, 0, 1, 0, 0, 1, 0]) / 5)
    assert irrel == pytest.approx(np.array([0, 1, 0, 0, 1, 0, 1, 0, 2]) / 5)


def test_distance_histograms_subsample_queries() -> None:
    q, db, ql, dbl = random_case(n_q=40, n_db=50, seed=8)
    hists = hamming_distance_histograms(q, db, ql, dbl, n_bits=8, max_pairs=100)  # 2 queries x 50
    for hist in hists:
        assert hist.shape == (9,)
        assert hist.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_bits"):
        hamming_distance_histograms(q, db, ql, dbl, n_bits=16)


def test_code_health_all_equal_codes() -> None:
    codes = np.tile(np.array([[0x5A, 0xFF]], dtype=np.uint8), (4, 1))
    health = code_health(codes)
    assert health == {"bit_balance": 1.0, "mean_abs_bit_correlation": 0.0, "distinct_code_fraction": 0.25}


def test_code_health_balanced_independent_bits() -> None:
    # All 256 byte values: every bit is on exactly half the time and every pair of bits is independent.
    health = code_health(codes8(*range(256)))
    assert health["bit_balance"] == pytest.approx(0.0)
    assert health["mean_abs_bit_correlation"] == pytest.approx(0.0, abs=1e-12)
    assert health["distinct_code_fraction"] == 1.0


@pytest.mark.parametrize("pair", [(0x00, 0x03), (0x01, 0x02)])
def test_code_health_one_correlated_pair(pair: tuple[int, int]) -> None:
    # Bits 0 and 1 balanced and equal (0x00/0x03) or opposite (0x01/0x02): |corr| = 1 for 1 of 28 pairs;
    # bits 2..7 constant (balance 1, correlation 0). Balance = (0 + 0 + 6 * 1) / 8.
    codes = codes8(*pair * 3)
    health = code_health(codes, block_size=4)
    assert health["bit_balance"] == pytest.approx(0.75)
    assert health["mean_abs_bit_correlation"] == pytest.approx(1 / 28)
    assert health["distinct_code_fraction"] == pytest.approx(2 / 6)


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="uint8"):
        precision_at_k(Q.astype(np.int64), DB, QL, DBL, k=1)
    with pytest.raises(ValueError, match="bytes"):
        precision_at_k(pack(np.zeros((2, 16))), DB, QL, DBL, k=1)
    with pytest.raises(ValueError, match="labels"):
        precision_at_k(Q, DB, QL, DBL[:4], k=1)
    for k in (0, 6):
        with pytest.raises(ValueError, match="k must be"):
            precision_at_k(Q, DB, QL, DBL, k=k)
    with pytest.raises(ValueError, match="radius"):
        precision_within_radius(Q, DB, QL, DBL, radius=-1)
    with pytest.raises(ValueError, match="block_size"):
        mean_average_precision(Q, DB, QL, DBL, block_size=0)
