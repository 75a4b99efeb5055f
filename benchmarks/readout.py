"""The itq read-out against the threshold read-out, on the same trained weights.

``ModelConfig.readout`` (``models/readout.py``) decides how a trained encoder's scores become bits; it takes no
part in training, so one model trained with ``readout="itq"`` gives both code sets: its own (a rotation of the
soft-clipped, centred scores fitted on the training set) and the bottleneck's thresholds (logit > 0). This script
trains the data type's preset at each width on the quality benchmark's full protocol (``evaluation/harness.py``)
and prints both rows side by side with the ratio, so a preset's read-out can be chosen from one run.
About 4 minutes per width for 20 Newsgroups and 5 for Fashion-MNIST on one core.

    .venv/bin/python benchmarks/readout.py --dataset 20ng --bits 32,64 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamdex.evaluation.harness import DATASETS, code_metrics  # noqa: E402
from hamdex.models.bits import pack  # noqa: E402
from hamdex.models.ensemble import parts  # noqa: E402
from hamdex.models.hasher import Hasher, to_tensor  # noqa: E402
from hamdex.models.presets import preset  # noqa: E402
from hamdex.models.train import TrainConfig, fit_hasher  # noqa: E402

SHOWN = (("p@100", "P@100"), ("map", "mAP"), ("bit_balance", "bit balance"), ("distinct_code_fraction", "distinct"))


@torch.no_grad()
def threshold_codes(hasher: Hasher, feats, batch_size: int = 2048) -> np.ndarray:
    """Packed codes from each member's own bottleneck rule, ignoring the model's read-out."""
    blocks = []
    for start in range(0, feats.shape[0], batch_size):
        x = to_tensor(feats[start : start + batch_size], hasher.device, sparse=True)
        bits = [p.bottleneck.binarize(p.logits(x).float()) for p in parts(hasher.model)]
        blocks.append(torch.cat(bits, dim=1).cpu().numpy())
    return pack(np.concatenate(blocks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist")
    parser.add_argument("--bits", default="32", help="comma-separated code lengths")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="write {bits: {readout: {metric: value}}} here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = DATASETS[args.dataset]
    split = dataset.load(dataset.full, args.seed)
    results: dict[int, dict[str, dict[str, float]]] = {}
    header = " | ".join(name for _, name in SHOWN)
    print(f"\n| bits | read-out | {header} |\n|---|---|" + "---|" * len(SHOWN))
    for n_bits in (int(b) for b in args.bits.split(",")):
        model_over, train_over = preset(dataset.featurizer, n_bits)
        model_over.update(n_bits=n_bits, readout="itq")
        start = time.perf_counter()
        cfg = TrainConfig(progress=False, seed=args.seed, **train_over)
        hasher, _ = fit_hasher(split.db_inputs, dataset.featurizer, model_over, cfg)
        seconds = time.perf_counter() - start
        fq, fdb = hasher.features(split.q_inputs), hasher.features(split.db_inputs)
        codes = {
            "threshold": (threshold_codes(hasher, fq), threshold_codes(hasher, fdb)),
            "itq": (hasher.encode_features(fq).codes, hasher.encode_features(fdb).codes),
        }
        results[n_bits] = {
            name: {**code_metrics(q, db, split.q_labels, split.db_labels), "train_seconds": seconds}
            for name, (q, db) in codes.items()
        }
        for name, row in results[n_bits].items():
            print(f"| {n_bits} | {name} | " + " | ".join(f"{row[k]:.3f}" for k, _ in SHOWN) + " |")
        base, new = results[n_bits]["threshold"], results[n_bits]["itq"]
        ratios = " | ".join(f"{new[k] / base[k]:.2f}" if base[k] else "-" for k, _ in SHOWN)
        print(f"| {n_bits} | itq / threshold | {ratios} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
