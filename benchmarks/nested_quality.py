"""Nested codes (issue 20, part 1): one nested model against dedicated models of each prefix width.

One data set of benchmarks/robustness.py (its loaders, queries and labels), or ``20ng``: every training post, and all
7,532 test posts as queries, as benchmarks/quality.py scores 20 Newsgroups; every model is trained as ``hamdex
train DATA --bits B`` would (the CLI's own command, everything else at its default): the nested model with
``--bits B --nested P1,P2,...``, and a dedicated model at each prefix width and at B. Scored by label P@100 and mAP
of the queries against the training set (the database), at each prefix of the nested model's codes:

- ``nested``: the nested model as shipped (its read-out: the preset's itq, fitted per group of bits, or what the
  safeguard chose);
- ``nested, threshold``: the same weights read out by threshold (models.safeguard.with_readout);
- ``dedicated``: the model trained at that width alone (the presets: 32-bit members above 32 bits);
- ``prefix of dedicated B``: the first p bits of the dedicated full-width model, a code that is not nested.

The goal: at every prefix, the nested model within 0.02 of the dedicated model's P@100 and mAP, and longer
prefixes never worse. Prints a markdown table; ``--json FILE`` writes ``{width: {row: {"p@100", "map"}}}`` and
what each training did.

    python -m benchmarks.nested_quality --data digits --threads 1
    python -m benchmarks.nested_quality --data fashion-5k --bits 64 --nested 16,32 --threads 1 --json var/n.json
    python -m benchmarks.nested_quality --data 20ng --nested-only --threads 1  # beside quality.py's 20NG rows
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")

from hamdex.evaluation.metrics import mean_average_precision, precision_at_k  # noqa: E402
from hamdex.models import checkpoint, data  # noqa: E402
from hamdex.models.safeguard import with_readout  # noqa: E402

from benchmarks import robustness  # noqa: E402

LOG = logging.getLogger("nested_quality")
GOAL = 0.02


def load_20ng_all_queries() -> robustness.Split:
    """20 Newsgroups on benchmarks/quality.py's protocol, so that a nested model sits beside its dedicated rows."""
    blocks = (data.load_20newsgroups(robustness.NEWSGROUPS_TAR, part) for part in ("train", "test"))
    return robustness.Split(*(robustness._texts(b, np.arange(len(b))) for b in blocks))


DATASETS = {**robustness.DATASETS, "20ng": load_20ng_all_queries}


