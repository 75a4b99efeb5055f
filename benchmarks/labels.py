"""Training with labels (issue 20, part 3): the preset model trained with 0% (the unsupervised default), 1%, 10% and
100% of the training labels, scored by P@100 and mAP on the protocols of ``benchmarks/quality.py``.

The labels kept are a seeded random share of the training items (``models.train.encode_labels``, as ``hamdex train
--label-fraction``); the rest train unlabelled. Queries are encoded without labels, as at search time.

    python benchmarks/labels.py --dataset 20ng --fractions 0,0.1 --json var/labels.json --threads 1
    python benchmarks/labels.py --quick                # CI-sized: subsets, 10 epochs

Prints a markdown table; ``--json FILE`` writes ``{dataset: {bits: {fraction: {metric: value}}}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from hamdex.evaluation import harness
from hamdex.models.presets import preset
from hamdex.models.train import TrainConfig, encode_labels, fit_hasher

LOG = logging.getLogger("labels")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=[*harness.DATASETS, "all"], default="all", help="default: all")
    parser.add_argument("--bits", type=int, default=32, help="code length (default 32)")
    parser.add_argument(
        "--fractions",
        type=lambda text: [float(f) for f in text.split(",") if f.strip()],
        default=[0.0, 0.01, 0.1, 1.0],
        help="shares of labelled training items, 0 = the unsupervised default (default 0,0.01,0.1,1)",
    )
    parser.add_argument("--label-weight", type=float, default=1.0, help="TrainConfig.label_weight (default 1.0)")
    parser.add_argument(
        "--label-batch", type=int, default=128, help="TrainConfig.label_batch: labelled items a step (default 128)"
    )
    parser.add_argument(
        "--label-propagation", type=float, default=0.0, help="TrainConfig.label_propagation (default 0: off)"
    )
    parser.add_argument(
        "--model",
        type=json.loads,
        default={},
        help="ModelConfig overrides on top of the preset, as JSON (e.g. '{\"readout_from\": 64}')",
    )
    parser.add_argument(
        "--train",
        type=json.loads,
        default={},
        help="TrainConfig overrides on top of the preset, as JSON (e.g. '{\"label_space\": 1.0}')",
    )
    parser.add_argument(
        "--fisher-readout", action="store_true", help="TrainConfig.fisher_readout: bits along the classes"
    )
    parser.add_argument("--quick", action="store_true", help="reduced run: subsets, 10 epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here (rewritten after every cell)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 trains faster on a busy machine)")
    return parser.parse_args(argv)


def train_cell(
    dataset: harness.Dataset,
    split: harness.Split,
    scale: harness.Scale,
    n_bits: int,
    fraction: float,
    seed: int,
    label_weight: float = 1.0,
    label_propagation: float = 0.0,
    label_batch: int = 128,
    model: dict | None = None,
    fisher_readout: bool = False,
    train: dict | None = None,
):
    """The preset trained with this share of the labels (the rest unlabelled): the hasher and its training seconds."""
    model_over, train_over = preset(dataset.featurizer, n_bits, n_items=len(split.db_labels))
    model_over.update(n_bits=n_bits, **(model or {}))
    train_over.update(scale.train_overrides())
    train_over.update(train or {})
    if scale.epochs is not None:
        train_over["min_steps"] = 0
    labels = None
    if fraction > 0:
        codes, names = encode_labels(list(split.db_labels), fraction, seed)
        labels = [names[c] if c >= 0 else None for c in codes]
    cfg = TrainConfig(
        progress=False,
        seed=seed,
        safeguard=True,
        label_weight=label_weight,
        label_propagation=label_propagation,
        label_batch=label_batch,
        fisher_readout=fisher_readout,
        **train_over,
    )
    start = time.perf_counter()
    hasher, _ = fit_hasher(split.db_inputs, dataset.featurizer, model_over, cfg, labels=labels)
    return hasher, time.perf_counter() - start


def run_cell(
    dataset: harness.Dataset,
    split: harness.Split,
    scale: harness.Scale,
    n_bits: int,
    fraction: float,
    seed: int,
    *options,
):
    """Train the preset with this share of the labels (:func:`train_cell`, ``options`` after ``seed``) and score
    it; returns {metric: value}."""
    hasher, seconds = train_cell(dataset, split, scale, n_bits, fraction, seed, *options)
    q = hasher.encode_features(hasher.features(split.q_inputs)).codes
    db = hasher.encode_features(hasher.features(split.db_inputs)).codes
    scores = harness.code_metrics(q, db, split.q_labels, split.db_labels, dataset.extra_ks)
    report = hasher.info["report"]
    return {
        **scores,
        "train_seconds": round(seconds, 1),
        "labelled": report.get("labels", {}).get("labelled", 0),
        "propagated": report.get("labels", {}).get("propagated", 0),
        "signal": report["validation"]["signal"],
        "safeguard": report["safeguard"]["action"],
    }


def format_table(results: dict) -> str:
    lines = ["| dataset | bits | labels | P@100 | mAP | labelled items | safeguard | train s |", "|---" * 8 + "|"]
    for name, by_bits in results.items():
        for bits, cells in by_bits.items():
            for fraction, m in cells.items():
                lines.append(
                    f"| {name} | {bits} | {float(fraction):.0%} | {m['p@100']:.4f} | {m['map']:.4f} | "
                    f"{m['labelled']:,} | {m['safeguard']} | {m['train_seconds']:.0f} |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamdex.evaluation.metrics").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(harness.DATASETS) if args.dataset == "all" else [args.dataset]
    results: dict = {}
    for name in names:
        dataset = harness.DATASETS[name]
        scale = dataset.quick if args.quick else dataset.full
        split = dataset.load(scale, args.seed)
        for fraction in args.fractions:
            cell = run_cell(
                dataset,
                split,
                scale,
                args.bits,
                fraction,
                args.seed,
                args.label_weight,
                args.label_propagation,
                args.label_batch,
                args.model,
                args.fisher_readout,
                args.train,
            )
            results.setdefault(name, {}).setdefault(args.bits, {})[str(fraction)] = cell
            LOG.info("%s %d bits, %s labelled: %s", name, args.bits, fraction, cell)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
