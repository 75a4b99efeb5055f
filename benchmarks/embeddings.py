"""Binary codes for neural sentence embeddings: hamdex's learned codes against the vector databases' sign binary
quantization (BQ), ITQ and centred LSH, each plain, with asymmetric rescoring and with a float rerank (issue 21).

Corpora (``benchmarks/embedding_data.py``, embedded once with all-MiniLM-L6-v2 and cached under ``var/``): 20
Newsgroups (4,000 training posts as the database, 500 test posts as queries) and the robustness sets R8, TREC and
WebKB (train split as the database, 500 test items as queries).

Per method and width:
- ``recall@10``: the share of each query's exact float-cosine top 10 (over the database embeddings) found in the
  Hamming top 10, ties broken by row as the service does;
- ``recall@10_asym``: the Hamming top 100 rescored by the query's continuous scores against the stored bits
  (sum over bits of score x (+1 / -1)): no extra memory per item;
- ``recall@10_rerank100``: the Hamming top 100 rescored exactly by cosine with float16 copies of the vectors;
- ``recall@10_rerank200`` / ``500`` / ``1000``: the same float rerank of a longer Hamming shortlist, for the
  shortlist a target recall needs;
- ``recall@10_asym1000_rerank100``: three stages, still 100 float vectors read: the Hamming top 1,000 ordered by
  the asymmetric score, and its first 100 rescored by cosine;
- ``p@100``: label precision of the Hamming top 100 (float cosine's in ``float_cosine``).
hamdex trains with ``hamdex train``'s defaults on the database embeddings (``.npy`` rows: the dense featurizer);
``--featurizer-docs N`` times the sentence featurizer against sentence-transformers' own ``encode``; search QPS is
faiss' exact binary search over 1M random codes of each width.

    python -m benchmarks.embeddings --json var/embeddings.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from benchmarks import embedding_data

LOG = logging.getLogger(__name__)
K, CANDIDATES, LABEL_K = 10, 100, 100
MORE_CANDIDATES = (200, 500, 1000)  # also reported: how many candidates a float rerank needs for high recall
ASYM_POOL = 1000  # the Hamming shortlist the asymmetric score orders before a float rerank of CANDIDATES
WIDTHS = (32, 64, 128)
METHODS = ("hamdex", "sign_bq", "itq", "lsh_centered")


class Codes(NamedTuple):
    db: np.ndarray  # bool (n, bits)
    queries: np.ndarray  # bool (q, bits)
    query_scores: np.ndarray  # float32 (q, bits): continuous, > 0 where the bit is 1


def exact_top(queries: np.ndarray, db: np.ndarray, k: int) -> np.ndarray:
    """int (q, k): rows of ``db`` by descending cosine (unit rows: dot product)."""
    sim = queries @ db.T  # (q, n)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def hamming_top(q_bits: np.ndarray, db_bits: np.ndarray, k: int) -> np.ndarray:
    """int (q, k): rows of ``db`` by ascending Hamming distance, ties by row (as the service orders them)."""
    dist = (q_bits.astype(np.int32) @ (~db_bits).T.astype(np.int32)) + ((~q_bits).astype(np.int32) @ db_bits.T)
    return np.argsort(dist, axis=1, kind="stable")[:, :k]  # (q, k)


def rescored(candidates: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """int (q, k): ``candidates`` (q, N) reordered by descending ``scores`` (q, N), stable."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def label_precision(found: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray) -> float:
    return float(np.mean(db_labels[found] == q_labels[:, None]))


def score_codes(codes: Codes, db: np.ndarray, queries: np.ndarray, labels: tuple, truth: np.ndarray) -> dict:
    """The four metrics of one method at one width."""
    top = hamming_top(codes.queries, codes.db, max(CANDIDATES, LABEL_K, *MORE_CANDIDATES))
    cand = top[:, :CANDIDATES]
    # the asymmetric score s . (2b - 1) = 2 s . b - sum(s) orders items as s . b does: one (q, n) product
    asym_all = codes.query_scores @ codes.db.T.astype(np.float32)  # (q, n)
    asym = np.take_along_axis(asym_all, cand, axis=1)  # (q, N)
    db16 = db.astype(np.float16).astype(np.float32)
    cosine = np.einsum("qd,qnd->qn", queries, db16[cand])
    out = {
        "recall@10": recall(top[:, :K], truth),
        "recall@10_asym": recall(rescored(cand, asym, K), truth),
        "recall@10_rerank100": recall(rescored(cand, cosine, K), truth),
        "p@100": label_precision(top[:, :LABEL_K], *labels),
    }
    pool = top[:, :ASYM_POOL]
    shortlist = rescored(pool, np.take_along_axis(asym_all, pool, axis=1), CANDIDATES)
    cosine100 = np.einsum("qd,qnd->qn", queries, db16[shortlist])
    out["recall@10_asym1000_rerank100"] = recall(rescored(shortlist, cosine100, K), truth)
    for n in MORE_CANDIDATES:  # the float rerank of a longer Hamming shortlist
        more = top[:, :n]
        out[f"recall@10_rerank{n}"] = recall(rescored(more, np.einsum("qd,qnd->qn", queries, db16[more]), K), truth)
    return out


