"""Which continuous query scores make the best asymmetric rescoring of a dense model's codes (issue 21): the Hamming
top 100 of each query rescored without stored vectors, by ways of scoring the query against a candidate's bits.

- ``clipped logit``: what the service does (models.rerank.query_scores): the logit of each bit's probability,
  clipped at 1e-6;
- ``raw logit`` and ``standardised logit``: the encoder's logits unclipped, and divided by each bit's spread;
- ``linear decoder``: a least-squares map from the +-1 bits (and a constant) back to the vectors, fitted on the
  database: the score is the query's dot product with the candidate's linear reconstruction, which is again a
  per-bit score (query @ map); ``normalised``: the cosine with that reconstruction instead (needs its norm);
- ``model decoder``: cosine with the model's own decoder output for the candidate's code.

The model is trained with ``hamdex train db.npy --bits B`` (the dense preset) on the embeddings benchmark's
database, or loaded with ``--model``.

    python -m benchmarks.asym_scores --corpus 20ng --bits 64
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks import embedding_data
from benchmarks.embeddings import CANDIDATES, K, exact_top, hamming_top, recall, rescored


def scores_table(hasher, db: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """recall@10 of the plain Hamming top 10 and of each rescoring of the top 100."""
    from hamdex.models.bits import unpack
    from hamdex.models.ensemble import parts
    from hamdex.models.generate import generate, to_inputs
    from hamdex.models.hasher import to_tensor
    from hamdex.models.rerank import query_scores

    truth = exact_top(queries, db, K)
    db_out, q_out = hasher.encode(db), hasher.encode(queries, latent=True)
    db_bits, q_bits = unpack(db_out.codes).astype(bool), unpack(q_out.codes).astype(bool)
    with torch.no_grad():
        x = to_tensor(hasher.features(queries), "cpu")
        logits = torch.cat([part.logits(x).float() for part in parts(hasher.model)], 1).numpy()  # (q, bits)
    top = hamming_top(q_bits, db_bits, CANDIDATES)  # (q, N)
    signs = np.where(db_bits, 1.0, -1.0)  # (n, bits)

    def per_bit(s: np.ndarray) -> float:
        return recall(rescored(top, np.einsum("qb,qnb->qn", s, signs[top]), K), truth)

    def cosine_with(v: np.ndarray) -> float:
        v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)
        return recall(rescored(top, np.einsum("qd,qnd->qn", queries, v[top]), K), truth)

    with_one = np.hstack([signs, np.ones((len(signs), 1))])  # (n, bits + 1)
    linear, *_ = np.linalg.lstsq(with_one, db.astype(np.float64), rcond=None)  # (bits + 1, d)
    decoded = np.asarray(to_inputs(hasher.featurizer, generate(hasher, db_out.codes).outputs), np.float64)
    return {
        "plain Hamming": recall(top[:, :K], truth),
        "clipped logit (the service's)": per_bit(query_scores(hasher, q_out.latent)),
        "raw logit": per_bit(logits),
        "standardised logit": per_bit(logits / logits.std(axis=0, keepdims=True)),
        "linear decoder": per_bit(queries @ linear[:-1].T),
        "linear decoder, normalised": cosine_with(with_one @ linear),
        "model decoder": cosine_with(decoded.reshape(len(db), -1)),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="20ng", choices=sorted(embedding_data.CORPORA))
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--model", type=Path, help="a trained model folder (default: train one with the defaults)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    from hamdex.models import checkpoint
    from hamdex.service import cli

    args = parse_args(argv)
    _, db, queries = embedding_data.cached(args.corpus)
    with tempfile.TemporaryDirectory(prefix="hamdex-asym-") as tmp:
        model = args.model
        if model is None:
            np.save(Path(tmp) / "db.npy", db)
            model = Path(tmp) / "model"
            cli.train(str(Path(tmp) / "db.npy"), out=model, bits=args.bits, device="cpu")
        table = scores_table(checkpoint.load(model, "cpu"), db, queries)
    plain = table["plain Hamming"]
    print(f"\n{args.corpus}, {args.bits} bits, {len(queries)} queries: recall@10 of the float top 10\n")
    print("| scoring | recall@10 | gain over plain |\n|---|---|---|")
    for name, value in table.items():
        print(f"| {name} | {value:.3f} | {value - plain:+.3f} |")
    return table


if __name__ == "__main__":
    main()
