"""How far label-free similarity goes on a robustness cell (issue 18): label mAP and P@100 of exact cosine on the
text featurizer's TF-IDF and on its LSA (truncated SVD) at a few dimensions, beside ITQ's codes on the same
features, and the mAP the issue's goal asks of hamdex (1.1 x ITQ's).

Where ITQ's codes already match the best float similarity by labels, codes that reach the goal would have to
order items by the labels better than any of these label-free similarities do. Same data, featurizer and queries
as ``benchmarks/robustness.py`` (its ITQ rows match the matrix's on Reuters-8, TREC and WebKB); seconds per cell.

    python -m benchmarks.label_ceiling --cells r8,trec,webkb [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.robustness import DATASETS, MAP_GOAL, WIDTHS

LSA_DIMS = (32, 64, 128)
BLOCK = 256


def float_scores(q, db, q_labels: np.ndarray, db_labels: np.ndarray, k: int = 100) -> dict[str, float]:
    """Label mAP (the whole ranking) and P@k of exact cosine, queries in blocks."""
    from sklearn.preprocessing import normalize

    q, db = normalize(q), normalize(db)
    aps, precisions = [], []
    for start in range(0, q.shape[0], BLOCK):
        sims = db @ q[start : start + BLOCK].T
        sims = np.asarray(sims.toarray() if hasattr(sims, "toarray") else sims).T  # (b, n)
        order = np.argsort(-sims, axis=1, kind="stable")
        relevant = db_labels[order] == q_labels[start : start + BLOCK, None]
        hits = np.cumsum(relevant, axis=1)
        precision = hits / np.arange(1, relevant.shape[1] + 1)
        aps.append((precision * relevant).sum(axis=1) / np.maximum(relevant.sum(axis=1), 1))
        precisions.append(relevant[:, :k].mean(axis=1))
    return {"map": float(np.concatenate(aps).mean()), "p@100": float(np.concatenate(precisions).mean())}


def run_cell(cell: str) -> dict[str, dict[str, float]]:
    from hamdex.evaluation.harness import baseline_codes, code_metrics
    from hamdex.models.featurizers import make_featurizer
    from sklearn.decomposition import TruncatedSVD

    split = DATASETS[cell]()
    if split.train.kind != "text":
        raise SystemExit(f"cell {cell!r} is not text: this benchmark compares text similarities")
    featurizer = make_featurizer("text").fit(split.train.inputs)
    db, q = featurizer.transform(split.train.inputs), featurizer.transform(split.queries.inputs)
    db_labels, q_labels = np.asarray(split.train.labels), np.asarray(split.queries.labels)
    out = {"tfidf cosine": float_scores(q, db, q_labels, db_labels)}
    for dims in LSA_DIMS:
        svd = TruncatedSVD(dims, random_state=0).fit(db)
        out[f"lsa{dims} cosine"] = float_scores(svd.transform(q), svd.transform(db), q_labels, db_labels)
    for bits in WIDTHS:
        codes = baseline_codes("itq", bits, q, db)
        metrics = code_metrics(codes.q, codes.db, q_labels, db_labels, k=100)
        out[f"itq {bits}"] = {"map": float(metrics["map"]), "p@100": float(metrics["p@100"])}
        out[f"goal {bits}"] = {"map": MAP_GOAL * out[f"itq {bits}"]["map"]}
    return out


def format_markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    rows = list(next(iter(results.values())))
    lines = ["| similarity | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for row in rows:
        cells = []
        for cell in results.values():
            m = cell[row]
            cells.append(f"{m['map']:.3f}" + (f" / {m['p@100']:.3f}" if "p@100" in m else ""))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "label mAP / P@100 (goal rows: 1.1 x ITQ's mAP)\n\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="r8,trec,webkb", help="comma-separated text cells of benchmarks/robustness")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {cell: run_cell(cell) for cell in args.cells.split(",")}
    report.publish(results, format_markdown(results), args.json, None)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
