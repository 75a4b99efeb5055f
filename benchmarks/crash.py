"""Crash test (issue 4): SIGKILL a real server at random moments while a client streams writes, restart it, and
check over HTTP that every acknowledged write survived and every write in flight at the kill is all-or-nothing.

One run: start the server on a fresh collection; a client thread streams random upserts (batches of 1..50 items
with random hex codes and small metadata, ids from a bounded pool so most are replacements) and single-id deletes;
0.05..0.5 s after the client starts the server's process group gets SIGKILL (so kills land mid-request and, with a
small snapshot interval, now and then mid-snapshot). After each restart the client checks the server against its
model of the expected state (tests/crash/verify.py): every acknowledged write reflected exactly; the write in
flight at the kill wholly applied or wholly absent; no duplicate or stale search hit; /info's count right.

``lost`` counts acknowledged writes not reflected; ``corrupted`` any other inconsistency (half-applied batch,
duplicate or stale hit, wrong count, an unexpected HTTP error, a server that fails to restart or dies unkilled).
Exit status 1 when either is non-zero.

    python benchmarks/crash.py --kills 100 --json var/crash.json
    python benchmarks/crash.py --kills 20 --launcher fork -v       # fast restarts (forked from a warm process)

Launchers. ``exec`` (default) starts every server as a new ``hamdex serve`` process (``python -m hamdex.service.cli
serve``), the way production does; start-up (imports of torch, scikit-learn, FAISS) takes 3-6 s on a busy 2-core
machine. ``fork`` imports all that once in a helper process and forks each server from it: the same
``create_app`` + ``uvicorn.run`` as ``hamdex serve``, in its own process and process group, on the same files,
starting in well under a second; tests/test_crash.py uses it to fit 20+ kills in its time budget.

``--snapshot-every N`` (default 200) sets the server's ``HAMDEX_SNAPSHOT_EVERY`` (the service's default, 100,000
changed items, is never reached in a crash test), so snapshots, and kills during them, happen; ``0`` keeps the
service's default.

Crash points (``--crash-point``, and tests/test_crash.py) make the server SIGKILL itself at one exact step instead:
inside an upsert's SQLite transaction before COMMIT, right after the COMMIT, or in a background snapshot (temp file
written; snapshot renamed but manifest not yet replaced; manifest replaced but store not yet pruned).

The harness itself is the test utility in tests/crash/; this script is its command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/crash.py: the repository root, for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

from tests.crash import CRASH_POINTS, Config, crash_point_trial, make_launcher, make_model, run_crash_test  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs (default 100)")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collection", type=Path, help="work directory for the collection (must not exist)")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: train a tiny 64-bit one)")
    parser.add_argument("--launcher", choices=["exec", "fork"], default="exec", help="see above (default exec)")
    parser.add_argument("--pool", type=int, default=500, help="ids writes draw from (default 500)")
    parser.add_argument("--snapshot-every", type=int, default=200, help="0: the service's default (100,000)")
    parser.add_argument("--index-kind", default="flat", help="flat, ivf, hnsw, hash or multihash")
    parser.add_argument("--crash-point", choices=CRASH_POINTS, help="instead of random kills: one crash-point trial")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per restart")
    return parser.parse_args(argv)


def format_table(summary: dict[str, Any]) -> str:
    rows = [(k, summary[k]) for k in ("kills", "acknowledged", "lost", "corrupted")]
    rows += [(k, summary[k]) for k in ("in_flight_applied", "in_flight_absent", "seconds")]
    rows += [(k, v) for k, v in summary["details"].items() if k != "problems"]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def _work_dir(collection: Path | None) -> Iterator[Path]:
    if collection is not None:
        if collection.exists() and any(collection.iterdir()):
            raise SystemExit(f"{collection} exists and is not empty: the crash test needs a fresh collection")
        collection.mkdir(parents=True, exist_ok=True)
        yield collection
        return
    path = Path(tempfile.mkdtemp(prefix="hamdex-crash-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = print if args.verbose else (lambda _: None)
    with _work_dir(args.collection) as work:
        model_dir = args.model or make_model(work / "model")
        launcher = make_launcher(args.launcher)
        try:
            if args.crash_point:
                summary = crash_point_trial(model_dir, work / "run", args.crash_point, launcher, seed=args.seed)
            else:
                cfg = Config(
                    kills=args.kills,
                    seed=args.seed,
                    pool=args.pool,
                    snapshot_every=args.snapshot_every,
                    index_kind=args.index_kind,
                )
                summary = run_crash_test(model_dir, work / "run", cfg, launcher, log)
        finally:
            launcher.close()
        summary["details"]["launcher"] = args.launcher
        print(format_table(summary))
        for problem in summary["details"]["problems"]:
            print("  " + problem.replace("\n", "\n    "))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        failed = summary["lost"] > 0 or summary["corrupted"] > 0
        if failed and args.collection is None:
            kept = Path(tempfile.mkdtemp(prefix="hamdex-crash-failed-"))
            shutil.copytree(work, kept, dirs_exist_ok=True)
            print(f"work directory kept in {kept}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
