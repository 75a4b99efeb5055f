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

    python benchmarks/gpu_serve_check.py --sentence --json out.json                # issue 21: a sentence model

``--sentence`` trains a 64-bit sentence model (models/sentence.py, the bundled all-MiniLM-L6-v2) for one epoch on
TREC questions (../shared/data/robustness/trec.jsonl.gz, else synthetic texts) on the CPU, then on each device:
docs/s of ``Hasher.encode`` in process (requests of 64 texts), docs/s of POST /v1/encode at rising concurrency,
and the codes of the same texts through HTTP and in process. Against the first device (put cpu first: the
reference), it reports the share of equal codes and the mean Hamming distance. The encoder runs in bf16 on CUDA
(models.sentence.load_encoder) and in fp32 on the CPU: bf16 keeps 8 bits of mantissa (a relative error of ~0.4%
in each embedding), so a code bit whose pre-sign activation lies that close to zero may flip. Equality is therefore
not asserted across devices; the check fails when the mean Hamming distance exceeds ``--max-flip`` (5%) of the
bits (3.2 of 64): a wrong model, device or standardisation gives ~50%, bf16 rounding a few percent at most. On one
device, HTTP codes must equal in-process codes exactly on the CPU; on CUDA the micro-batcher pads texts in other
batches than the in-process call, which bf16 may round differently, so the same tolerance applies there.

    python benchmarks/gpu_serve_check.py --workers --json out.json                 # issue 24: worker processes

``--workers`` runs encode_bench.py's pixel table (JSON and binary bodies) against servers of 1 and 2 worker
processes (``hamdex serve --workers N --encode-only``) on each device: on one GPU each worker holds its own copy
of the model and its own CUDA context.

    python benchmarks/gpu_serve_check.py --all --json out.json                     # everything: ~8 min on an H100
    python benchmarks/gpu_serve_check.py --all --devices cpu --quick --json out.json   # its dry run on the CPU

``--all`` runs the four parts in turn (serve, encode-bench, sentence, workers), each recorded under its name in
the JSON with its seconds; a part that fails is recorded as ``{"error": ...}``, the others still run, and the
exit code is 1. ``--devices cuda,cpu`` is the default; the sentence part always puts cpu first (its reference).
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
import traceback
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

if __name__ == "__main__" and not __package__:  # python benchmarks/gpu_serve_check.py: the root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamdex.models import checkpoint, data  # noqa: E402
from hamdex.models.hasher import Hasher  # noqa: E402
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
    # quick: one epoch, without the preset's floor of steps (1,500: minutes on a CPU); encode speed and the codes'
    # equality do not depend on how well a model is trained
    train_over.update(epochs=1 if quick else 3, progress=False, device=device, **({"min_steps": 0} if quick else {}))
    hasher, _ = fit_hasher(texts, "text", {**model_over, "n_bits": 32}, TrainConfig(**train_over))
    checkpoint.save(workdir / "text", hasher)
    posts = list(test.inputs)
    load = [{"inputs": posts[i : i + 32]} for i in range(0, 3200, 32)]
    compare = [{"inputs": posts[i : i + 100]} for i in range(0, 1000, 100)]
    out["text"] = (workdir / "text", load, compare)

    images = structured_images(4000 if quick else 20000)
    model_over, train_over = preset("pixels", 64)
    train_over.update(epochs=1 if quick else 3, progress=False, device=device, **({"min_steps": 0} if quick else {}))
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
    result = _encode_bench_per_device(devices, ["--quick"] if quick else [], "")
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


# ---- a sentence model (issue 21) -------------------------------------------------------------------------------

TREC = REPO.parent / "shared" / "data" / "robustness" / "trec.jsonl.gz"
SENTENCE_BATCH = 64  # texts per request and per in-process call


def sentence_texts(n: int) -> list[str]:
    """``n`` TREC questions when the shared data is there, else synthetic sentences of a small vocabulary."""
    if TREC.is_file():
        import gzip

        with gzip.open(TREC, "rt") as f:
            texts = [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]
        if len(texts) == n:
            return texts
    rng = np.random.default_rng(0)
    words = "what who when where how many city river film year team first largest country invented wrote".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 12)))) + " ?" for _ in range(n)]


