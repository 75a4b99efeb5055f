"""GPU check (issue 2): train one epoch and encode the 20 Newsgroups corpus on CUDA, then encode the same corpus
from the same checkpoint on the CPU; report items/s for each and whether the codes are identical.

    python benchmarks/gpu_check.py                  # needs a CUDA GPU; about a minute
    python benchmarks/gpu_check.py --device cpu     # the same steps on the CPU (a dry run of the script)

Prints a table; ``--json FILE`` writes the numbers. Never part of CI.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models import checkpoint, data
from models.presets import preset
from models.train import TrainConfig, fit_hasher


def encode_rate(model_dir: Path, device: str, features, repeats: int = 3) -> tuple[np.ndarray, float]:
    """Codes of all features on ``device`` and the best items/s over a few passes (the first one warms up)."""
    hasher = checkpoint.load(model_dir, device)
    best, codes = 0.0, None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        codes = hasher.encode_features(features, batch_size=8192).codes
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, features.shape[0] / (time.perf_counter() - t0))
    return codes, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --device cpu for a dry run")
    corpus = data.load_demo_corpus("train")
    model_over, train_over = preset("text", 32)
    train_over.update(epochs=1, device=args.device, progress=False)
    t0 = time.perf_counter()
    hasher, _ = fit_hasher(corpus.inputs, "text", {**model_over, "n_bits": 32}, TrainConfig(**train_over))
    train_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint.save(Path(tmp) / "m", hasher)
        features = hasher.features(corpus.inputs)
        dev_codes, dev_rate = encode_rate(Path(tmp) / "m", args.device, features)
        cpu_codes, cpu_rate = encode_rate(Path(tmp) / "m", "cpu", features)
    same = float((dev_codes == cpu_codes).all(axis=1).mean())
    bits_differ = int(np.bitwise_count(dev_codes ^ cpu_codes).sum())
    result = {
        "device": args.device,
        "train_1_epoch_s": train_s,
        "encode_items_per_s": dev_rate,
        "cpu_encode_items_per_s": cpu_rate,
        "identical_code_fraction": same,
        "differing_bits": bits_differ,
        "items": len(corpus.ids),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }
    print("| device | 1 epoch train s | encode items/s | CPU encode items/s | identical codes | differing bits |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.device} | {train_s:.1f} | {dev_rate:,.0f} | {cpu_rate:,.0f} | {same:.4%} | {bits_differ} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