def baseline_codes(name: str, bits: int, db: np.ndarray, queries: np.ndarray) -> Codes:
    """Sign BQ (one bit per dimension, the query itself as its scores), ITQ or centred LSH fitted on ``db``."""
    if name == "sign_bq":
        return Codes(db > 0, queries > 0, queries.astype(np.float32))
    from hamdex.evaluation.baselines import make_baseline

    model = make_baseline(name, bits).fit(db)
    db_scores, q_scores = ((x - model.mean_) @ model.projection_ for x in (db, queries))  # (n, bits), (q, bits)
    return Codes(db_scores >= 0, q_scores >= 0, q_scores.astype(np.float32))


def hamdex_codes(
    bits: int, db: np.ndarray, queries: np.ndarray, folder: Path, overrides: dict | None = None
) -> tuple[Codes, dict]:
    """Train with ``hamdex train``'s defaults on the database rows (or the dense preset under ``overrides``:
    {"model": {...}, "train": {...}}, for variants); codes, scores and the training report."""
    from hamdex.models import checkpoint
    from hamdex.models.bits import unpack
    from hamdex.models.rerank import query_scores
    from hamdex.service import cli

    np.save(folder / "db.npy", db)
    start = time.perf_counter()
    if overrides:
        _train_variant(db, bits, overrides, folder / f"model-{bits}")
    else:
        cli.train(str(folder / "db.npy"), out=folder / f"model-{bits}", bits=bits, device="cpu")
    seconds = time.perf_counter() - start
    hasher = checkpoint.load(folder / f"model-{bits}", "cpu")
    db_out, q_out = hasher.encode(db), hasher.encode(queries, latent=True)
    db_bits, q_bits = unpack(db_out.codes).astype(bool), unpack(q_out.codes).astype(bool)
    report = hasher.info.get("report", {})
    info = {
        "train_seconds": seconds,
        "safeguard": report.get("safeguard", {}).get("action"),
        "steps": report.get("steps"),
    }
    return Codes(db_bits, q_bits, query_scores(hasher, q_out.latent)), info


def _train_variant(db: np.ndarray, bits: int, overrides: dict, out: Path) -> None:
    """What ``hamdex train`` does for these rows (the dense preset, the safeguard), with overrides on top."""
    from hamdex.models import checkpoint, presets
    from hamdex.models.train import TrainConfig, fit_hasher

    model_over, train_over = presets.resolve("dense", len(db), {"n_bits": bits, **overrides.get("model", {})}, {})
    train_over.update(overrides.get("train", {}))
    cfg = TrainConfig(**{"seed": 0, "device": "cpu", "safeguard": True, "progress": False, **train_over})  # seed too
    hasher, _ = fit_hasher(db, "dense", model_over, cfg)
    checkpoint.save(out, hasher)


def run_corpus(name: str, widths: Sequence[int], methods: Sequence[str], overrides: dict | None = None) -> dict:
    corpus, db, queries = embedding_data.cached(name)
    labels = (corpus.query_labels, corpus.db_labels)
    truth = exact_top(queries, db, K)
    out: dict = {"float_cosine": {"p@100": label_precision(exact_top(queries, db, LABEL_K), *labels)}}
    if "sign_bq" in methods:  # one bit per dimension: 384 for MiniLM
        codes = baseline_codes("sign_bq", db.shape[1], db, queries)
        out["sign_bq"] = {db.shape[1]: score_codes(codes, db, queries, labels, truth)}
    for method in (m for m in methods if m not in ("sign_bq",)):
        out[method] = {}
        for bits in widths:
            if method == "hamdex":
                with tempfile.TemporaryDirectory(prefix="hamdex-emb-") as tmp:
                    codes, info = hamdex_codes(bits, db, queries, Path(tmp), overrides)
            else:
                codes, info = baseline_codes(method, bits, db, queries), {}
            out[method][bits] = {**score_codes(codes, db, queries, labels, truth), **info}
            LOG.info("%s %s %d: %s", name, method, bits, out[method][bits])
    return out


