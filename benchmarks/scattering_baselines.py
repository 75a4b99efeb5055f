"""How much of the pixel model's Fashion-MNIST gain the scattering coefficients give on their own.

The pixel preset's decoder reconstructs scattering coefficients (``models/scattering.py``); its encoder still reads
pixels. This script scores the classic baselines on both representations, in one run, on the quality benchmark's
Fashion-MNIST protocol (60,000 database images, 1,000 class-balanced queries, mAP over the whole ranking): ITQ and
centered LSH on pixels (what ``benchmarks/quality.py`` runs) beside the same methods on the square-rooted
scattering coefficients, with the ratio of each to its pixel version. No model is trained (~5 minutes on a core).

    .venv/bin/python benchmarks/scattering_baselines.py [--bits 16,32,64] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamdex.evaluation.harness import DATASETS, baseline_codes  # noqa: E402
from hamdex.evaluation.metrics import mean_average_precision  # noqa: E402
from hamdex.models.featurizers import make_featurizer  # noqa: E402
from hamdex.models.scattering import scattering_features  # noqa: E402

METHODS = ("itq", "lsh_centered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", default="16,32,64", help="comma-separated code lengths")
    parser.add_argument("--json", type=Path, help="write {bits: {method: {features: mAP}}} here")
    args = parser.parse_args()
    bits = [int(b) for b in args.bits.split(",")]

    dataset = DATASETS["fashion-mnist"]
    split = dataset.load(dataset.full, 0)
    featurizer = make_featurizer("pixels").fit(split.db_inputs)
    pixels = {"q": featurizer.transform(split.q_inputs), "db": featurizer.transform(split.db_inputs)}
    start = time.perf_counter()
    scat = {part: scattering_features(x, featurizer.shape) for part, x in pixels.items()}
    print(f"scattering coefficients: {scat['db'].shape[1]} per image, {time.perf_counter() - start:.0f} s for all")

    results: dict[int, dict[str, dict[str, float]]] = {}
    print("\n| bits | method | mAP on pixels | mAP on scattering | ratio |\n|---|---|---|---|---|")
    for n_bits in bits:
        results[n_bits] = {}
        for method in METHODS:
            row = {}
            for name, feats in (("pixels", pixels), ("scattering", scat)):
                codes = baseline_codes(method, n_bits, feats["q"], feats["db"])
                row[name] = mean_average_precision(codes.q, codes.db, split.q_labels, split.db_labels)
            results[n_bits][method] = row
            ratio = row["scattering"] / row["pixels"]
            print(f"| {n_bits} | {method} | {row['pixels']:.3f} | {row['scattering']:.3f} | {ratio:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
