"""``hamdex eval``: a trained hasher beside classic baselines, on the same features, in one run.

Scores come from ``evaluation.harness`` (the same functions as ``benchmarks/quality.py``), so the numbers of the
two agree; metric keys are ``p@<k>``, ``p@<k>_tie_aware``, ``map``, ``p_r2`` and the code-health keys.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from hamdex.evaluation.harness import baseline_codes, code_metrics
from hamdex.models import data
from hamdex.models.hasher import Hasher


def _labels(block: data.Block) -> np.ndarray:
    if any(label is None for label in block.labels):
        raise ValueError("evaluation needs a label on every database and query item")
    return np.asarray(block.labels)


def evaluate_hasher(
    hasher: Hasher, db: data.Block, queries: data.Block, *, k: int = 100, baselines: Sequence[str] = ("lsh", "itq")
) -> dict[str, dict[str, Any]]:
    """{method: metrics}: the hasher ("hamdex") and each baseline fitted on the hasher's database features."""
    db_labels, q_labels = _labels(db), _labels(queries)
    db_x, q_x = hasher.features(db.inputs), hasher.features(queries.inputs)
    t0 = time.perf_counter()
    db_codes, q_codes = hasher.encode_features(db_x).codes, hasher.encode_features(q_x).codes
    rows = {
        "hamdex": {**code_metrics(q_codes, db_codes, q_labels, db_labels, k=k), "seconds": time.perf_counter() - t0}
    }
    for name in baselines:
        t0 = time.perf_counter()
        codes = baseline_codes(name, hasher.n_bits, q_x, db_x)
        rows[name] = {**code_metrics(codes.q, codes.db, q_labels, db_labels, k=k), "seconds": time.perf_counter() - t0}
    return rows