def code_agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Share of equal codes and mean Hamming distance (bits, and as a share of the bits) of uint8 (n, n_bytes)."""
    distance = np.unpackbits(a ^ b, axis=1).sum(axis=1)  # (n,)
    n_bits = a.shape[1] * 8
    return {"equal": float((distance == 0).mean()), "mean_hamming": float(distance.mean()),
            "flip_share": float(distance.mean() / n_bits), "max_hamming": int(distance.max())}  # fmt: skip


def inprocess_docs_per_s(hasher: Hasher, texts: list[str], seconds: float) -> float:
    hasher.encode(texts[:SENTENCE_BATCH])  # warm-up: loads the encoder, CUDA kernels
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or done < 3 * SENTENCE_BATCH:
        i = done % max(1, len(texts) - SENTENCE_BATCH)
        hasher.encode(texts[i : i + SENTENCE_BATCH])
        done += SENTENCE_BATCH
    return done / elapsed


def sentence_check(devices: list[str], quick: bool, levels: list[int], seconds: float, max_flip: float) -> dict:
    """The sentence model on each device: in-process and HTTP docs/s, and its codes against the first device's."""
    devices = ["cpu", *[d for d in devices if d != "cpu"]]  # the CPU's fp32 codes are the reference
    texts = sentence_texts(600 if quick else 3000)
    train, compare = texts[:300], texts[-(200 if quick else 1000) :]
    load = [{"inputs": texts[i : i + SENTENCE_BATCH]} for i in range(0, len(texts) - SENTENCE_BATCH, SENTENCE_BATCH)]
    result: dict[str, Any] = {"devices": devices, "batch": SENTENCE_BATCH, "trained_on": len(train),
                              "texts": "trec" if TREC.is_file() else "synthetic", "max_flip": max_flip,
                              "inprocess_torch_threads": torch.get_num_threads()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hasher, _ = fit_hasher(train, "sentence", {"n_bits": 64},
                               TrainConfig(epochs=1, progress=False, seed=0, device="cpu"))  # fmt: skip
        checkpoint.save(workdir / "sentence", hasher)
        codes: dict[str, np.ndarray] = {}
        for device in devices:
            row: dict[str, Any] = result.setdefault(device, {})
            local = checkpoint.load(workdir / "sentence", device)
            row["inprocess_docs_per_s"] = inprocess_docs_per_s(local, texts, seconds)
            codes[device] = local.encode(compare).codes
            del local
            server = start_server(workdir / "sentence", workdir, device)
            try:
                asyncio.run(drive(server.url, load[:4], 2, 0.5))  # warm-up
                for c in levels:
                    row.setdefault("http", {})[str(c)] = asyncio.run(drive(server.url, load, c, seconds))
                chunks = [{"inputs": compare[i : i + SENTENCE_BATCH]} for i in range(0, len(compare), SENTENCE_BATCH)]
                wire = np.array([np.frombuffer(bytes.fromhex(c), np.uint8) for c in encode_all(server.url, chunks)])
            finally:
                server.stop(30)
            row["http_vs_inprocess"] = code_agreement(wire, codes[device])
            http = ", ".join(f"c={c} {r['items_per_s']:,.0f}" for c, r in row["http"].items())
            print(f"sentence {device}: in-process {row['inprocess_docs_per_s']:,.0f} docs/s; HTTP docs/s {http}; "
                  f"HTTP = in-process codes: {row['http_vs_inprocess']['equal']:.2%}", flush=True)  # fmt: skip
            if device != devices[0]:
                row["vs_" + devices[0]] = agree = code_agreement(codes[device], codes[devices[0]])
                print(f"sentence {device} vs {devices[0]}: {agree['equal']:.2%} equal codes, mean Hamming "
                      f"{agree['mean_hamming']:.2f} of 64 bits (max {agree['max_hamming']})", flush=True)  # fmt: skip
    failures = []
    for device in devices:
        row = result[device]
        same = row["http_vs_inprocess"]
        if (device == "cpu" and same["equal"] < 1.0) or same["flip_share"] > max_flip:
            failures.append(f"{device}: HTTP codes differ from in-process ones: {same}")
        cross = row.get("vs_" + devices[0])
        if cross is not None and cross["flip_share"] > max_flip:
            failures.append(f"{device}: codes differ from {devices[0]}'s beyond --max-flip {max_flip}: {cross}")
    if failures:
        raise SystemExit("sentence: " + "; ".join(failures))
    return result


# ---- worker processes (issue 24) --------------------------------------------------------------------------------


def workers_tables(devices: list[str], quick: bool) -> dict[str, Any]:
    """encode_bench.py's pixel table, JSON and binary bodies, against 1 and 2 worker processes on each device."""
    argv = ["--models", "pixels", "--bodies", "json,binary", "--workers", "1,2", "--concurrency", "1,4,16"]
    if quick:
        argv += ["--quick", "--concurrency", "1,4"]
    result = _encode_bench_per_device(devices, argv, "workers, ")
    for device in devices:
        for workers, run in result[device]["models"]["pixels"]["workers"].items():
            if not all(run["codes_match"].values()):
                raise SystemExit(f"pixels on {device}, {workers} workers: HTTP codes differ from in-process")
    return result


def _encode_bench_per_device(devices: list[str], argv: list[str], title: str) -> dict[str, Any]:
    """benchmarks/encode_bench.py with ``argv`` on each device in turn, sharing one model cache (the same
    checkpoints everywhere); each device's table printed as it ends."""
    result: dict[str, Any] = {"devices": devices}
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            cfg = encode_bench.config_from_args(encode_bench.parse_args([*argv, "--device", device]))
            cfg.model_cache = Path(tmp)
            result[device] = encode_bench.run(cfg)
            print(f"\n{title}{device}:\n" + encode_bench.markdown(result[device]), flush=True)
    return result


# ---- the issue 5 table ------------------------------------------------------------------------------------------


def serve_tables(devices: list[str], levels: list[int], seconds: float, quick: bool) -> dict[str, Any]:
    """Each model served on each device: items/s per concurrency level, and the codes compared across devices."""
    result: dict[str, Any] = {"devices": devices, "concurrency": levels, "seconds_per_level": seconds}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        models = build_models(workdir, quick, devices[0])
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
    return result


# ---- the entry point --------------------------------------------------------------------------------------------


def run_parts(parts: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Each part in turn, its result and seconds recorded; a failing part is recorded and the next one runs."""
    result: dict[str, Any] = {}
    ok = True
    for name, part in parts.items():
        print(f"\n==== {name} ====", flush=True)
        start = time.perf_counter()
        try:
            result[name] = part()
        except (Exception, SystemExit) as exc:  # SystemExit: a part's failed check
            ok = False
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(f"{name} FAILED: {exc}", flush=True)
        result[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {result[name]['seconds']} s", flush=True)
    return result, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="cuda,cpu")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="a dry run: small models, 1 s levels")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--encode-bench", action="store_true", help="the encode_bench.py table on each device")
    parser.add_argument("--min-identical", type=float, default=1.0, help="with --encode-bench")
    parser.add_argument("--sentence", action="store_true", help="a sentence model on each device (issue 21)")
    parser.add_argument("--max-flip", type=float, default=0.05, help="with --sentence: most mean Hamming / n_bits")
    parser.add_argument("--workers", action="store_true", help="1 against 2 worker processes on each device")
    parser.add_argument("--all", action="store_true", help="serve, encode-bench, sentence and workers in turn")
    args = parser.parse_args()
    devices = args.devices.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    seconds = 1.0 if args.quick else args.seconds
    parts = {
        "serve": lambda: serve_tables(devices, levels, 3.0 if args.all and not args.quick else seconds, args.quick),
        "encode_bench": lambda: encode_tables(devices, args.quick, args.min_identical),
        "sentence": lambda: sentence_check(devices, args.quick, [1, 4, 16], 1.0 if args.quick else 3.0, args.max_flip),
        "workers": lambda: workers_tables(devices, args.quick),
    }
    chosen = [name for name in ("encode_bench", "sentence", "workers") if getattr(args, name)]
    if not args.all:
        parts = {name: parts[name] for name in chosen or ["serve"]}
    result, ok = run_parts(parts)
    out = result if args.all or len(parts) > 1 else result[next(iter(parts))]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
