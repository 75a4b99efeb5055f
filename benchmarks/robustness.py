"""Robustness of the defaults (issue 18): data sets x training-set sizes x code widths, every cell trained exactly as
``hamdex train DATA --bits B`` would (the CLI's own command, no per-cell settings), then scored like ``hamdex eval
--baselines lsh_centered,itq``: ITQ and centred LSH fitted on the model's features in the same run.

Cells are named ``<data>-<size>-<bits>``:

- ``digits``: scikit-learn's 1,797 8 x 8 digits, 300 seeded queries, the other 1,497 the training set (database);
- ``fashion-{1k,5k,20k,60k}``: Fashion-MNIST training images (a seeded subset), 1,000 class-balanced test queries;
  ``fashion-5k-flat``: the same 5k as flat float rows (n, 784), the shape left for the CLI to work out;
- ``20ng-{1k,3k,full}``: 20 Newsgroups "bydate" training posts, 2,000 seeded test posts as queries;
- ``r8``, ``trec``, ``webkb``: ``../shared/data/robustness/*.jsonl.gz`` (train split / test split).

The goal per cell: hamdex mAP >= 1.1 x ITQ's and P@100 >= ITQ's. ``--json FILE`` writes ``{cell: {"hamdex": {...},
"itq": {...}, "lsh_centered": {...}}}`` (p@100, map, distinct_code_fraction, train_seconds; hamdex adds what the
safeguard did); a markdown table is printed (``--markdown FILE`` too) and ``--plot FILE`` draws hamdex / ITQ mAP
per cell.

``--bottleneck vq,bernoulli`` trains each cell once per bottleneck (``hamdex train --bottleneck B``, all else at its
default; default: the CLI's own). The CLI's default bottleneck is the method ``hamdex``, another one
``hamdex_<name>``; with more than one, a second table puts their P@100 and mAP side by side.

    python benchmarks/robustness.py --quick --json var/robust.json     # the small cells (minutes each)
    python benchmarks/robustness.py --cells 'digits-*,trec-32'          # fnmatch patterns over cell names
    python benchmarks/robustness.py --list                              # every cell name
    python benchmarks/robustness.py --cells 'digits-*' --bottleneck bernoulli,vq --threads 1

``--variants '{"adv10": {"adversarial_weight": 10}}'`` also trains each cell once per named variant, ``hamdex train``
with those options (their Python names) over its defaults, as the method ``hamdex_<name>``. Every hamdex row keeps
what the safeguard saw besides what it shipped: the code health (bit balance, mean |bit correlation|) of the shipped
codes on the training items, and the trained model's own probe mAP and code health (``model_probe_map``,
``model_bit_balance``, ...), which differ where the safeguard shipped ITQ.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import gzip
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # a progress bar per epoch of every cell is noise in the log
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hamdex.evaluation.harness import FASHION_DIR, class_balanced, random_subset  # noqa: E402
from hamdex.models import checkpoint, data  # noqa: E402
from hamdex.service.evaluate import evaluate_hasher  # noqa: E402

LOG = logging.getLogger("robustness")
ROBUSTNESS_DIR = ROOT.parent / "shared" / "data" / "robustness"
NEWSGROUPS_TAR = ROOT.parent / "shared" / "data" / "20news-bydate.tar.xz"
WIDTHS = (16, 32, 64)
BASELINES = ("itq", "lsh_centered")
KEYS = ("p@100", "map", "distinct_code_fraction")
QUICK = ("digits", "fashion-1k", "fashion-5k", "fashion-5k-flat", "trec", "r8", "webkb")
MAP_GOAL = 1.1
SHORT_WORDS = 40  # 20ng-short: words kept of each post's body


@dataclass(frozen=True)
class Split:
    """A cell's data: the training set (also the database) and the queries, as CLI blocks with labels."""

    train: data.Block
    queries: data.Block


def _block(inputs, labels: Sequence[str], kind: data.Kind) -> data.Block:
    labels = [str(label) for label in labels]
    ids = [str(i) for i in range(len(labels))]
    return data.Block(ids, inputs, labels, [{"label": label} for label in labels], kind)


def load_digits_split(seed: int = 0) -> Split:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    order = np.random.default_rng(seed).permutation(len(images))
    q, db = np.sort(order[:300]), np.sort(order[300:])
    return Split(_block(images[db], digits.target[db], "image"), _block(images[q], digits.target[q], "image"))


