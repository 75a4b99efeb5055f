"""GPU check of the service (issue 5): serve a model on CUDA and on the CPU, drive POST /v1/encode at rising
concurrency, and compare items/s and the codes. Never part of CI; about 3 minutes on a GPU machine.

    python benchmarks/gpu_serve_check.py --json out.json           # needs a CUDA GPU
    python benchmarks/gpu_serve_check.py --devices cpu --quick     # a dry run of every step on the CPU

Two models: the 20 Newsgroups text model (32 bits, sparse TF-IDF input; requests of 32 posts) and a pixel model
(784-d images, 64 bits; requests of 256 images sent as base64 float32, the wire format for large vector
batches). For each model and device: one real server process (``python -m hamdex.service.cli serve``), then each
concurrency level for a few seconds; then the same 1,000 inputs encoded through each device's server, codes
compared bit for bit.

    python benchmarks/gpu_serve_check.py --encode-bench --json out.json            # needs a CUDA GPU
    python benchmarks/gpu_serve_check.py --encode-bench --devices cpu --quick      # the dry run, on the CPU

``--encode-bench`` runs instead the table of benchmarks/encode_bench.py (issue 24: in-process against HTTP items/s
for JSON, base64 and binary bodies, and a text model) once per device, with the same checkpoints, and fails unless
every device's codes equal the first device's, byte for byte (``--min-identical`` to allow a fraction to differ).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

if __name__ == "__main__" and not __package__:  # python benchmarks/gpu_serve_check.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamdex.models import checkpoint, data  # noqa: E402
from hamdex.models.presets import preset  # noqa: E402
from hamdex.models.train import TrainConfig, fit_hasher  # noqa: E402

from benchmarks import encode_bench  # noqa: E402
from benchmarks.servers import CLI, REPO, Server, free_port, serve_args, service_env  # noqa: E402


def start_server(model: Path, workdir: Path, device: str) -> Server:
    """``hamdex serve`` of ``model`` on ``device``, ready (this process's HAMDEX_* settings pass through)."""
    port = free_port()
    env = service_env(workdir, [k for k in os.environ if k.startswith("HAMDEX_")])
    env.update(HAMDEX_JSON_LOGS="false", HAMDEX_LOG_LEVEL="warning")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    collection = workdir / f"collection-{device}-{model.name}"
    command = [*CLI, *serve_args(model, collection, port, device)]
    server = Server.spawn(command, env, workdir / f"server-{device}-{model.name}.log", port)
    server.wait_ready(180)
    return server


async def drive(url: str, bodies: list[dict], concurrency: int, seconds: float) -> dict[str, float]:
    """Each of ``concurrency`` workers posts bodies in turn for ``seconds``; items/s and request latency."""
    latencies: list[float] = []
    items = errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker(w: int) -> None:
            nonlocal items, errors
            i = w
            while time.perf_counter() < stop:
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                r = await client.post("/v1/encode", json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    items += len(r.json()["codes"])
                else:
                    errors += 1
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    return {
        "items_per_s": items / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "errors": errors,
    }


def encode_all(url: str, bodies: list[dict]) -> list[str]:
    codes: list[str] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for body in bodies:
            r = client.post("/v1/encode", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"encode failed: {r.status_code} {r.text[:300]}")
            codes += r.json()["codes"]
    return codes


def structured_images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    protos = rng.random((50, 784), dtype=np.float32) * 255
    out = protos[rng.integers(0, 50, n)] + rng.standard_normal((n, 784), dtype=np.float32) * 20
    return np.clip(out, 0, 255).astype(np.float32)


def b64_body(images: np.ndarray) -> dict[str, Any]:
    data_b64 = base64.b64encode(images.astype("<f4").tobytes()).decode()
    return {"inputs_b64": {"data": data_b64, "shape": list(images.shape)}}


def build_models(workdir: Path, quick: bool, device: str) -> dict[str, tuple[Path, list[dict], list[dict]]]:
    """name -> (checkpoint dir, request bodies for the load, bodies of the 1,000 inputs compared)."""
    out = {}
    train = data.load_demo_corpus("train")
    test = data.load_demo_corpus("test")
    texts = train.inputs[:2000] if quick else train.inputs
    model_over, train_over = preset("text", 32)
    train_over.update(epochs=1 if quick else 3, progress=False, device=device)
    hasher, _ = fit_hasher(texts, "text", {**model_over, "n_bits": 32}, TrainConfig(**train_over))
    checkpoint.save(workdir / "text", hasher)
    posts = list(test.inputs)
    load = [{"inputs": posts[i : i + 32]} for i in range(0, 3200, 32)]
    compare = [{"inputs": posts[i : i + 100]} for i in range(0, 1000, 100)]
    out["text"] = (workdir / "text", load, compare)

    images = structured_images(4000 if quick else 20000)
    model_over, train_over = preset("pixels", 64)
    train_over.update(epochs=1 if quick else 3, progress=False, device=device)
    pixels, _ = fit_hasher(images.reshape(-1, 28, 28).astype(np.uint8), "pixels", {**model_over, "n_bits": 64},
                           TrainConfig(**train_over))  # fmt: skip
    checkpoint.save(workdir / "pixels", pixels)
    queries = structured_images(256 * 16, seed=1).reshape(-1, 28, 28)
    load = [b64_body(queries[i : i + 256]) for i in range(0, len(queries), 256)]
    compare = [b64_body(queries[i : i + 250]) for i in range(0, 1000, 250)]
    out["pixels"] = (workdir / "pixels", load, compare)
    return out


def encode_tables(devices: list[str], quick: bool, min_identical: float) -> dict[str, Any]:
    """benchmarks/encode_bench.py's run on each device, the same checkpoints for all; SystemExit unless each
    model's codes on every device equal the first device's (a fraction ``min_identical`` of them at least)."""
    result: dict[str, Any] = {"devices": devices}
    argv = ["--quick"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            cfg = encode_bench.config_from_args(encode_bench.parse_args([*argv, "--device", device]))
            cfg.model_cache = Path(tmp)
            result[device] = encode_bench.run(cfg)
            print(f"\n{device}:\n" + encode_bench.markdown(result[device]), flush=True)
    first = result[devices[0]]["models"]
    for device in devices[1:]:
        for name, model in result[device]["models"].items():
            a, b = first[name]["codes"], model["codes"]
            same = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
            result.setdefault("identical_codes", {})[f"{name} {device}"] = same
            print(f"{name}: codes on {device} equal those on {devices[0]}: {same:.2%} of {len(a)}")
            if same < min_identical:
                raise SystemExit(f"{name}: only {same:.2%} of the codes on {device} equal {devices[0]}'s")
    for device in devices:
        for name, model in result[device]["models"].items():
            if not all(model["codes_match"].values()):  # HTTP against in-process, on the same device
                raise SystemExit(f"{name} on {device}: HTTP codes differ from in-process: {model['codes_match']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="cuda,cpu")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--encode-bench", action="store_true", help="the encode_bench.py table on each device")
    parser.add_argument("--min-identical", type=float, default=1.0, help="with --encode-bench")
    args = parser.parse_args()
    if args.encode_bench:
        result = encode_tables(args.devices.split(","), args.quick, args.min_identical)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    devices = args.devices.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    seconds = 1.0 if args.quick else args.seconds
    result: dict[str, Any] = {"devices": devices, "concurrency": levels, "seconds_per_level": seconds}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        models = build_models(workdir, args.quick, devices[0])
        for name, (model_dir, load, compare) in models.items():
            codes = {}
            for device in devices:
                server = start_server(model_dir, workdir, device)
                try:
                    asyncio.run(drive(server.url, load[:4], 2, 0.5))  # warm-up
                    for c in levels:
                        r = asyncio.run(drive(server.url, load, c, seconds))
                        result.setdefault(name, {}).setdefault(device, {})[str(c)] = r
                        print(
                            f"{name} {device} c={c}: {r['items_per_s']:,.0f} items/s p50 {r['p50_ms']:.1f} ms",
                            flush=True,
                        )
                    codes[device] = encode_all(server.url, compare)
                finally:
                    server.stop(30)
            if len(devices) > 1:
                a, b = codes[devices[0]], codes[devices[1]]
                same = sum(x == y for x, y in zip(a, b, strict=True))
                result[name]["identical_codes"] = same / len(a)
                result[name]["compared"] = len(a)
    print("\n| model | device | " + " | ".join(f"c={c} items/s" for c in levels) + " | p50 ms at max c |")
    print("|---|---|" + "---|" * len(levels) + "---|")
    for name in models:
        for device in devices:
            row = result[name][device]
            cells = " | ".join(f"{row[str(c)]['items_per_s']:,.0f}" for c in levels)
            print(f"| {name} | {device} | {cells} | {row[str(levels[-1])]['p50_ms']:.1f} |")
    for name in models:
        if "identical_codes" in result[name]:
            print(f"{name}: identical codes {devices[0]} vs {devices[1]}: {result[name]['identical_codes']:.2%} "
                  f"of {result[name]['compared']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