def _scores(q_codes: np.ndarray, db_codes: np.ndarray, q_labels, db_labels, bits: int) -> dict[str, float]:
    q, db = q_codes[:, : bits // 8], db_codes[:, : bits // 8]
    return {
        "p@100": float(precision_at_k(q, db, q_labels, db_labels, k=100)),
        "map": float(mean_average_precision(q, db, q_labels, db_labels)),
    }


def _codes(hasher, split: robustness.Split) -> tuple[np.ndarray, np.ndarray]:
    db = hasher.encode_features(hasher.features(split.train.inputs)).codes
    q = hasher.encode_features(hasher.features(split.queries.inputs)).codes
    return q, db


def _train(data_path: Path, out: Path, bits: int, nested: Sequence[int] | None) -> tuple[Any, dict[str, Any]]:
    from hamdex.service import cli

    start = time.perf_counter()
    given = {} if nested is None else {"nested": ",".join(str(w) for w in nested)}
    cli.train(str(data_path), out=out, bits=bits, device="cpu", **given)
    seconds = time.perf_counter() - start
    hasher = checkpoint.load(out, "cpu")
    report = hasher.info["report"]
    config = hasher.model.config
    done = {
        "train_seconds": round(seconds, 1),
        "safeguard": report["safeguard"]["action"],
        "steps": report["steps"],
        "members": config.members,
        "readout": config.readout,
        "nested": list(config.nested),
    }
    return hasher, done


def run(
    name: str,
    bits: int,
    prefixes: Sequence[int],
    folder: Path,
    reuse: dict[str, Any] | None = None,
    train_dedicated: bool = True,
) -> dict[str, Any]:
    split = DATASETS[name]()
    LOG.info("%s: %d training items, %d queries", name, len(split.train), len(split.queries))
    q_labels, db_labels = np.asarray(split.queries.labels), np.asarray(split.train.labels)
    data_path = robustness._save_for_cli(split.train, folder)
    widths = [*prefixes, bits]
    rows: dict[str, dict[str, Any]] = {str(w): {} for w in widths}
    trained: dict[str, Any] = {}

    nested, trained["nested"] = _train(data_path, folder / "nested", bits, prefixes)
    q, db = _codes(nested, split)
    x = nested.features(split.train.inputs)
    threshold = with_readout(nested.model, "threshold", x, nested.device, 0)
    thr_hasher = type(nested)(threshold, nested.featurizer, "", nested.device, {})
    tq, tdb = _codes(thr_hasher, split)
    for w in widths:
        rows[str(w)]["nested"] = _scores(q, db, q_labels, db_labels, w)
        rows[str(w)]["nested, threshold"] = _scores(tq, tdb, q_labels, db_labels, w)
    LOG.info("nested: %s", {w: r["nested"] for w, r in rows.items()})

    if reuse is not None:  # the dedicated rows of an earlier run on the same data (they are deterministic)
        for w in widths:
            for row in ("dedicated", f"prefix of dedicated {bits}"):
                rows[str(w)][row] = reuse["rows"][str(w)][row]
            trained[f"dedicated {w}"] = {**reuse["trained"][f"dedicated {w}"], "reused": True}
        widths = []
    for w in widths if train_dedicated else []:
        hasher, trained[f"dedicated {w}"] = _train(data_path, folder / f"dedicated-{w}", w, None)
        dq, ddb = _codes(hasher, split)
        rows[str(w)]["dedicated"] = _scores(dq, ddb, q_labels, db_labels, w)
        if w == bits:
            for p in widths:
                rows[str(p)][f"prefix of dedicated {bits}"] = _scores(dq, ddb, q_labels, db_labels, p)
        LOG.info("dedicated %d: %s", w, rows[str(w)]["dedicated"])
    return {"data": name, "bits": bits, "prefixes": list(prefixes), "rows": rows, "trained": trained}


def format_table(result: dict[str, Any]) -> str:
    bits = result["bits"]
    names = ["nested", "nested, threshold", "dedicated", f"prefix of dedicated {bits}"]
    head = "| bits | " + " | ".join(f"{n} P@100 | {n} mAP" for n in names) + " | nested - dedicated (P@100 / mAP) |"
    lines = [head, "|---:|" + "---:|" * (2 * len(names) + 1)]
    for w, row in result["rows"].items():
        cells = [f"{row[n]['p@100']:.4f} | {row[n]['map']:.4f}" if n in row else "- | -" for n in names]
        if "dedicated" not in row:
            lines.append(f"| {w} | " + " | ".join(cells) + " | - |")
            continue
        dp = row["nested"]["p@100"] - row["dedicated"]["p@100"]
        dm = row["nested"]["map"] - row["dedicated"]["map"]
        miss = " (miss)" if min(dp, dm) < -GOAL else ""
        lines.append(f"| {w} | " + " | ".join(cells) + f" | {dp:+.4f} / {dm:+.4f}{miss} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=list(DATASETS), default="digits", help="default: digits")
    parser.add_argument("--bits", type=int, default=64, help="the nested model's full width (default 64)")
    parser.add_argument(
        "--nested",
        default="16,32",
        help="comma-separated prefix widths below --bits (default 16,32)",
    )
    parser.add_argument("--json", type=Path, help="write the rows and what each training did here")
    parser.add_argument(
        "--dedicated-from",
        type=Path,
        help="take the dedicated models' rows from this earlier --json of the same data, bits and prefixes",
    )
    parser.add_argument("--nested-only", action="store_true", help="train and score the nested model only")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 trains faster on a busy machine)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamdex.evaluation.metrics").setLevel(logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    prefixes = [int(w) for w in args.nested.split(",") if w.strip()]
    with tempfile.TemporaryDirectory(prefix="hamdex-nested-") as tmp:
        reuse = json.loads(args.dedicated_from.read_text()) if args.dedicated_from else None
        if reuse is not None and (reuse["data"], reuse["bits"], reuse["prefixes"]) != (args.data, args.bits, prefixes):
            raise SystemExit(f"{args.dedicated_from} holds another run: {reuse['data']}, {reuse['bits']} bits")
        result = run(args.data, args.bits, prefixes, Path(tmp), reuse, not args.nested_only)
    print(format_table(result))
    print(json.dumps(result["trained"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
