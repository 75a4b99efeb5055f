"""tests/ci_skips.py: with CI set an unexpected skip fails the run, an allowed one does not; outside CI skips pass.
Each case is a pytest run in a subprocess on a tiny test file, with the hooks loaded as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = """
import pytest

def test_skipped():
    pytest.skip("no such extra")

def test_allowed():
    pytest.skip("expected here: a skip the allow-list names")

def test_allowed_but_not_now():
    pytest.skip("expected elsewhere: its condition does not hold")

@pytest.mark.xfail(reason="a known bug")
def test_xfail():
    assert False

def test_passes():
    pass
"""
# the allow-list, as a test file's conftest extends it
CONFTEST = """
from tests import ci_skips

ci_skips.ALLOWED.append(ci_skips.Allowed("expected here", lambda: True, "the test of the hook"))
ci_skips.ALLOWED.append(ci_skips.Allowed("expected elsewhere", lambda: False, "the test of the hook"))
"""
MODULE_SKIP = 'import pytest\n\npytest.importorskip("no_such_module_anywhere")\n\ndef test_never():\n    pass\n'


def _run(tmp_path: Path, ci: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # hypothesis, schemathesis...: seconds to load, not needed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-p", "no:cacheprovider", "-rA", "-q"]
    cmd += ["--rootdir", str(tmp_path), "-c", os.devnull, *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_tiny.py").write_text(TESTS)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    return tmp_path


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_an_unexpected_skip_fails(project: Path, ci: str) -> None:
    run = _run(project, ci, "test_tiny.py")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED test_tiny.py::test_skipped" in run.stdout
    assert "FAILED test_tiny.py::test_allowed_but_not_now" in run.stdout  # named, but its condition is false
    assert "SKIPPED [1] test_tiny.py" in run.stdout and "expected here" in run.stdout  # allowed: still a skip
    assert "2 failed, 1 passed, 1 skipped, 1 xfailed" in run.stdout, run.stdout


def test_in_ci_a_module_level_importorskip_fails(project: Path) -> None:
    run = _run(project, "true", "test_module_skip.py")
    assert run.returncode != 0 and "no_such_module_anywhere" in run.stdout, run.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_skips_are_skips(project: Path, ci: str | None) -> None:
    run = _run(project, ci)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 4 skipped, 1 xfailed" in run.stdout, run.stdout
