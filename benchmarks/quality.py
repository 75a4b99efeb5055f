"""Retrieval quality on 20 Newsgroups: hamdex model variants beside LSH and ITQ, all in one run.

Protocol (../shared/notes/benchmarks.md): TF-IDF over 10k words; the train split is the database and the training
set, test posts are the queries, relevant = same newsgroup. Prints a markdown table; ``--json FILE`` writes
``{"20ng": {bits: {method: {metric: value}}}}``.

    python benchmarks/quality.py                      # 32 bits, all 7,532 queries, ~5 minutes on 2 cores
    python benchmarks/quality.py --bits 16,32 --quick # 1,000 queries, fewer epochs
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from models import data
from models.presets import preset
from models.train import TrainConfig, fit_hasher
from service.evaluate import evaluate_hasher

# Variants of the default text model (models/presets.py): changes to its (model, training) settings.
VARIANTS = {
    "hamdex": ({}, {}),  # the default: NASH-style Bernoulli bits + neighbour targets
    "hamdex_plain": ({}, {"neighbours": 0}),  # the same without neighbour targets
    "hamdex_sign": ({"bottleneck": "sign"}, {}),
}
METRICS = ("p@k", "p@k_tie_aware", "map", "p_r2", "seconds")


def run(bits: list[int], variants: list[str], n_queries: int | None, epochs: int | None) -> dict:
    db, queries = data.load_demo_corpus("train"), data.load_demo_corpus("test")
    if n_queries:
        pick = np.random.default_rng(0).choice(len(queries.ids), n_queries, replace=False)  # all groups
        queries = data.Block(
            [queries.ids[i] for i in pick],
            [queries.inputs[i] for i in pick],
            [queries.labels[i] for i in pick],
            [queries.metadata[i] for i in pick],
            queries.kind,
        )
    results: dict = {}
    for n_bits in bits:
        for i, name in enumerate(variants):
            model_over, train_over = preset("text")
            model_over.update(VARIANTS[name][0], n_bits=n_bits)
            train_over.update(VARIANTS[name][1], **({"epochs": epochs} if epochs else {}))
            t0 = time.perf_counter()
            hasher, _ = fit_hasher(db.inputs, "text", model_over, TrainConfig(progress=False, **train_over))
            train_seconds = time.perf_counter() - t0
            rows = evaluate_hasher(hasher, db, queries, k=100, baselines=["lsh", "itq"] if i == 0 else [])
            rows[name] = {**rows.pop("hamdex"), "train_seconds": train_seconds}
            results.setdefault(n_bits, {}).update(rows)
    return results


def table(results: dict) -> str:
    lines = ["| bits | method | P@100 | P@100 tie-aware | mAP | P(r<=2) | train s |", "|---|---|---|---|---|---|---|"]
    for n_bits, rows in results.items():
        for name, m in rows.items():
            lines.append(
                f"| {n_bits} | {name} | {m['p@k']:.4f} | {m['p@k_tie_aware']:.4f} | {m['map']:.4f} | "
                f"{m['p_r2']:.4f} | {m.get('train_seconds', 0):.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", default="32", help="comma-separated code lengths")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--quick", action="store_true", help="1,000 queries and 10 epochs")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bits = [int(b) for b in args.bits.split(",")]
    results = run(bits, args.variants.split(","), 1000 if args.quick else None, 10 if args.quick else None)
    print(table(results))
    if args.json:
        renamed = {
            b: {
                m: {
                    ("p@100" if k == "p@k" else "p@100_tie_aware" if k == "p@k_tie_aware" else k): v
                    for k, v in row.items()
                }
                for m, row in rows.items()
            }
            for b, rows in results.items()
        }
        args.json.write_text(json.dumps({"20ng": renamed}, indent=2))


if __name__ == "__main__":
    main()
