"""Retrieval quality (issue 3): every hamdex bottleneck beside LSH, centered LSH, PCA-hash, ITQ and exact float
cosine, trained and scored in one process on 20 Newsgroups and Fashion-MNIST.

Protocols, methods and metrics: see evaluation/harness.py and ../shared/notes/benchmarks.md. Prints a markdown
table per dataset (and, for 20NG, the published precision@100 beside ours); ``--json FILE`` writes
``{dataset: {bits: {method: {metric: value}}}}``; PNG plots go to ``--plots DIR``.

    python benchmarks/quality.py                                # both datasets; 20ng 16-128 bits, fashion 16-64
    python benchmarks/quality.py --dataset 20ng --bits 32       # one width
    python benchmarks/quality.py --quick --json var/quick.json  # CI: subsets, 10 epochs, 32 bits

Without ``--bits``, 20ng runs 16,32,64,128 and fashion-mnist 16,32,64 (the widths of the published image tables);
``--quick`` runs 32 bits only. ``--bits`` given explicitly applies to every dataset.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from hamdex.evaluation import harness
from tqdm.contrib.logging import logging_redirect_tqdm

DEFAULT_PLOTS = Path(__file__).resolve().parent / "out"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=[*harness.DATASETS, "all"], default="all", help="default: all")
    parser.add_argument("--bits", type=_bits, help="comma-separated code lengths, e.g. 16,32,64,128")
    parser.add_argument("--quick", action="store_true", help="reduced run for CI: subsets, 10 epochs, 32 bits")
    parser.add_argument("--json", type=Path, help="write {dataset: {bits: {method: {metric: value}}}} here")
    parser.add_argument("--plots", type=Path, default=DEFAULT_PLOTS, help="PNG directory (default benchmarks/out)")
    parser.add_argument(
        "--methods",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        help="hamdex variants to train, e.g. hamdex,hamdex_sign (default: every bottleneck; hamdex and the baselines "
        "always run); hamdex_adversarial (the adversarial prior on the codes), hamdex_denoising (input dropout "
        "0.3) and hamdex_feature_matching (VAE-GAN's feature matching, weight 0.01; images only) run only when named",
    )
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice; 1 trains faster on a busy machine)"
    )
    return parser.parse_args(argv)


def _bits(text: str) -> list[int]:
    try:
        widths = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits must be comma-separated integers, got {text!r}") from None
    if not widths or any(b <= 0 or b % 8 for b in widths):
        raise argparse.ArgumentTypeError(f"--bits must be positive multiples of 8, got {text!r}")
    return widths


def main(argv: Sequence[str] | None = None) -> harness.Results:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hamdex.evaluation.metrics").setLevel(logging.WARNING)  # one line per metric call is noise here
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(harness.DATASETS) if args.dataset == "all" else [args.dataset]
    with logging_redirect_tqdm():
        results = harness.run_benchmarks(names, args.bits, args.quick, args.plots, methods=args.methods)
    print(harness.format_table(results))
    if "20ng" in results:
        print("\n" + harness.format_published(results["20ng"], quick=args.quick))
    if args.json:
        harness.write_json(results, args.json)
    return results


if __name__ == "__main__":
    main()
