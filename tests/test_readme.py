"""The README's examples run, and every relative link of the README and docs/ resolves.

A code block preceded by the marker ``<!-- readme-test: run -->`` is run, in the README's order, against one real
server (uvicorn in a thread, on a free port) serving a tiny seeded 32-bit text model, the demo model's width, so
the examples' codes fit it. ``bash`` blocks run under ``set -euo pipefail`` with ``localhost:8000`` pointed at that
server and ``curl`` failing on any HTTP error; ``python`` blocks run in a subprocess. Both run in a folder whose
``var/model`` is that model. A block that fails, or a marker that loses its block, fails the test.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from hamdex.models import checkpoint
from hamdex.models.train import fit_hasher
from hamdex.service.app import create_app

from tests.conftest import TRAIN, settings_for, synthetic_texts
from tests.helpers import server_thread

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = "<!-- readme-test: run -->"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
DEMO_URL = re.compile(r"(?:http://)?(?:localhost|127\.0\.0\.1):8000")
CURL = 'curl() { command curl --fail-with-body --silent --show-error --max-time 60 "$@"; }\n'
BLOCK_TIMEOUT_S = 120


class Block(NamedTuple):
    line: int  # of the opening fence, 1-based
    lang: str
    code: str


def marked_blocks(text: str) -> list[Block]:
    """Every code block whose opening fence follows the marker (blank lines between them allowed)."""
    blocks = []
    for match in re.finditer(re.escape(MARKER), text):
        fence = FENCE.match(text, re.compile(r"\s*").match(text, match.end()).end())
        line = text.count("\n", 0, match.start()) + 2
        if fence is None:
            raise AssertionError(f"README.md:{line - 1}: {MARKER} is not followed by a code block")
        blocks.append(Block(line, fence.group(1), fence.group(2)))
    return blocks


BLOCKS = marked_blocks(README.read_text())


def test_the_readme_marks_its_examples() -> None:
    langs = [b.lang for b in BLOCKS]
    assert langs.count("bash") >= 3 and "python" in langs, langs
    assert set(langs) <= {"bash", "python"}, f"a marked block in a language this test cannot run: {langs}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``var/model``: a 32-bit text model trained in about a second, as the demo's layout has it."""
    root = tmp_path_factory.mktemp("readme")
    hasher, _ = fit_hasher(synthetic_texts(), "text", {"n_bits": 32, "hidden": (32,)}, TRAIN)
    checkpoint.save(root / "var" / "model", hasher)
    return root


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[str]:
    """The base URL of a real HTTP server (uvicorn, in a thread of this process) on that model."""
    settings = settings_for(workdir / "var" / "model", workdir / "server")
    with server_thread(create_app(settings)) as url:
        yield url


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # where `hamdex` is installed
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}-{b.lang}" for b in BLOCKS])
def test_readme_example_runs(block: Block, server: str, workdir: Path) -> None:
    """Each marked block, in the README's order (later blocks may use what earlier ones wrote)."""
    code = DEMO_URL.sub(server, block.code)
    if block.lang == "bash":
        cmd = ["bash", "-c", "set -euo pipefail\n" + CURL + code]
    else:
        cmd = [sys.executable, "-c", code]
    done = subprocess.run(
        cmd, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, (
        f"README.md:{block.line} ({block.lang}) failed with status {done.returncode}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )


# [text](target) and ![alt](target), outside code; the target ends at whitespace or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = CODE.sub("", path.read_text())
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    """Every relative link points at an existing file, and an anchor into a markdown file at one of its headings."""
    broken = []
    for target in LINK.findall(CODE.sub("", doc.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def synopsis_lines(text: str) -> list[str]:
    """The command lines of the README's CLI synopsis: the first bash block under "The command line"."""
    section = text.split("## The command line", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("hamdex ")]


def test_the_cli_synopsis_names_only_real_commands_and_options() -> None:
    """The synopsis needs data files and minutes of training to run; what drifts in it is a command or a flag, so
    each line's command must exist and each of its flags must be one of that command's options."""
    import typer
    from hamdex.service.cli import app

    group = typer.main.get_command(app)  # a click group (typer's own click)
    lines = synopsis_lines(README.read_text(encoding="utf-8"))
    assert len(lines) >= 10
    for line in lines:
        name = line.split()[1]
        assert name in group.commands, f"no command {name!r}: {line}"
        options = {opt for param in group.commands[name].params for opt in (*param.opts, *param.secondary_opts)}
        for flag in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", line):
            assert flag in options, f"{flag} is not an option of hamdex {name}: {line}"
