"""Bulk indexing throughput and memory (issue 6): the real ``hamdex index`` command on a large ``.npy`` file,
beside encode-only throughput measured in the same run on the same file and model.

    python benchmarks/bulk.py --json out.json                 # 1M items of 784-d float32 -> 64-bit collection
    python benchmarks/bulk.py --quick --json var/bulk.json    # CI smoke: 20k items (small run: 2k)

Steps, in one process (the machine is shared and noisy: compare the ratios, not the absolute numbers):

1. Data: ``--items`` structured 784-d float32 vectors in [0, 1] (``--centres`` random smooth 28x28 prototypes;
   each item is a prototype at a random brightness plus noise; seeded), written once as ``.npy`` in ``--workdir``
   and reused while the parameters are the same (1M items: 3.1 GB).
2. Model: the default MLP for dense vectors (784 -> 512 -> 512 -> 64 bits, ``models/presets.py``), trained for
   ``--train-epochs`` on the first ``--train-items`` items. Its quality is not measured here, its encode cost is.
3. Baseline, encode-only: read, featurize and encode every block of the same file in this process, no writes
   (``encode_only_items_per_s``); on CUDA too when a GPU is there (``encode_only_cuda_items_per_s``).
4. ``hamdex index`` in a subprocess into a fresh collection, first on the first ``--small`` items
   (``--limit``), then on all of them: seconds, items/s and the process's peak RSS (VmHWM, from ``--report``).
   Peak memory must not grow with the input: ``peak_rss_bytes`` (all items) against ``peak_rss_bytes_100k``.

JSON keys: ``items``, ``seconds``, ``items_per_s``, ``encode_only_items_per_s``, ``peak_rss_bytes`` (all items),
``peak_rss_bytes_100k`` (the small run, 100k items unless ``--small`` says otherwise), the small run's
``items_small``, ``seconds_small``, ``items_per_s_small``, and the goals with their verdicts.
"""

from __future__ import annotations

import os

# As the hamdex CLI does (service/cli.py): OpenMP threads that spin-wait cost 2-3x on a busy 2-core machine
# (measured here: encode-only 17.7k items/s active, 49.0k passive). Set before torch loads its OpenMP runtime, so
# the encode-only baseline runs under the same setting as the `hamdex index` subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOAL_ITEMS_PER_S = 10_000
GOAL_PEAK_RSS = 1.5e9
SIDE, DIM = 28, 784
WARMUP_BLOCKS = 10


@dataclass(frozen=True)
class Config:
    items: int = 1_000_000
    small: int = 100_000
    bits: int = 64
    centres: int = 100
    noise: float = 0.15
    batch: int = 4096
    train_items: int = 10_000
    train_epochs: int = 2
    seed: int = 0
    workdir: Path = Path(tempfile.gettempdir()) / "hamdex-bulk-bench"
    progress: bool = True


def prototypes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 784) smooth random images in [0, 1]: a few random Gaussian blobs each."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    out = np.zeros((n, SIDE, SIDE), np.float32)
    for i in range(n):
        for _ in range(rng.integers(2, 6)):
            cy, cx = rng.uniform(4, SIDE - 4, 2)
            s = rng.uniform(2, 6)
            out[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    out /= out.reshape(n, -1).max(axis=1)[:, None, None]
    return out.reshape(n, DIM)


def make_data(cfg: Config) -> Path:
    """Write (or reuse) the structured .npy file; returns its path."""
    path = cfg.workdir / f"vectors-{cfg.items}-{cfg.centres}-{cfg.noise}-{cfg.seed}.npy"
    if path.exists():
        return path
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    protos = prototypes(rng, cfg.centres)
    tmp = path.with_suffix(".partial.npy")
    out = np.lib.format.open_memmap(tmp, "w+", np.float32, (cfg.items, DIM))
    for start in range(0, cfg.items, 50_000):
        n = min(50_000, cfg.items - start)
        which = rng.integers(0, cfg.centres, n)
        block = protos[which] * rng.uniform(0.6, 1.0, (n, 1)).astype(np.float32)
        block += rng.normal(0, cfg.noise, (n, DIM)).astype(np.float32)
        out[start : start + n] = np.clip(block, 0, 1)
    out.flush()
    del out
    os.replace(tmp, path)
    return path


def train_model(cfg: Config, data: Path) -> Path:
    """The default dense MLP, trained briefly on the first items; saved as a checkpoint in the workdir."""
    from hamdex.models import checkpoint
    from hamdex.models.presets import preset
    from hamdex.models.train import TrainConfig, fit_hasher

    out = cfg.workdir / f"model-{cfg.bits}"
    x = np.load(data, mmap_mode="r")[: cfg.train_items]
    model_over, train_over = preset("dense", cfg.bits)
    train_over.update(epochs=cfg.train_epochs, progress=False)
    model_over["n_bits"] = cfg.bits
    hasher, _ = fit_hasher(np.ascontiguousarray(x), "dense", model_over, TrainConfig(**train_over))
    checkpoint.save(out, hasher)
    return out


def encode_only(cfg: Config, data: Path, model: Path, device: str) -> float:
    """items/s of read + featurize + encode of the whole file, nothing written."""
    from hamdex.models import checkpoint
    from hamdex.models.data import iter_blocks

    hasher = checkpoint.load(model, device)
    for block in itertools.islice(iter_blocks(data, cfg.batch), WARMUP_BLOCKS):  # first calls are slow (kernels)
        hasher.encode_features(hasher.features(block.inputs))
    t0, n = time.perf_counter(), 0
    for block in iter_blocks(data, cfg.batch):
        hasher.encode_features(hasher.features(block.inputs))
        n += len(block)
    return n / (time.perf_counter() - t0)


def index_run(cfg: Config, data: Path, model: Path, limit: int | None, name: str) -> dict[str, Any]:
    """Run the real ``hamdex index`` into a fresh collection; its --report gives items, seconds and peak RSS."""
    coll, report = cfg.workdir / f"collection-{name}", cfg.workdir / f"report-{name}.json"
    shutil.rmtree(coll, ignore_errors=True)
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "hamdex.service.cli", "index", str(data), "-m", str(model), "-c", str(coll)]
    cmd += ["--batch-size", str(cfg.batch), "--report", str(report), "--device", "cpu"]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stderr=None if cfg.progress else subprocess.DEVNULL, stdout=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"hamdex index failed ({proc.returncode}): {proc.stdout.decode()[-2000:]}")
    summary = json.loads(report.read_text())
    shutil.rmtree(coll, ignore_errors=True)
    return {**summary, "wall_seconds": wall}


