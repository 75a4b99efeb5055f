"""The crash test's runs: random kills under a stream of writes, one crash point, kills during a big batch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.servers import Server, ServerDied
from tests.crash.launchers import Launcher, ServerSpec
from tests.crash.model import Model, Tally, Write, Writer, send
from tests.crash.points import UPSERT_POINTS
from tests.crash.verify import fetch_items, post_search, verify


@dataclass
class Config:
    kills: int = 20
    seed: int = 0
    pool: int = 300  # ids the writes draw from
    max_items: int = 50  # items per upsert: 1..max_items
    delete_fraction: float = 0.2
    min_delay: float = 0.05  # seconds of writes before a kill
    max_delay: float = 0.5
    snapshot_every: int = 200  # 0: the service's default
    index_kind: str = "flat"
    search_sample: int = 10  # codes searched at radius 0 after each restart
    final_clean_restart: bool = True  # after the last kill: SIGTERM, restart, verify again


def _snapshot_on_disk(collection: Path) -> tuple[int | None, bool]:
    """(sequence number the manifest's snapshot reflects, whether a temp file of a write cut short is present)."""
    temp = any(collection.glob(".*.tmp"))
    try:
        entry = json.loads((collection / "manifest.json").read_text("utf-8")).get("snapshot")
        return (int(entry["seq"]) if entry else None), temp
    except (OSError, ValueError, TypeError, KeyError):
        return None, temp


def run_crash_test(
    model_dir: Path,
    work_dir: Path,
    cfg: Config,
    launcher: Launcher,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Kill the server ``cfg.kills`` times under a stream of writes; the summary of :class:`Tally`."""
    start = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    collection = work_dir / "collection"
    tally, lock = Tally(), threading.Lock()
    kill_rng = np.random.default_rng([cfg.seed, 1])
    exact = cfg.index_kind == "flat"
    range_ok = cfg.index_kind != "hnsw"
    model: Model | None = None
    pending: Write | None = None
    server: Server | None = None
    try:
        for round_no in range(cfg.kills + 1):
            spec = ServerSpec(
                model_dir,
                collection,
                work_dir / "server.log",
                snapshot_every=cfg.snapshot_every,
                index_kind=cfg.index_kind,
            )
            server = launcher.start(spec)
            try:
                server.wait_ready()
            except ServerDied as exc:
                tally.problem("corrupted", f"restart {round_no}: {exc}")
                server.kill()
                break
            tally.startup_s.append(server.startup_s)
            if model is None:
                n_bits = httpx.get(server.url + "/info", timeout=30).json()["n_bits"]
                model = Model(
                    cfg.pool, n_bits // 8, np.random.default_rng([cfg.seed, 0]), cfg.max_items, cfg.delete_fraction
                )
            else:
                t = time.monotonic()
                outcome = verify(
                    server.url,
                    model,
                    pending,
                    tally,
                    exact=exact,
                    range_search=range_ok,
                    sample=cfg.search_sample,
                    label=f"restart {round_no}",
                )
                tally.verify_s.append(time.monotonic() - t)
                log(
                    f"restart {round_no:3d}: up in {server.startup_s:5.2f}s; in flight: "
                    f"{pending.describe() if pending else '-'} -> {outcome or '-'}; live {len(model.state)}"
                )
            if round_no == cfg.kills:
                break
            stop = threading.Event()
            writer = Writer(server.url, model, tally, stop, lock)
            writer.start()
            time.sleep(float(kill_rng.uniform(cfg.min_delay, cfg.max_delay)))
            stop.set()
            if not server.alive() or writer.died_unkilled:
                tally.problem("corrupted", f"round {round_no}: server died before the kill:\n{server.log_tail()}")
            server.kill()
            writer.join(60)
            tally.kills += 1
            pending = writer.pending
            if pending is None:
                tally.kills_between_writes += 1
            seq, temp = _snapshot_on_disk(collection)
            if seq is not None:
                tally.snapshots.add(seq)
            tally.kills_mid_snapshot += temp
        if cfg.final_clean_restart and server is not None and server.alive() and model is not None:
            if server.stop(30) is None:
                raise TimeoutError(f"server {server.pid} did not stop within 30 s of SIGTERM")
            server = launcher.start(
                ServerSpec(
                    model_dir,
                    collection,
                    work_dir / "server.log",
                    snapshot_every=cfg.snapshot_every,
                    index_kind=cfg.index_kind,
                )
            )
            server.wait_ready()
            verify(
                server.url,
                model,
                None,
                tally,
                exact=exact,
                range_search=range_ok,
                sample=cfg.search_sample,
                label="clean restart",
            )
            log(f"clean restart: up in {server.startup_s:5.2f}s; live {len(model.state)}")
    finally:
        if server is not None and server.alive():
            server.kill()
    return tally.summary(time.monotonic() - start)


def crash_point_trial(
    model_dir: Path,
    work_dir: Path,
    point: str,
    launcher: Launcher,
    *,
    pool: int = 300,
    batch: int = 200,
    snapshot_every: int = 100,
    nth_snapshot: int = 2,
    seed: int = 0,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Arm one crash point, stream writes until the server kills itself there, restart clean and verify.

    Upsert points fire on the first upsert of ``batch`` items (which replaces some live ones): its outcome must
    be the point's (absent before COMMIT, applied after). Snapshot points fire in the ``nth_snapshot``-th
    background snapshot (the second by default, so that an older snapshot is on disk). The result adds: ``fired``
    (the server logged the crash point), ``outcome`` of the write in flight, ``temp_before_restart`` /
    ``temp_after_restart`` (a snapshot temp file on disk).
    """
    start = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    collection, tally = work_dir / "collection", Tally()
    spec = ServerSpec(
        model_dir,
        collection,
        work_dir / "server.log",
        snapshot_every=snapshot_every,
        crash_point=point,
        crash_at=batch if point in UPSERT_POINTS else nth_snapshot,
    )
    server = launcher.start(spec)
    server.wait_ready()
    n_bits = httpx.get(server.url + "/info", timeout=30).json()["n_bits"]
    model = Model(pool, n_bits // 8, np.random.default_rng(seed), min(50, batch - 1), delete_fraction=0.2)
    pending = None
    with httpx.Client(base_url=server.url, timeout=60) as client:
        deadline = time.monotonic() + timeout
        while pending is None and time.monotonic() < deadline:
            big = point in UPSERT_POINTS and len(model.state) >= pool // 2
            w = model.next_write(size=batch if big else None)
            try:
                resp = send(client, w)
            except httpx.TransportError:
                pending = w
                break
            if not resp.is_success:
                tally.problem("corrupted", f"write {w.n}: HTTP {resp.status_code} {resp.text[:200]}")
                break
            tally.acknowledged += 1
            model.apply(w)
    fired = pending is not None
    server.kill()  # a no-op when it killed itself
    tally.kills += fired
    temp_before = _snapshot_on_disk(collection)[1]
    server = launcher.start(ServerSpec(model_dir, collection, work_dir / "server.log", snapshot_every=snapshot_every))
    try:
        server.wait_ready()
        outcome = verify(server.url, model, pending, tally, exact=True, range_search=True, sample=10, label=point)
        temp_after = _snapshot_on_disk(collection)[1]
    finally:
        server.kill()
    result = tally.summary(time.monotonic() - start)
    crash_log = (work_dir / "server.log").read_text("utf-8", errors="replace")
    result.update(
        point=point,
        fired=fired and f"crash point {point}" in crash_log,
        in_flight=pending.describe() if pending else None,
        outcome=outcome,
        temp_before_restart=temp_before,
        temp_after_restart=temp_after,
    )
    return result


def big_batch_trials(
    model_dir: Path,
    work_dir: Path,
    launcher: Launcher,
    *,
    n: int = 5000,
    kills: tuple[float | str, ...] = (0.25, 0.5, 0.75, *UPSERT_POINTS),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Kill the server while it handles an upsert of ``n`` items (about half of them replacements: ids drawn from
    a pool of 2n); after each restart the batch must be wholly applied or wholly absent.

    Each kill is either a fraction ``f``: SIGKILL ``f`` x (the time an unkilled such upsert took) after sending
    (the reply may come first: ``in_flight`` False, and then the batch must be applied); or an upsert crash point
    (deterministic: the server kills itself before or after the COMMIT, and the outcome must be the point's).
    State is read back in one search with k = 2n (every item, the metadata naming the write of each), /info's
    count and GETs of a sample (codes).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    collection, tally = work_dir / "collection", Tally()
    rng = np.random.default_rng(seed)

    def start(crash_point: str | None = None) -> Server:
        spec = ServerSpec(
            model_dir,
            collection,
            work_dir / "server.log",
            max_batch=n,
            max_k=2 * n,
            snapshot_every=0,
            crash_point=crash_point,
            crash_at=n,
        )
        server = launcher.start(spec)
        server.wait_ready()
        return server

    def post(url: str, w: Write, reply: dict[str, Any]) -> None:
        try:
            with httpx.Client(base_url=url, timeout=120) as c:
                reply["status"] = send(c, w).status_code
        except httpx.TransportError as exc:
            reply["error"] = type(exc).__name__

    server = start()
    n_bits = httpx.get(server.url + "/info", timeout=30).json()["n_bits"]
    model = Model(2 * n, n_bits // 8, rng, max_items=n, delete_fraction=0.0)
    trials = []
    try:
        for _ in range(2):  # the first only inserts; the second (timed) replaces about half
            w, reply = model.next_write(size=n), {}
            t = time.monotonic()
            post(server.url, w, reply)
            upsert_s = time.monotonic() - t
            if reply.get("status") != 200:
                raise RuntimeError(f"unkilled upsert of {n} items: {reply}")
            model.apply(w)
        for kill in kills:
            point = kill if isinstance(kill, str) else None
            if point:
                server.kill()
                server = start(point)
            w, reply = model.next_write(size=n), {}
            thread = threading.Thread(target=post, args=(server.url, w, reply), daemon=True)
            thread.start()
            if point:
                thread.join(120)  # the server kills itself
            else:
                time.sleep(kill * upsert_s)
            server.kill()
            thread.join(120)
            tally.kills += 1
            server = start()
            outcome = _big_batch_outcome(server.url, model, w, tally, rng)
            in_flight = "status" not in reply
            if point:
                ok = in_flight and outcome == UPSERT_POINTS[point]
            else:
                ok = outcome in ("applied", "absent") if in_flight else outcome == "applied"
            trials.append(
                {
                    "kill": kill if point else f"{kill:.2f} x {upsert_s:.3f}s",
                    "in_flight": in_flight,
                    "outcome": outcome,
                    "ok": ok and not tally.problems,
                    "problems": list(tally.problems),
                }
            )
            tally.problems.clear()
    finally:
        server.kill()
    return trials


def _big_batch_outcome(url: str, model: Model, w: Write, tally: Tally, rng: np.random.Generator) -> str:
    """Read every item with one search (k = all), resolve ``w`` all-or-nothing, check a sample of codes by GET."""
    before = model.state
    with httpx.Client(base_url=url, timeout=120) as client:
        k = len(model.pool)
        hits = post_search(client, {"queries": [{"code": "00" * model.n_bytes}], "k": k}, tally, "big batch")
        if hits is None:
            return "torn"
        ids = [h["id"] for h in hits[0]]
        if len(ids) != len(set(ids)):
            tally.problem("corrupted", "big batch: duplicate hits")
        meta = {h["id"]: h["metadata"] for h in hits[0]}
        new_w = [meta.get(i, {}).get("w") == w.n and meta[i] == w.items[i][1] for i in w.items]
        old = [meta.get(i) == (before[i][1] if i in before else None) for i in w.items]
        outcome = "applied" if all(new_w) else "absent" if all(old) else "torn"
        if outcome == "applied":
            model.apply(w)
        want = {i: m for i, (_, m) in model.state.items()}
        if meta != want:
            tally.problem("corrupted", f"big batch ({outcome}): search holds {len(meta)} items, expected {len(want)}")
        sample = rng.choice(sorted(model.state), size=min(100, len(model.state)), replace=False).tolist()
        got, failed = fetch_items(client, sample, tally)
        bad = [i for i in sample if got.get(i) != model.state[i] and i not in failed]
        if bad:
            tally.problem("corrupted", f"big batch ({outcome}): GET disagrees for {bad[:5]}")
        count = client.get("/info").json()["count"]
        if count != len(model.state):
            tally.problem("corrupted", f"big batch: /info count {count}, expected {len(model.state)}")
    return outcome


def make_model(path: Path, n_bits: int = 64) -> Path:
    """A tiny dense checkpoint (random vectors, one epoch, about a second): the server needs one, not its quality."""
    import torch
    from hamdex.models import checkpoint
    from hamdex.models.train import TrainConfig, fit_hasher

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        hasher, _ = fit_hasher(x, "dense", {"n_bits": n_bits, "hidden": (16,)}, TrainConfig(epochs=1, progress=False))
    finally:
        torch.set_num_threads(threads)
    checkpoint.save(path, hasher)
    return path
