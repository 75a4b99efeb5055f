"""The crash test's fault-injection harness (issue 4): SIGKILL a real server at random moments, or at one exact
step (a crash point), while a client streams writes; restart it and check over HTTP that every acknowledged write
survived and every write in flight at the kill is all-or-nothing.

``lost`` counts acknowledged writes not reflected; ``corrupted`` any other inconsistency (half-applied batch,
duplicate or stale hit, wrong count, an unexpected HTTP error, a server that fails to restart or dies unkilled).
Used by tests/test_crash.py and by ``python benchmarks/crash.py`` (the long run).

launchers.py starts servers (exec / fork), points.py holds the crash points, model.py the client's expected
state and writer, verify.py the checks after a restart, trials.py the runs.
"""

from tests.crash.launchers import ExecLauncher, ForkLauncher, Launcher, ServerSpec, make_launcher
from tests.crash.model import Model, State, Tally, Write, send
from tests.crash.points import CRASH_POINTS, SNAPSHOT_POINTS, UPSERT_POINTS
from tests.crash.trials import Config, big_batch_trials, crash_point_trial, make_model, run_crash_test
from tests.crash.verify import resolve_pending, verify

__all__ = [
    "CRASH_POINTS",
    "SNAPSHOT_POINTS",
    "UPSERT_POINTS",
    "Config",
    "ExecLauncher",
    "ForkLauncher",
    "Launcher",
    "Model",
    "ServerSpec",
    "State",
    "Tally",
    "Write",
    "big_batch_trials",
    "crash_point_trial",
    "make_launcher",
    "make_model",
    "resolve_pending",
    "run_crash_test",
    "send",
    "verify",
]
