"""``hamdex eval``: a trained hasher beside classic baselines, on the same features, in one run."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation import (
    make_baseline,
    mean_average_precision,
    precision_at_k,
    precision_at_k_tie_aware,
    precision_within_radius,
)
from models import data
from models.hasher import Hasher

LOG = logging.getLogger(__name__)


def retrieval_metrics(
    q: np.ndarray, db: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray, k: int
) -> dict[str, float]:
    """The table row for one method's packed codes."""
    return {
        "p@k": precision_at_k(q, db, q_labels, db_labels, k=k),
        "p@k_tie_aware": precision_at_k_tie_aware(q, db, q_labels, db_labels, k=k),
        "map": mean_average_precision(q, db, q_labels, db_labels),
        "p_r2": precision_within_radius(q, db, q_labels, db_labels, radius=2),
    }


def _labels(block: data.Block) -> np.ndarray:
    if any(label is None for label in block.labels):
        raise ValueError("evaluation needs a label on every database and query item")
    return np.asarray(block.labels)


def evaluate_hasher(
    hasher: Hasher,
    db: data.Block,
    queries: data.Block,
    *,
    k: int = 100,
    baselines: Sequence[str] = ("lsh", "itq"),
) -> dict[str, dict[str, Any]]:
    """{method: metrics}: the hasher ("hamdex") and each baseline fitted on the hasher's database features."""
    db_labels, q_labels = _labels(db), _labels(queries)
    db_x, q_x = hasher.features(db.inputs), hasher.features(queries.inputs)
    t0 = time.perf_counter()
    db_codes, q_codes = hasher.encode_features(db_x).codes, hasher.encode_features(q_x).codes
    rows = {
        "hamdex": {
            **retrieval_metrics(q_codes, db_codes, q_labels, db_labels, k),
            "seconds": time.perf_counter() - t0,
        }
    }
    for name in baselines:
        t0 = time.perf_counter()
        method = make_baseline(name, hasher.n_bits).fit(db_x)
        codes_db, codes_q = method.encode(db_x), method.encode(q_x)
        rows[name] = {
            **retrieval_metrics(codes_q, codes_db, q_labels, db_labels, k),
            "seconds": time.perf_counter() - t0,
        }
    return rows