def load_fashion(n: int | None, flat: bool = False, seed: int = 0) -> Split:
    train = data.read_all(FASHION_DIR / "train-images-idx3-ubyte.gz")
    test = data.read_all(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    db = random_subset(len(train), n, seed)
    q = class_balanced(np.asarray(test.labels), 1000, seed)
    images = train.inputs[db]
    if flat:  # what a user with a CSV or .npy of pixel rows has
        images = images.reshape(len(images), -1).astype(np.float32)
        return Split(_block(images, np.asarray(train.labels)[db], "vector"), _block_of(test, q))
    return Split(_block(images, np.asarray(train.labels)[db], "image"), _block_of(test, q))


def _block_of(block: data.Block, idx: np.ndarray) -> data.Block:
    return _block(block.inputs[idx], np.asarray(block.labels)[idx], block.kind)


def load_20ng(n: int | None, seed: int = 0) -> Split:
    train = data.load_20newsgroups(NEWSGROUPS_TAR, "train")
    test = data.load_20newsgroups(NEWSGROUPS_TAR, "test")
    db, q = random_subset(len(train), n, seed), random_subset(len(test), 2000, seed)
    return Split(_texts(train, db), _texts(test, q))


def load_20ng_short(n: int, words: int = SHORT_WORDS, seed: int = 0) -> Split:
    """Short topical texts with many balanced classes (what abstracts or product blurbs look like): the first
    ``words`` words of each post's body (headers and quoted lines dropped), posts with fewer than 10 left out."""
    train, test = (_shortened(data.load_20newsgroups(NEWSGROUPS_TAR, s), words) for s in ("train", "test"))
    db, q = random_subset(len(train.inputs), n, seed), random_subset(len(test.inputs), 2000, seed)
    return Split(_texts(train, db), _texts(test, q))


def _shortened(block: data.Block, words: int) -> data.Block:
    keep, texts = [], []
    for i, post in enumerate(block.inputs):
        body = post.split("\n\n", 1)[-1]  # the header block ends at the first blank line
        tokens = " ".join(line for line in body.splitlines() if not line.lstrip().startswith((">", "|"))).split()
        if len(tokens) >= 10:
            keep.append(i)
            texts.append(" ".join(tokens[:words]))
    labels = [block.labels[i] for i in keep]
    return data.Block([block.ids[i] for i in keep], texts, labels, [block.metadata[i] for i in keep], "text")


def _texts(block: data.Block, idx: np.ndarray) -> data.Block:
    return _block([block.inputs[i] for i in idx], [block.labels[i] for i in idx], "text")


def load_jsonl(name: str) -> Split:
    with gzip.open(ROBUSTNESS_DIR / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    parts = {split: [r for r in rows if r["split"] == split] for split in ("train", "test")}
    train, test = ([r["text"] for r in parts[s]] for s in ("train", "test"))
    return Split(
        _block(train, [r["label"] for r in parts["train"]], "text"),
        _block(test, [r["label"] for r in parts["test"]], "text"),
    )


DATASETS: dict[str, Callable[[], Split]] = {
    "digits": load_digits_split,
    "fashion-1k": lambda: load_fashion(1000),
    "fashion-5k": lambda: load_fashion(5000),
    "fashion-5k-flat": lambda: load_fashion(5000, flat=True),
    "fashion-20k": lambda: load_fashion(20_000),
    "fashion-60k": lambda: load_fashion(None),
    "20ng-1k": lambda: load_20ng(1000),
    "20ng-3k": lambda: load_20ng(3000),
    "20ng-full": lambda: load_20ng(None),
    "20ng-short": lambda: load_20ng_short(5000),
    "r8": lambda: load_jsonl("r8"),
    "trec": lambda: load_jsonl("trec"),
    "webkb": lambda: load_jsonl("webkb"),
}


def all_cells() -> list[str]:
    return [f"{name}-{bits}" for name in DATASETS for bits in WIDTHS]


def select_cells(patterns: Sequence[str]) -> list[str]:
    """Cell names matching any fnmatch pattern, in the matrix's order; an unknown pattern is an error."""
    cells = all_cells()
    for pattern in patterns:
        if not fnmatch.filter(cells, pattern):
            raise SystemExit(f"no cell matches {pattern!r}; --list shows them")
    return [c for c in cells if any(fnmatch.fnmatch(c, p) for p in patterns)]


def _save_for_cli(block: data.Block, folder: Path) -> Path:
    """The training set as a file the CLI reads, with its labels where a user's file would carry them: .jsonl for
    texts (a ``label`` field), .npz with ``labels`` for images; the flat rows as a bare .npy (what a user with a
    .npy of pixel rows has), so that one cell trains without labels to judge by."""
    if block.kind == "text":
        path = folder / "train.jsonl"
        triples = zip(block.ids, block.inputs, block.labels, strict=True)
        path.write_text("".join(json.dumps({"id": i, "text": t, "label": lab}) + "\n" for i, t, lab in triples))
    elif block.kind == "image":
        path = folder / "train.npz"
        np.savez(path, X=block.inputs, labels=np.asarray(block.labels, dtype=str))
    else:
        path = folder / "train.npy"
        np.save(path, block.inputs)
    return path


def method_name(bottleneck: str | None) -> str:
    """``hamdex`` for the CLI's default bottleneck (None), else ``hamdex_<bottleneck>`` (as benchmarks/quality.py)."""
    return "hamdex" if bottleneck is None or bottleneck == cli_default_bottleneck() else f"hamdex_{bottleneck}"


def cli_default_bottleneck() -> str:
    """The bottleneck ``hamdex train`` uses unless told: ModelConfig's default (no preset sets one)."""
    from hamdex.models.autoencoder import ModelConfig

    return next(f.default for f in dataclasses.fields(ModelConfig) if f.name == "bottleneck")


def _queries_for(hasher, queries: data.Block) -> data.Block:
    """The query images as flat rows for a model that reads vectors (a ``featurizer`` "dense" variant of the
    flat-rows cell, whose training rows are flat and whose queries are the test images)."""
    if hasher.featurizer.kind != "dense" or queries.kind != "image":
        return queries
    rows = np.asarray(queries.inputs).reshape(len(queries.ids), -1).astype(np.float32)
    return _block(rows, np.asarray(queries.labels), "vector")


def run_cell(
    split: Split,
    bits: int,
    folder: Path,
    bottlenecks: Sequence[str | None] = (None,),
    variants: dict[str, dict] | None = None,
) -> dict[str, dict[str, float | str]]:
    """Train with the CLI's defaults at this width (once per bottleneck; None: the CLI's; then once per variant,
    ``hamdex train`` options by name), then score each model and the baselines on the queries."""
    from hamdex.service import cli

    data_path = _save_for_cli(split.train, folder)
    out: dict[str, dict[str, float | str]] = {}
    runs = [(method_name(b), {} if b is None else {"bottleneck": b}) for b in bottlenecks]
    runs += [(f"hamdex_{name}", dict(options)) for name, options in (variants or {}).items()]
    for i, (method, chosen) in enumerate(runs):
        bottleneck = chosen.get("bottleneck")
        model_dir = folder / f"model-{bits}-{i}"
        start = time.perf_counter()
        cli.train(str(data_path), out=model_dir, bits=bits, device="cpu", **chosen)  # all else at its default
        seconds = time.perf_counter() - start
        hasher = checkpoint.load(model_dir, "cpu")
        baselines = list(BASELINES) if i == 0 else []
        rows = evaluate_hasher(hasher, split.train, _queries_for(hasher, split.queries), k=100, baselines=baselines)
        report = hasher.info["report"]
        out.update({name: {k: float(rows[name][k]) for k in KEYS} for name in rows if name != "hamdex"})
        for name in baselines:
            out[name]["train_seconds"] = float(rows[name]["seconds"])
        model = report["safeguard"].get("candidates", {}).get("model", {})  # the trained model, whatever shipped
        out[method] = {
            **{k: float(rows["hamdex"][k]) for k in KEYS},
            "train_seconds": seconds,
            "featurizer": hasher.featurizer.kind,
            "bottleneck": bottleneck or cli_default_bottleneck(),  # as asked: an ITQ fallback ships none
            "safeguard": report["safeguard"]["action"],
            # what the safeguard compared by: "label mAP" where the training file's labels judged
            "judged_by": report["safeguard"].get("judged_by", report["validation"]["signal"]),
            "steps": report["steps"],
            **{k: report["code_health"][k] for k in ("bit_balance", "mean_abs_bit_correlation")},
            # the trained model's own probe mAP and code health on the training items (absent when unchecked)
            **{f"model_{k}": v for k, v in model.items()},
        }
    return out


def run(
    cells: Sequence[str],
    json_path: Path | None = None,
    bottlenecks: Sequence[str | None] = (None,),
    variants: dict[str, dict] | None = None,
) -> dict[str, dict]:
    """Every cell, one data set loaded once for all its widths; the JSON is rewritten after each cell."""
    results: dict[str, dict] = json.loads(json_path.read_text()) if json_path and json_path.exists() else {}
    by_data: dict[str, list[int]] = {}
    for cell in cells:
        name, bits = cell.rsplit("-", 1)
        by_data.setdefault(name, []).append(int(bits))
    for name, widths in by_data.items():
        split = DATASETS[name]()
        LOG.info("%s: %d training items, %d queries", name, len(split.train), len(split.queries))
        for bits in widths:
            with tempfile.TemporaryDirectory(prefix="hamdex-robust-") as tmp:
                results[f"{name}-{bits}"] = run_cell(split, bits, Path(tmp), bottlenecks, variants)
            LOG.info("%s-%d: %s", name, bits, _summary(results[f"{name}-{bits}"]))
            if json_path:
                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    return results


def _summary(cell: dict) -> str:
    itq = cell["itq"]
    return "; ".join(
        f"{m} mAP {h['map']:.4f} / ITQ {itq['map']:.4f} = {h['map'] / itq['map']:.2f} x, P@100 {h['p@100']:.4f}"
        for m, h in cell.items()
        if m.startswith("hamdex")
    )


def format_markdown(results: dict[str, dict]) -> str:
    lines = [
        "| cell | hamdex P@100 | ITQ P@100 | lsh_c P@100 | hamdex mAP | ITQ mAP | mAP / ITQ | distinct codes "
        "| safeguard | train s | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, r in results.items():
        h, itq, lsh = r["hamdex"], r["itq"], r["lsh_centered"]
        ratio = h["map"] / itq["map"] if itq["map"] else math.nan
        met = ratio >= MAP_GOAL and h["p@100"] >= itq["p@100"]
        lines.append(
            f"| {cell} | {h['p@100']:.3f} | {itq['p@100']:.3f} | {lsh['p@100']:.3f} | {h['map']:.3f} | "
            f"{itq['map']:.3f} | {ratio:.2f} x | {h['distinct_code_fraction']:.1%} | {h.get('safeguard', '-')} | "
            f"{h['train_seconds']:.0f} | {'met' if met else 'missed'} |"
        )
    return "\n".join(lines)


def format_bottlenecks(results: dict[str, dict]) -> str:
    """P@100, mAP and what the safeguard did for every trained bottleneck per cell, ITQ beside them."""
    methods = sorted(
        {m for r in results.values() for m in r if m.startswith("hamdex")}, key=lambda m: (m != "hamdex", m)
    )
    labels = [cli_default_bottleneck() if m == "hamdex" else m.removeprefix("hamdex_") for m in methods]
    head = " | ".join(f"{label} P@100 | {label} mAP | {label} safeguard" for label in labels)
    lines = [f"| cell | ITQ P@100 | ITQ mAP | {head} |", "|---" * (3 + 3 * len(methods)) + "|"]
    for cell, r in results.items():
        cols = [_method_cols(r[m]) if m in r else "- | - | -" for m in methods]
        lines.append(f"| {cell} | {r['itq']['p@100']:.3f} | {r['itq']['map']:.3f} | {' | '.join(cols)} |")
    return "\n".join(lines)


def _method_cols(m: dict) -> str:
    return f"{m['p@100']:.3f} | {m['map']:.3f} | {m.get('safeguard', '-')}"


def plot(results: dict[str, dict], path: Path) -> Path:
    from hamdex.evaluation.plots import plot_ratio_bars

    ratios = {cell: r["hamdex"]["map"] / r["itq"]["map"] for cell, r in results.items()}
    return plot_ratio_bars(ratios, path, "hamdex mAP / ITQ mAP per cell (CLI defaults)", goal=MAP_GOAL)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", help="comma-separated fnmatch patterns over cell names (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"the small cells: {', '.join(QUICK)} at 16/32/64")
    parser.add_argument("--json", type=Path, help="write (and resume from) {cell: {method: metrics}} here")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table here")
    parser.add_argument("--plot", type=Path, help="PNG of hamdex / ITQ mAP per cell")
    parser.add_argument("--list", action="store_true", help="print the cell names and exit")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 trains faster on a busy machine)")
    parser.add_argument(
        "--bottleneck",
        help="comma-separated bottlenecks to train each cell with, e.g. bernoulli,vq (default: the CLI's)",
    )
    parser.add_argument(
        "--variants",
        type=_variants,
        help='JSON {name: {hamdex train option: value}}, e.g. \'{"adv10": {"adversarial_weight": 10}}\': each cell '
        "also trains once per variant, as the method hamdex_<name>",
    )
    return parser.parse_args(argv)


def _variants(text: str) -> dict[str, dict]:
    try:
        variants = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--variants must be JSON: {exc}") from None
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise argparse.ArgumentTypeError('--variants must be a JSON object of objects, e.g. {"adv10": {"x": 1}}')
    return variants


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamdex.evaluation.metrics").setLevel(logging.WARNING)
    if args.list:
        print("\n".join(all_cells()))
        return {}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    patterns = args.cells.split(",") if args.cells else [f"{n}-*" for n in QUICK] if args.quick else ["*"]
    bottlenecks = args.bottleneck.split(",") if args.bottleneck else [None]
    results = run(select_cells(patterns), args.json, bottlenecks, args.variants)
    ordered = {c: results[c] for c in all_cells() if c in results}
    table = format_markdown({c: r for c, r in ordered.items() if "hamdex" in r})
    if any(m.startswith("hamdex_") for r in ordered.values() for m in r):
        table += "\n\n" + format_bottlenecks(ordered)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.plot:
        plot({c: r for c, r in ordered.items() if "hamdex" in r}, args.plot)
    return results


if __name__ == "__main__":
    main()
