"""How right the classes are that label propagation gives unlabelled items (models.propagate), on the graph the
preset trains with, beside a plain vote of each item's labelled neighbours in the same graph (the baseline); and
what the classes do to the neighbour space itself (``TrainConfig.label_space``, models.label_space): the
classifier's accuracy, the check's verdict and the unlabelled items' neighbour purity without and with them.

For each share of labelled training items (seeded, as ``hamdex train --label-fraction``): the accuracy of the class
propagated to every unlabelled item; the confidence bar the check on hidden labelled items set
(``models.propagate.min_confidence``) and the items training takes (above the bar, at most half, as
``TrainConfig.label_propagation`` 0.5) with their accuracy; the vote's accuracy over the items with at least one
labelled neighbour, and how many have one.

    python -m benchmarks.propagation --dataset 20ng --fractions 0.01,0.1
    python -m benchmarks.propagation --dataset fashion-mnist --quick
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from hamdex.evaluation import harness
from hamdex.models import label_space, propagate
from hamdex.models.featurizers import make_featurizer
from hamdex.models.neighbours import nearest_neighbours
from hamdex.models.presets import preset
from hamdex.models.train import TrainConfig, encode_labels, neighbour_space, similarity_space


def preset_space(inputs, kind: str, n_bits: int):
    """Where ``fit_hasher`` finds this preset's neighbours (dense or sparse), the model's features, and how many
    neighbours it takes."""
    _, train_over = preset(kind, n_bits, n_items=len(inputs))
    cfg = TrainConfig(progress=False, **{**train_over, "target_features": "input"})
    x = make_featurizer(kind).fit(inputs).transform(inputs)
    space = neighbour_space(inputs, x, cfg)
    assert cfg.neighbours, f"the {kind} preset trains without neighbours"
    return (similarity_space(x, cfg) if space is None else space), x, cfg.neighbours


def purity(space, truth: np.ndarray, k: int, rows: np.ndarray) -> float:
    """The share of the ``rows``' k nearest neighbours in ``space`` that share their class."""
    graph = nearest_neighbours(space, k)
    return float((truth[graph[rows]] == truth[rows, None]).mean())


def neighbour_vote(labels: np.ndarray, graph: np.ndarray) -> np.ndarray:
    """int (n,): the most frequent class among each row's labelled neighbours, -1 where none is labelled."""
    n_classes = int(labels.max()) + 1
    votes = np.zeros((len(labels), n_classes))
    for column in graph.T:
        known = labels[column] >= 0
        np.add.at(votes, (np.flatnonzero(known), labels[column][known]), 1)
    return np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), -1)


def run(dataset: str, quick: bool, fractions: Sequence[float], seed: int) -> dict:
    data = harness.DATASETS[dataset]
    scale = data.quick if quick else data.full
    split = data.load(scale, seed)
    inputs, truth_names = split.db_inputs, [str(label) for label in split.db_labels]
    truth, _ = encode_labels(truth_names)
    space, x, k = preset_space(inputs, data.featurizer, 32)
    graph = nearest_neighbours(space, k)
    rows = np.arange(len(truth))
    out = {}
    for fraction in fractions:
        labels, _ = encode_labels(truth_names, fraction, seed)
        unlabelled = labels < 0
        inside = np.ones(len(labels), dtype=bool)
        seeds = np.flatnonzero(labels >= 0)
        every, _ = propagate.spread(labels, graph, inside, seeds)  # every unlabelled item's propagated class
        bar = propagate.min_confidence(labels, graph, inside, seeds, seed)
        half = propagate.propagate_labels(labels, graph, rows, 0.5, seed)  # what training takes
        taken = unlabelled & (half >= 0)
        vote = neighbour_vote(labels, graph)
        voted = unlabelled & (vote >= 0)
        out[fraction] = {
            "labelled": int((~unlabelled).sum()),
            "propagation_accuracy": float((every[unlabelled] == truth[unlabelled]).mean()),
            "confidence_bar": bar,
            "taken": int(taken.sum()),
            "taken_accuracy": float((half[taken] == truth[taken]).mean()) if taken.any() else None,
            "vote_coverage": float(voted.sum() / unlabelled.sum()),
            "vote_accuracy": float((vote[voted] == truth[voted]).mean()),
            **classes_in_space(space, x, labels, truth, k, seed),
        }
    return out


def classes_in_space(space, x, labels: np.ndarray, truth: np.ndarray, k: int, seed: int) -> dict:
    """What ``TrainConfig.label_space`` 1.0 does to the space (models.label_space): which classifier the check
    chose and its accuracy on the unlabelled items, the check's verdict, and the unlabelled items' neighbour purity
    without and with the block."""
    rows, unlabelled = np.arange(len(labels)), labels < 0
    _, info = label_space.class_space(space, labels, rows, 1.0, seed, x)
    chosen = x if info["classifier"] == "features" else space
    proba = None if info["classifier"] is None else label_space.class_probabilities(chosen, labels, rows, seed)
    return {
        "classifier": info["classifier"],
        "classifier_accuracy": None if proba is None else float((proba.argmax(1) == truth)[unlabelled].mean()),
        "space_check": info["check"],
        "space_used": info["used"],
        "purity": purity(space, truth, k, np.flatnonzero(unlabelled)),
        "purity_with_classes": None
        if proba is None
        else purity(label_space.with_classes(space, proba, 1.0), truth, k, np.flatnonzero(unlabelled)),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(harness.DATASETS), default="20ng")
    parser.add_argument("--quick", action="store_true", help="the harness' reduced subsets")
    parser.add_argument("--fractions", default="0.01,0.1", help="shares of labelled items (default 0.01,0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.dataset, args.quick, [float(f) for f in args.fractions.split(",")], args.seed)
    print(
        "| labels | labelled | propagated to every unlabelled item: accuracy | confidence bar (checked) "
        "| taken for training (at most half): items, accuracy | neighbour vote (baseline): coverage, accuracy "
        "| classifier accuracy | label space check (mAP without -> with) | neighbour purity without -> with |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for fraction, r in result.items():
        bar = "none (check failed)" if r["confidence_bar"] is None else f"{r['confidence_bar']:.3f}"
        taken = "-" if r["taken_accuracy"] is None else f"{r['taken_accuracy']:.3f}"
        print(
            f"| {fraction:.0%} | {r['labelled']:,} | {r['propagation_accuracy']:.3f} | {bar} | {r['taken']:,}, "
            f"{taken} | {r['vote_coverage']:.3f}, {r['vote_accuracy']:.3f} | {_num(r['classifier_accuracy'])} "
            f"({r['classifier'] or '-'}) "
            f"| {_check(r)} | {r['purity']:.3f} -> {_num(r['purity_with_classes'])} |"
        )
    if args.json:
        args.json.write_text(json.dumps({args.dataset: result}, indent=1))
    return result


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _check(r: dict) -> str:
    check = r["space_check"]
    if check is None:
        return "too few labels to check"
    return f"{check['without']:.3f} -> {check['with']:.3f} ({'used' if r['space_used'] else 'kept out'})"


if __name__ == "__main__":
    main()
