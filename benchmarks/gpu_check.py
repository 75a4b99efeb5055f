"""GPU checks (issues 2, 3 and 6) in one prepared run; never part of CI.

    python benchmarks/gpu_check.py --json out.json                 # needs a CUDA GPU; about 3 minutes
    python benchmarks/gpu_check.py --device cpu --quick            # a dry run of every step on the CPU

Three checks, each against the CPU of the same machine in the same run:

1. ``encode`` (issue 2): train the 32-bit text default for one epoch on the GPU, save it, then encode the 20
   Newsgroups training posts from that checkpoint on the GPU and on the CPU: items/s and identical codes.
2. ``train64`` (issue 3): train the 64-bit 20 Newsgroups default (its full preset) on the GPU and on the CPU;
   training seconds and precision@100 over the test queries, side by side.
3. ``pixels`` (issue 6): encode-only items/s of the default pixel model (784-d -> 64 bits) over 1M synthetic,
   structured images: the model alone on data already on the device, and end to end from a numpy array
   (copy in, packed codes out); codes compared with the CPU's on a subset.

Prints one markdown table per check; ``--json FILE`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hamdex.evaluation.harness import Scale, load_20ng
from hamdex.evaluation.metrics import precision_at_k
from hamdex.models import checkpoint
from hamdex.models.autoencoder import ModelConfig
from hamdex.models.checkpoint import compute_fingerprint
from hamdex.models.ensemble import build_model
from hamdex.models.featurizers import PixelFeaturizer
from hamdex.models.hasher import Hasher
from hamdex.models.presets import preset
from hamdex.models.train import TrainConfig, fit_hasher


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_rate(n: int, device: str, fn, repeats: int = 3) -> tuple[Any, float]:
    """Run ``fn`` a few times (the first warms up); its last result and the best items/s."""
    best, out = 0.0, None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = max(best, n / (time.perf_counter() - t0))
    return out, best


def _code_agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {
        "identical_code_fraction": float((a == b).all(axis=1).mean()),
        "differing_bits": int(np.bitwise_count(a ^ b).sum()),
    }


def check_encode(device: str, split, quick: bool) -> dict[str, Any]:
    model_over, train_over = preset("text", 32)
    train_over.update(epochs=1, device=device, progress=False)
    t0 = time.perf_counter()
    hasher, _ = fit_hasher(split.db_inputs, "text", {**model_over, "n_bits": 32}, TrainConfig(**train_over))
    train_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint.save(Path(tmp) / "m", hasher)
        features = hasher.features(split.db_inputs)
        on_dev, on_cpu = checkpoint.load(Path(tmp) / "m", device), checkpoint.load(Path(tmp) / "m", "cpu")
        n = features.shape[0]
        dev_codes, dev_rate = _best_rate(n, device, lambda: on_dev.encode_features(features, batch_size=8192).codes)
        cpu_codes, cpu_rate = _best_rate(n, "cpu", lambda: on_cpu.encode_features(features, batch_size=8192).codes)
    return {
        "items": n,
        "train_1_epoch_s": train_s,
        "encode_items_per_s": dev_rate,
        "cpu_encode_items_per_s": cpu_rate,
        **_code_agreement(dev_codes, cpu_codes),
    }


def _train_and_score(device: str, split, n_bits: int, epochs: int | None) -> dict[str, float]:
    model_over, train_over = preset("text", n_bits)
    train_over.update(device=device, progress=False, **({"epochs": epochs} if epochs else {}))
    t0 = time.perf_counter()
    hasher, result = fit_hasher(split.db_inputs, "text", {**model_over, "n_bits": n_bits}, TrainConfig(**train_over))
    seconds = time.perf_counter() - t0
    db, q = hasher.encode(split.db_inputs).codes, hasher.encode(split.q_inputs).codes
    p100 = precision_at_k(q, db, split.q_labels, split.db_labels, min(100, len(db) - 1))
    return {"train_seconds": seconds, "epochs": len(result.history), "p@100": p100}


def check_train64(device: str, split, quick: bool) -> dict[str, Any]:
    epochs = 2 if quick else None
    return {
        "bits": 64,
        device: _train_and_score(device, split, 64, epochs),
        "cpu": _train_and_score("cpu", split, 64, epochs),
    }


def structured_images(n: int, dim: int = 784, n_protos: int = 50, seed: int = 0) -> np.ndarray:
    """float32 (n, dim) in [0, 1]: noisy copies of a few random prototypes (features as the pixel featurizer gives)."""
    rng = np.random.default_rng(seed)
    protos = rng.random((n_protos, dim), dtype=np.float32)
    out = protos[rng.integers(0, n_protos, n)]
    out += rng.standard_normal(out.shape, dtype=np.float32) * 0.1
    return np.clip(out, 0.0, 1.0, out=out)


def check_pixels(device: str, quick: bool) -> dict[str, Any]:
    n = 20_000 if quick else 1_000_000
    torch.manual_seed(0)
    model_over, _ = preset("pixels", 64)
    config = ModelConfig(input_dim=784, n_bits=64, recon="bernoulli", **model_over)
    featurizer = PixelFeaturizer((28, 28))
    model = build_model(config).eval()
    features = structured_images(n)
    hasher = Hasher(model.to(device), featurizer, compute_fingerprint(model, featurizer), torch.device(device), {})
    batch = 65_536
    on_device = torch.from_numpy(features).to(device)

    @torch.inference_mode()
    def model_only() -> None:
        for start in range(0, n, batch):
            model.encode(on_device[start : start + batch])

    _, model_rate = _best_rate(n, device, model_only)
    codes, e2e_rate = _best_rate(n, device, lambda: hasher.encode_features(features, batch_size=batch).codes)
    on_device = on_device[:0]  # free the GPU copy
    subset = min(n, 100_000)
    cpu_hasher = Hasher(model.to("cpu"), featurizer, hasher.fingerprint, torch.device("cpu"), {})
    cpu_codes, cpu_rate = _best_rate(subset, "cpu", lambda: cpu_hasher.encode_features(features[:subset]).codes, 2)
    return {
        "items": n,
        "model_only_items_per_s": model_rate,
        "encode_only_items_per_s": e2e_rate,
        "cpu_encode_only_items_per_s": cpu_rate,
        **_code_agreement(codes[:subset], cpu_codes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--checks", default="encode,train64,pixels", help="comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="small data and 2 epochs: a dry run of the script")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --device cpu --quick for a dry run")
    checks = args.checks.split(",")
    dev = args.device
    result: dict[str, Any] = {
        "device": dev,
        "gpu": torch.cuda.get_device_name() if dev.startswith("cuda") else None,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    scale = Scale(n_train=2000, n_queries=300) if args.quick else Scale()
    split = load_20ng(scale) if set(checks) - {"pixels"} else None

    if "encode" in checks:
        r = result["encode"] = check_encode(dev, split, args.quick)
        print(f"\n### encode (issue 2): 32-bit text model, {r['items']:,} posts\n")
        print("| device | 1 epoch train s | encode items/s | CPU encode items/s | identical codes | differing bits |")
        print("|---|---|---|---|---|---|")
        print(
            f"| {dev} | {r['train_1_epoch_s']:.1f} | {r['encode_items_per_s']:,.0f}"
            f" | {r['cpu_encode_items_per_s']:,.0f} | {r['identical_code_fraction']:.4%} | {r['differing_bits']} |"
        )
    if "train64" in checks:
        r = result["train64"] = check_train64(dev, split, args.quick)
        print("\n### train64 (issue 3): the 20 Newsgroups default at 64 bits, full preset\n")
        print("| device | train s | epochs | P@100 |")
        print("|---|---|---|---|")
        for name in dict.fromkeys((dev, "cpu")):
            print(f"| {name} | {r[name]['train_seconds']:.1f} | {r[name]['epochs']} | {r[name]['p@100']:.4f} |")
    if "pixels" in checks:
        r = result["pixels"] = check_pixels(dev, args.quick)
        print(f"\n### pixels (issue 6): default pixel MLP 784 -> 64 bits, {r['items']:,} structured images\n")
        print("| device | model only items/s | encode-only items/s | CPU encode-only items/s | identical codes |")
        print("|---|---|---|---|---|")
        print(
            f"| {dev} | {r['model_only_items_per_s']:,.0f} | {r['encode_only_items_per_s']:,.0f}"
            f" | {r['cpu_encode_only_items_per_s']:,.0f} | {r['identical_code_fraction']:.4%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
