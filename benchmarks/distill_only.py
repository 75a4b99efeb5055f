"""How far similarity distillation alone takes binary codes on embeddings: an MLP encoder (no decoder, no
bottleneck prior) trained only to match each item's softmax of batch similarities by code cosine to the one by
input cosine (models.objectives.similarity_distillation), plus a small push of tanh outputs towards +-1. The
ceiling the dense preset's distillation term works towards (docs/embeddings.md); not a shipped model.

    python -m benchmarks.distill_only --corpus 20ng --bits 64
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
import torch

from benchmarks import embedding_data, embeddings


def train_encoder(db: np.ndarray, args: argparse.Namespace) -> torch.nn.Module:
    """An MLP 384 -> hidden -> bits on standardised inputs, trained by distillation alone."""
    torch.manual_seed(args.seed)
    x = torch.from_numpy(db)
    mu, sd = x.mean(0), x.std(0)
    if args.linear:  # a learned projection, as ITQ's but fitted by the distillation term
        net = torch.nn.Sequential(torch.nn.Linear(db.shape[1], args.bits))
    else:
        net = torch.nn.Sequential(
            torch.nn.Linear(db.shape[1], args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, args.bits)
        )
    if args.itq_init:  # ITQ's projection plus an MLP correction that starts at zero: training starts at ITQ's codes
        from hamdex.models.readout import fit_itq

        mean, proj = fit_itq(((x - mu) / sd).numpy().astype(np.float64), args.bits, args.seed)
        net = _Residual(db.shape[1], args.hidden, args.bits, mean, proj, args.itq_scale)
    nearest = None
    if args.neighbours:  # each batch item's partner: one of its exact top-k cosine neighbours in the database
        sim = db @ db.T
        np.fill_diagonal(sim, -np.inf)
        nearest = torch.from_numpy(np.argsort(-sim, axis=1)[:, : args.neighbours])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(args.steps):
        idx = torch.randint(0, len(x), (args.batch,))
        if nearest is not None:
            idx = torch.cat([idx, nearest[idx, torch.randint(0, args.neighbours, (args.batch,))]])
        z = torch.tanh(net((x[idx] - mu) / sd))  # (B, bits)
        loss = embeddings_loss(z, x[idx], args)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return torch.nn.Sequential(_Standardise(mu, sd), net)


def embeddings_loss(z: torch.Tensor, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    from hamdex.models.objectives import similarity_distillation

    quantisation = ((z.abs() - 1) ** 2).mean()
    return similarity_distillation(z, x, args.teacher_temperature, args.student_temperature) + 0.1 * quantisation


class _Residual(torch.nn.Module):
    def __init__(self, d, hidden, bits, mean, proj, scale) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(d, bits)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(proj.T * scale).float())
            self.linear.bias.copy_(torch.from_numpy(-(mean @ proj) * scale).float())
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, bits))
        torch.nn.init.zeros_(self.mlp[2].weight)
        torch.nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.mlp(x)


class _Standardise(torch.nn.Module):
    def __init__(self, mu: torch.Tensor, sd: torch.Tensor) -> None:
        super().__init__()
        self.mu, self.sd = mu, sd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) / self.sd


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="20ng", choices=embedding_data.CORPORA)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--teacher-temperature", type=float, default=0.05)
    p.add_argument("--student-temperature", type=float, default=0.1)
    p.add_argument("--linear", action="store_true", help="a linear encoder instead of the MLP")
    p.add_argument("--neighbours", type=int, default=0, help="> 0: batches hold a top-k neighbour of each item")
    p.add_argument("--itq-init", action="store_true", help="ITQ's projection plus a zero-initialised MLP")
    p.add_argument("--itq-scale", type=float, default=0.3, help="ITQ's projections times this as starting scores")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    corpus, db, q = embedding_data.cached(args.corpus)
    start = time.perf_counter()
    encoder = train_encoder(db, args)
    with torch.no_grad():
        zd, zq = encoder(torch.from_numpy(db)).numpy(), encoder(torch.from_numpy(q)).numpy()
    codes = embeddings.Codes(zd > 0, zq > 0, zq.astype(np.float32))
    labels = (corpus.query_labels, corpus.db_labels)
    row = embeddings.score_codes(codes, db, q, labels, embeddings.exact_top(q, db, embeddings.K))
    itq = embeddings.score_codes(
        embeddings.baseline_codes("itq", args.bits, db, q), db, q, labels, embeddings.exact_top(q, db, embeddings.K)
    )
    out = {"distill_only": row, "itq": itq, "seconds": time.perf_counter() - start, **vars(args)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