def run(cfg: Config) -> dict[str, Any]:
    data = make_data(cfg)
    model = train_model(cfg, data)
    result: dict[str, Any] = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "machine": _machine()}
    result["encode_only_items_per_s"] = encode_only(cfg, data, model, "cpu")
    if torch.cuda.is_available():
        result["encode_only_cuda_items_per_s"] = encode_only(cfg, data, model, "cuda")
    small = index_run(cfg, data, model, cfg.small, "small")
    full = index_run(cfg, data, model, None, "full")
    result.update(
        items=full["items"],
        seconds=full["seconds"],
        items_per_s=full["items_per_s"],
        peak_rss_bytes=full["peak_rss_bytes"],
        process_seconds=full["wall_seconds"],
        items_small=small["items"],
        seconds_small=small["seconds"],
        items_per_s_small=small["items_per_s"],
        peak_rss_bytes_100k=small["peak_rss_bytes"],
        skipped=full["skipped"],
    )
    result["goals"] = {
        "items_per_s >= 10,000": result["items_per_s"] >= GOAL_ITEMS_PER_S,
        "peak_rss < 1.5 GB": result["peak_rss_bytes"] < GOAL_PEAK_RSS,
        "peak_rss(all) <= 1.2 x peak_rss(small)": result["peak_rss_bytes"] <= 1.2 * result["peak_rss_bytes_100k"],
    }
    return result


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def format_table(r: dict[str, Any]) -> str:
    enc = r["encode_only_items_per_s"]
    rows = [
        "| run | items | seconds | items/s | vs encode-only | peak RSS |",
        "|---|---|---|---|---|---|",
        f"| encode only (read + featurize + encode, no writes) | {r['items']:,} | | {enc:,.0f} | 1.00x | |",
    ]
    if "encode_only_cuda_items_per_s" in r:
        cuda = r["encode_only_cuda_items_per_s"]
        rows.append(f"| encode only, CUDA | {r['items']:,} | | {cuda:,.0f} | {cuda / enc:.2f}x | |")
    small = (r["items_small"], r["seconds_small"], r["items_per_s_small"], r["peak_rss_bytes_100k"])
    full = (r["items"], r["seconds"], r["items_per_s"], r["peak_rss_bytes"])
    for label, (n, s, ips, rss) in (("`hamdex index --limit`", small), ("`hamdex index` (all)", full)):
        rows.append(f"| {label} | {n:,} | {s:.1f} | {ips:,.0f} | {ips / enc:.2f}x | {rss / 2**20:,.0f} MiB |")
    goals = [f"- {goal}: {'met' if ok else 'NOT met'}" for goal, ok in r["goals"].items()]
    ratio = r["peak_rss_bytes"] / r["peak_rss_bytes_100k"]
    return "\n".join([*rows, "", f"peak RSS all / small: {ratio:.2f}", *goals])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=Config.items)
    p.add_argument("--small", type=int, default=Config.small, help="items of the small run (peak RSS comparison)")
    p.add_argument("--bits", type=int, default=Config.bits)
    p.add_argument("--batch", type=int, default=Config.batch, help="items per block (hamdex index --batch-size)")
    p.add_argument("--workdir", type=Path, default=Config.workdir, help="data, model and collections go here")
    p.add_argument("--quick", action="store_true", help="CI smoke: 20k items, small run 2k, 1 training epoch")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg = Config(
        items=20_000 if args.quick else args.items,
        small=2_000 if args.quick else args.small,
        bits=args.bits,
        batch=1024 if args.quick else args.batch,
        train_items=2_000 if args.quick else Config.train_items,
        train_epochs=1 if args.quick else Config.train_epochs,
        workdir=args.workdir,
        progress=not args.no_progress,
    )
    result = run(cfg)
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
