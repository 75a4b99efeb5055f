"""How stable the safeguard's probe clusters are per data set (issue 18): the adjusted Rand index between the
spectral clusterings (models.teacher.cluster_labels, as models.probe builds them) of two random 80% subsets of the
training items, on the items they share, over three pairs; beside it the ARI of the clusters against the labels.
A measured and dropped idea (docs/robustness.md): stability does not tell the cells the model loses from those it
wins.

    python benchmarks/probe_stability.py trec webkb r8 digits fashion-1k 20ng-3k
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

if __package__ in (None, ""):  # run as a file: the repository root on the path, as `python -m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamdex.models.featurizers import make_featurizer  # noqa: E402
from hamdex.models.neighbours import nearest_neighbours  # noqa: E402
from hamdex.models.probe import CLUSTERS, GRAPH_NEIGHBOURS  # noqa: E402
from hamdex.models.teacher import cluster_labels  # noqa: E402

from benchmarks.robustness import DATASETS, Split  # noqa: E402

FEATURIZERS = {"text": "text", "image": "pixels", "vector": "dense"}


def features(split: Split) -> tuple[object, np.ndarray]:
    """The training items' features as a default featurizer of their kind gives them, and their labels."""
    featurizer = make_featurizer(FEATURIZERS[split.train.kind])
    featurizer.fit(split.train.inputs)
    return featurizer.transform(split.train.inputs), np.asarray(split.train.labels)


def stability(x, labels: np.ndarray, n_max: int = 5000, pairs: int = 3) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(0)
    base = rng.permutation(x.shape[0])[:n_max]
    size = int(0.8 * len(base))
    agree, to_labels = [], []
    for pair in range(pairs):
        a, b = (np.sort(rng.permutation(base)[:size]) for _ in range(2))
        la = cluster_labels(x[a], nearest_neighbours(x[a], GRAPH_NEIGHBOURS), CLUSTERS, seed=pair)
        lb = cluster_labels(x[b], nearest_neighbours(x[b], GRAPH_NEIGHBOURS), CLUSTERS, seed=pair + 7)
        _, ia, ib = np.intersect1d(a, b, return_indices=True)
        agree.append(adjusted_rand_score(la[ia], lb[ib]))
        to_labels.append(adjusted_rand_score(la, labels[a]))
    return agree, to_labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", choices=sorted(DATASETS))
    args = parser.parse_args(argv)
    print("| data | items | stability ARI (min-max) | clusters vs labels ARI | seconds |")
    print("|---|---|---|---|---|")
    for name in args.datasets:
        t0 = time.perf_counter()
        x, labels = features(DATASETS[name]())
        agree, to_labels = stability(x, labels)
        print(
            f"| {name} | {min(x.shape[0], 5000)} | {np.mean(agree):.3f} ({min(agree):.3f}-{max(agree):.3f}) "
            f"| {np.mean(to_labels):.3f} | {time.perf_counter() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
