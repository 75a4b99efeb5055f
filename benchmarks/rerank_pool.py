"""Two- and three-stage ranking through a real collection (issue 21): recall@10 against exact float cosine and
milliseconds per query of a plain search, ``rerank`` by stored vectors, ``rerank`` with a ``pool`` ordered by the
asymmetric score first, and the asymmetric rescoring alone, all on one collection in one run.

The corpora and the cached MiniLM embeddings are ``benchmarks/embeddings.py``'s (database: the training rows,
queries: 500 test rows). The model is trained with ``hamdex train``'s defaults on the database rows, or loaded with
``--model DIR``. The collection (``index.Collection``, flat index, float16 vectors) holds the database; each query
goes through ``Collection.search`` exactly as the service calls it (docs/rerank.md), one query per call.

    python -m benchmarks.rerank_pool --corpus 20ng --bits 128 [--model DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import embedding_data, report
from benchmarks.embeddings import K, exact_top, recall

CANDIDATES, POOL = 100, 1000


def configurations() -> dict[str, dict]:
    """Search arguments per row; ``vectors`` / ``scores`` say which query arrays the row passes."""
    return {
        "plain Hamming": {},
        "asymmetric, 1,000 candidates": {"rerank": POOL, "scores": True},
        f"rerank {CANDIDATES} (baseline)": {"rerank": CANDIDATES, "vectors": True},
        f"rerank {CANDIDATES}, pool {POOL}": {"rerank": CANDIDATES, "pool": POOL, "vectors": True, "scores": True},
        f"rerank {POOL}": {"rerank": POOL, "vectors": True},
    }


def measure(coll, q_codes: np.ndarray, q_vectors: np.ndarray, q_scores: np.ndarray, truth: np.ndarray, ids) -> dict:
    """Each configuration's recall@10 and ms per query (one query per search call, as a client sends them)."""
    row_of = {item_id: i for i, item_id in enumerate(ids)}
    out = {}
    for name, conf in configurations().items():
        args = {k: v for k, v in conf.items() if k in ("rerank", "pool")}
        found = np.zeros((len(q_codes), K), np.int64)
        start = time.perf_counter()
        for i in range(len(q_codes)):
            extra = {}
            if conf.get("vectors"):
                extra["query_vectors"] = q_vectors[i : i + 1]
            if conf.get("scores"):
                extra["query_scores"] = q_scores[i : i + 1]
            hits = coll.search(q_codes[i : i + 1], K, include_metadata=False, **args, **extra)[0]
            found[i, : len(hits)] = [row_of[h.id] for h in hits]
        seconds = time.perf_counter() - start
        out[name] = {"recall@10": recall(found, truth), "ms_per_query": 1000 * seconds / len(q_codes)}
    return out


def run(corpus_name: str, bits: int, model: Path | None) -> dict:
    from hamdex.index import Collection
    from hamdex.models import checkpoint
    from hamdex.models.rerank import query_scores, rerank_vectors
    from hamdex.service import cli

    _, db, queries = embedding_data.cached(corpus_name)
    truth = exact_top(queries, db, K)
    with tempfile.TemporaryDirectory(prefix="hamdex-pool-") as tmp:
        if model is None:
            np.save(Path(tmp) / "db.npy", db)
            model = Path(tmp) / "model"
            cli.train(str(Path(tmp) / "db.npy"), out=model, bits=bits, device="cpu")
        hasher = checkpoint.load(model, "cpu")
        if hasher.n_bits != bits:
            raise SystemExit(f"--model has {hasher.n_bits} bits, not --bits {bits}")
        features = hasher.features(db)
        ids = [f"d{i}" for i in range(len(db))]
        q_out = hasher.encode(queries, latent=True)
        with Collection.create(Path(tmp) / "coll", bits, hasher.fingerprint, vectors="float16") as coll:
            coll.upsert(
                ids, hasher.encode_features(features).codes, vectors=rerank_vectors(hasher.featurizer, features)
            )
            q_vectors = rerank_vectors(hasher.featurizer, hasher.features(queries))
            rows = measure(coll, q_out.codes, q_vectors, query_scores(hasher, q_out.latent), truth, ids)
    return {"corpus": corpus_name, "bits": bits, "database": len(db), "queries": len(queries), "rows": rows}


def format_markdown(result: dict) -> str:
    base = result["rows"][f"rerank {CANDIDATES} (baseline)"]["ms_per_query"]
    lines = [
        f"{result['corpus']}, {result['bits']} bits, {result['database']:,} items, {result['queries']} queries",
        "",
        "| search | recall@10 | ms / query | time / rerank 100 |",
        "|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        lines.append(
            f"| {name} | {row['recall@10']:.3f} | {row['ms_per_query']:.2f} | {row['ms_per_query'] / base:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="20ng", choices=sorted(embedding_data.CORPORA))
    parser.add_argument("--bits", type=int, default=128)
    parser.add_argument("--model", type=Path, help="a trained model directory (default: train one here)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.corpus, args.bits, args.model)
    report.publish(result, format_markdown(result), args.json, None)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
