"""Where text neighbours are found, and what it does to the trained model (issue 18, docs/robustness.md).

``purity``: for each corpus, the share of an item's 10 training neighbours that have its label, with neighbours
by cosine in the preset's BM25 space (models.neighbours.text_neighbour_space), in 50 LSA dimensions of the
model's TF-IDF input, and in the two side by side at LSA weights 0.5 and 1 (models.neighbours.with_lsa). Seconds.

``train``: the text preset at one width, as ``hamdex train`` resolves it, with the safeguard off (the model alone),
under each setting named by ``--settings``; label P@100 and mAP of the test queries against the training set,
for the model's own read-out and for the other one on the same weights (models.safeguard.with_readout), with ITQ
on the same features from the same run beside them. Minutes per setting and corpus.

    python -m benchmarks.text_neighbours purity --corpora r8,trec,webkb,20ng-full
    python -m benchmarks.text_neighbours train --corpora webkb --bits 32 --settings before,now --threads 1

Corpora are benchmarks.robustness's data sets (r8, trec, webkb, 20ng-1k, 20ng-3k, 20ng-full).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.robustness import DATASETS

LSA_DIMS = 50
# settings of ``train``: TrainConfig / ModelConfig overrides on top of the preset
SETTINGS: dict[str, dict[str, Any]] = {
    "before": {"train": {"lsa_neighbours": 0}, "model": {"readout": "threshold"}},  # the preset before 2026-12-07
    "lsa1": {"train": {"lsa_weight": 1.0}, "model": {"readout": "threshold"}},
    "lsa05": {"train": {"lsa_weight": 0.5}, "model": {"readout": "threshold"}},
    "now": {"train": {}, "model": {}},  # the preset as it is
}


def _labels(block) -> np.ndarray:
    return np.asarray(block.labels)


def purity(corpus: str, k: int = 10) -> dict[str, float]:
    from hamdex.models.featurizers import TextFeaturizer
    from hamdex.models.neighbours import nearest_neighbours, text_neighbour_space, with_lsa
    from sklearn.decomposition import TruncatedSVD

    split = DATASETS[corpus]()
    texts, labels = list(split.train.inputs), _labels(split.train)
    x = TextFeaturizer().fit(texts).transform(texts)
    bm25 = text_neighbour_space(texts, subject_weight=0.5)
    lsa = TruncatedSVD(min(LSA_DIMS, x.shape[0] - 1, x.shape[1] - 1), random_state=0).fit_transform(x)

    def share(space) -> float:
        nb = nearest_neighbours(space, k)
        return round(float((labels[nb] == labels[:, None]).mean()), 3)

    return {
        "input_tfidf": share(x),
        "bm25": share(bm25),
        f"lsa{LSA_DIMS}": share(lsa),
        "bm25+lsa_0.5": share(with_lsa(bm25, x, LSA_DIMS, weight=0.5)),
        "bm25+lsa_1": share(with_lsa(bm25, x, LSA_DIMS, weight=1.0)),
    }


def train_one(corpus: str, bits: int, setting: str, seed: int = 0) -> dict[str, Any]:
    import torch
    from hamdex.evaluation.baselines import make_baseline
    from hamdex.evaluation.metrics import mean_average_precision, precision_at_k
    from hamdex.models import presets
    from hamdex.models.hasher import Hasher
    from hamdex.models.safeguard import with_readout
    from hamdex.models.train import TrainConfig, fit_hasher

    chosen = SETTINGS[setting]
    split = DATASETS[corpus]()
    db, queries = list(split.train.inputs), list(split.queries.inputs)
    db_labels, q_labels = _labels(split.train), _labels(split.queries)
    # one model of the code's width, read out both ways (a narrow code read out of wider scores has no threshold twin)
    model_given = {"n_bits": bits, "readout_from": 0, **chosen["model"]}
    model_over, train_over = presets.resolve("text", len(db), model_given, chosen["train"])
    start = time.perf_counter()
    cfg = TrainConfig(seed=seed, device="cpu", safeguard=False, progress=False, **train_over)
    hasher, result = fit_hasher(db, "text", model_over, cfg)
    seconds = time.perf_counter() - start

    k = min(100, len(db))

    def scores(q: np.ndarray, d: np.ndarray) -> dict[str, float]:  # packed codes of the queries and the database
        return {
            "p@100": precision_at_k(q, d, q_labels, db_labels, k=k),
            "map": mean_average_precision(q, d, q_labels, db_labels),
        }

    def model_scores(h: Hasher) -> dict[str, float]:
        return scores(h.encode(queries).codes, h.encode(db).codes)

    x, cpu = hasher.featurizer.transform(db), torch.device("cpu")
    own = hasher.model.config.readout
    other = "itq" if own != "itq" else "threshold"
    swapped = Hasher(with_readout(hasher.model, other, x, cpu, seed), hasher.featurizer, "-", cpu, {})
    itq = make_baseline("itq", bits).fit(x)
    return {
        own: model_scores(hasher),
        other: model_scores(swapped),
        "itq_baseline": scores(itq.encode(hasher.featurizer.transform(queries)), itq.encode(x)),
        "steps": result.steps,
        "train_seconds": round(seconds, 1),
    }


def _ratio(scores: dict[str, float], base: dict[str, float]) -> str:
    return f"{scores['map'] / base['map']:.2f} x ({scores['p@100']:.3f})"


def _table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| corpus-bits | setting | threshold mAP / ITQ (P@100) | itq read-out mAP / ITQ (P@100) | ITQ P@100 / mAP |",
        "|---|---|---|---|---|",
    ]
    for key, row in results.items():
        cell, setting = key.rsplit(":", 1)
        base = row["itq_baseline"]
        thr, itq = (_ratio(row[name], base) for name in ("threshold", "itq"))
        lines.append(f"| {cell} | {setting} | {thr} | {itq} | {base['p@100']:.3f} / {base['map']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("purity", "train"))
    p.add_argument("--corpora", default="r8,trec,webkb")
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--settings", default="before,now", help=f"of {', '.join(SETTINGS)}")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    corpora = [c for c in args.corpora.split(",") if c]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.mode == "purity":
        out = {c: purity(c) for c in corpora}
        print(json.dumps(out, indent=2))
    else:
        out = {}
        for corpus in corpora:
            for setting in args.settings.split(","):
                out[f"{corpus}-{args.bits}:{setting}"] = train_one(corpus, args.bits, setting)
                print(json.dumps({f"{corpus}-{args.bits}:{setting}": out[f"{corpus}-{args.bits}:{setting}"]}))
        print(_table(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