def search_qps(widths: Sequence[int], n: int = 1_000_000, queries: int = 200) -> dict[int, float]:
    """Exact binary search queries/s (k=10, one batch) over ``n`` random codes of each width (faiss)."""
    import faiss

    rng = np.random.default_rng(0)
    out = {}
    for bits in sorted({*widths, 384}):  # and sign BQ of 384-d embeddings
        index = faiss.IndexBinaryFlat(bits)
        index.add(rng.integers(0, 256, (n, bits // 8), dtype=np.uint8))
        q = rng.integers(0, 256, (queries, bits // 8), dtype=np.uint8)
        start = time.perf_counter()
        index.search(q, K)
        out[bits] = queries / (time.perf_counter() - start)
    return out


def featurizer_speed(n_docs: int) -> dict[str, float]:
    """Docs/s of the sentence featurizer and of sentence-transformers' own encode on the same 20NG texts, same
    batch size, alternating twice so that neither gets the warm caches only."""
    from hamdex.models.featurizers import make_featurizer
    from sentence_transformers import SentenceTransformer

    texts = embedding_data.load_corpus("20ng").db_texts[:n_docs]
    st = SentenceTransformer(str(embedding_data.default_encoder_dir()), device="cpu")
    st.max_seq_length = embedding_data.MAX_TOKENS
    feat = make_featurizer("sentence").fit(texts[:64])
    best = {"featurizer_docs_per_s": 0.0, "sentence_transformers_docs_per_s": 0.0}
    for _ in range(2):
        for key, fn in (
            ("sentence_transformers_docs_per_s", lambda: st.encode(texts, batch_size=64, normalize_embeddings=True)),
            ("featurizer_docs_per_s", lambda: feat.transform(texts)),
        ):
            start = time.perf_counter()
            fn()
            best[key] = max(best[key], len(texts) / (time.perf_counter() - start))
    return best


def format_markdown(results: dict) -> str:
    lines = [
        "| corpus | method | bits | recall@10 | + asym | + rerank 100 | asym 1000 -> rerank 100 | + rerank 1000 "
        "| label P@100 | bytes/item |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for corpus in (c for c in results if c in embedding_data.CORPORA):
        r = results[corpus]
        lines.append(f"| {corpus} | float cosine | - | 1.000 | | | | | {r['float_cosine']['p@100']:.3f} | 1,536 |")
        for method in METHODS:
            for bits, m in r.get(method, {}).items():
                lines.append(
                    f"| {corpus} | {method} | {bits} | {m['recall@10']:.3f} | {m['recall@10_asym']:.3f} | "
                    f"{m['recall@10_rerank100']:.3f} | {m.get('recall@10_asym1000_rerank100', float('nan')):.3f} | "
                    f"{m.get('recall@10_rerank1000', float('nan')):.3f} | "
                    f"{m['p@100']:.3f} | {int(bits) // 8} |"
                )
    if "search_qps_1m" in results:
        lines.append("")
        lines.append(
            "search QPS over 1M codes: " + ", ".join(f"{b} bits {q:,.0f}" for b, q in results["search_qps_1m"].items())
        )
    if "featurizer_docs_per_s" in results:
        f, s = results["featurizer_docs_per_s"], results["sentence_transformers_docs_per_s"]
        lines.append(f"sentence featurizer {f:.1f} docs/s, sentence-transformers encode {s:.1f} docs/s ({f / s:.2f}x)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpora", default=",".join(embedding_data.CORPORA))
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--featurizer-docs", type=int, default=500, help="0 skips the featurizer timing")
    p.add_argument("--qps-items", type=int, default=1_000_000, help="0 skips the search QPS")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--overrides",
        type=json.loads,
        default=None,
        help='a variant of the dense preset for hamdex, as JSON: {"model": {...}, "train": {...}}',
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    methods = args.methods.split(",")
    results: dict = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    for corpus in args.corpora.split(","):
        results[corpus] = run_corpus(corpus, widths, methods, args.overrides)
        _write(results, args.json)
    if args.qps_items:
        results["search_qps_1m"] = search_qps(widths, args.qps_items)
    if args.featurizer_docs:
        results.update(featurizer_speed(args.featurizer_docs))
    _write(results, args.json)
    print(format_markdown(results))
    return results


def _write(results: dict, path: Path | None) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
