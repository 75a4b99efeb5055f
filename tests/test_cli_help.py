"""The CLI reads well: every command's --help renders with its brackets intact (no markup eats them), enumerated
options list their choices (generated from the lists they come from) and refuse others, and FAISS's loader does
not log on every command."""

from __future__ import annotations

import logging
import re

import pytest
import typer
from hamdex.models.bottlenecks import BOTTLENECKS
from hamdex.service.cli import app
from typer.main import get_command
from typer.testing import CliRunner

RUNNER = CliRunner()
COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]


def app_for(command: str) -> typer.Typer:
    """The CLI, or for a command it does not register yet (export, import while being wired in) an app of that
    command alone, so these tests check the command's own options either way."""
    if command in COMMANDS:
        return app
    from hamdex.service import cli_transfer

    alone = typer.Typer(rich_markup_mode=None)
    alone.command(command)(getattr(cli_transfer, f"{command}_cmd"))
    alone.command("_")(lambda: None)  # two commands: the app keeps the command's name on the command line
    return alone


def help_text(*args: str) -> str:
    result = RUNNER.invoke(app_for(args[0]) if args else app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_renders_its_help(command: str) -> None:
    text = help_text(command)
    assert "Usage:" in text and "--help" in text
    assert "[/" not in text and "[bold" not in text  # no markup left raw either


def test_brackets_survive() -> None:
    serve = help_text("serve")
    for env in ("[env HAMDEX_MODEL_PATH]", "[env HAMDEX_COLLECTION_PATH]", "[env HAMDEX_DEVICE]"):
        assert env in serve
    assert "pip install 'hamdex[milvus]'" in help_text("index")


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        ("train", "--bottleneck", BOTTLENECKS),
        ("train", "--featurizer", ("auto", "text", "pixels", "dense", "sentence")),
        ("train", "--readout", ("threshold", "itq")),
        ("train", "--target-features", ("input", "scattering")),
        ("train", "--probe", ("clusters", "neighbours")),
        ("index", "--backend", ("faiss", "milvus")),
        ("train", "--device", ("auto", "cpu", "cuda", "cuda:N")),
        ("serve", "--device", ("auto", "cpu", "cuda", "cuda:N")),
        ("reconstruct", "--noise", ("gaussian", "salt_pepper", "dropout")),
        ("export", "--format", ("ndjson", "parquet")),
        ("import", "--format", ("ndjson", "parquet")),
    ],
)
def test_enumerated_options_list_their_choices(command: str, option: str, choices: tuple[str, ...]) -> None:
    line = next(ln for ln in help_text(command).splitlines() if re.match(rf"\s*(-\w, )?{option}\b", ln))
    assert f"<{'|'.join(choices)}>" in line


@pytest.mark.parametrize(
    "args",
    [
        ["train", "x", "--bottleneck", "nope"],
        ["train", "x", "--featurizer", "audio"],
        ["train", "x", "--device", "gpu"],
        ["index", "x", "--backend", "qdrant"],
        ["eval", "--baselines", "lsh,nope"],
        ["reconstruct", "x", "--mask", "middle"],
        ["export", "x", "--out", "y", "--format", "csv"],
    ],
)
def test_a_value_off_the_list_is_refused_before_any_work(args: list[str]) -> None:
    result = RUNNER.invoke(app_for(args[0]), args)
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_the_cli_knows_every_transfer_format() -> None:
    from hamdex.index import transfer
    from hamdex.service import cli_transfer

    assert cli_transfer.FORMATS == transfer.FORMATS


def test_cuda_n_is_a_device() -> None:
    from hamdex.service.cli_options import check_device

    assert check_device("cuda:3") == "cuda:3"


def test_faiss_loader_is_quiet_unless_verbose() -> None:
    logger = logging.getLogger("faiss.loader")
    logger.setLevel(logging.INFO)  # FAISS's own default: "Loading faiss with AVX2 support." on every command
    RUNNER.invoke(app, ["--verbose", "eval", "--baselines", "nope"])  # any command runs the callback
    assert logger.getEffectiveLevel() == logging.DEBUG
    RUNNER.invoke(app, ["eval", "--baselines", "nope"])
    assert logger.getEffectiveLevel() == logging.WARNING
