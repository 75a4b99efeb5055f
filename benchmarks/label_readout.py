"""The read-out of a model trained with labels (issue 20, part 3): one model trained with a share of the labels
(``benchmarks/labels.py``'s protocol), its bits read out several ways from the same weights, scored by P@100 and mAP.

- ``plain itq``: PCA of the squashed scores to the code's width, then ITQ (``models.readout``, no labels);
- ``fisher <scaling> shrink <s>``: the scores projected on their Fisher discriminant directions fitted on the
  labelled training items (``models.readout.fisher_projection``), each scaled by the root of its variance ratio
  (``root``, what the read-out does with shrink 0.1), not at all (``whitened``) or by the ratio (``ratio``), then ITQ.

``--readout-from W`` trains the members at W bits (``ModelConfig.readout_from``) and projects to ``--bits``.

    python -m benchmarks.label_readout --dataset 20ng --fraction 0.1 --bits 32 --threads 1
    python -m benchmarks.label_readout --quick           # CI-sized: Fashion-MNIST subset, 10 epochs
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hamdex.evaluation import harness
from hamdex.models.bits import pack
from hamdex.models.hasher import to_tensor
from hamdex.models.readout import FISHER_SHRINK, fisher_projection, fit_itq, itq_rotation, squash
from hamdex.models.train import encode_labels

from benchmarks import labels as labels_bench

LOG = logging.getLogger("label_readout")
SHRINKS = (FISHER_SHRINK, 0.5, 1.0)
SCALINGS = {"root": 0.5, "whitened": 0.0, "ratio": 1.0}  # directions scaled by their variance ratio ** power


def squashed_scores(hasher, inputs, batch: int = 1024) -> np.ndarray:
    """float64 (n, score width): the squashed scores the read-out rotates."""
    x = hasher.features(inputs)
    with torch.no_grad():
        parts = [squash(hasher.model.scores(to_tensor(x[s : s + batch], "cpu"))) for s in range(0, x.shape[0], batch)]
    return torch.cat(parts).double().numpy()


def readouts(db: np.ndarray, labels: np.ndarray, bits: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (mean (d,), projection (d, bits))}: each way of reading out, fitted on the database's scores (the
    Fisher ones on its labelled items)."""
    out = {"plain itq": fit_itq(db, bits, seed)}  # PCA to the bits, then ITQ
    mean = db.mean(axis=0)
    for shrink in SHRINKS:
        for name, power in SCALINGS.items():
            p = fisher_projection(db, labels, bits, shrink, power)
            if p is not None:
                out[f"fisher {name} shrink {shrink}"] = (mean, p @ itq_rotation((db - mean) @ p, seed=seed)[0])
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(harness.DATASETS), default="20ng")
    p.add_argument("--fraction", type=float, default=0.1, help="share of labelled training items (default 0.1)")
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--readout-from", type=int, default=0, help="train the members this wide (default: the preset)")
    p.add_argument("--quick", action="store_true", help="CI-sized: Fashion-MNIST's subset, 10 epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.quick and "--dataset" not in (argv or []):
        args.dataset = "fashion-mnist"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamdex.evaluation.metrics").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = harness.DATASETS[args.dataset]
    scale = dataset.quick if args.quick else dataset.full
    split = dataset.load(scale, args.seed)
    model = {"readout_from": args.readout_from} if args.readout_from else None
    hasher, _ = labels_bench.train_cell(dataset, split, scale, args.bits, args.fraction, args.seed, model=model)
    labels = encode_labels(list(split.db_labels), args.fraction, args.seed)[0]  # the classes it trained with
    db, q = squashed_scores(hasher, split.db_inputs), squashed_scores(hasher, split.q_inputs)
    results = {}
    for name, (mean, p) in readouts(db, labels, args.bits, args.seed).items():
        m = harness.code_metrics(
            pack(q @ p - mean @ p > 0), pack(db @ p - mean @ p > 0), split.q_labels, split.db_labels
        )
        results[name] = {"p@100": m["p@100"], "map": m["map"], "distinct_code_fraction": m["distinct_code_fraction"]}
    print(f"\n{args.dataset}, {args.bits} bits, {args.fraction:.0%} of the labels, scores {db.shape[1]} wide\n")
    print("| read-out | P@100 | mAP | distinct codes |\n|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m['p@100']:.4f} | {m['map']:.4f} | {m['distinct_code_fraction']:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
