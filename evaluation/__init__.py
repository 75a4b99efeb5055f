"""Retrieval evaluation: Hamming-ranking metrics and classic hashing baselines."""

from hamdex.evaluation.baselines import BASELINE_NAMES, ITQ, LSH, Hasher, PCAHash, fit_pca, make_baseline
from hamdex.evaluation.metrics import (
    DistanceHistograms,
    code_health,
    float_precision_at_k,
    hamming_distance_histograms,
    mean_average_precision,
    precision_at_k,
    precision_at_k_tie_aware,
    precision_at_ks,
    precision_within_radius,
)

__all__ = [
    "BASELINE_NAMES",
    "ITQ",
    "LSH",
    "DistanceHistograms",
    "Hasher",
    "PCAHash",
    "code_health",
    "fit_pca",
    "float_precision_at_k",
    "hamming_distance_histograms",
    "make_baseline",
    "mean_average_precision",
    "precision_at_k",
    "precision_at_k_tie_aware",
    "precision_at_ks",
    "precision_within_radius",
]
