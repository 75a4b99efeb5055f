"""Options the CLI's modules share (service.cli, service.cli_decode): the device, checked as a choice would be."""

from __future__ import annotations

import re
from typing import Annotated

import typer

DEVICE_METAVAR = "<auto|cpu|cuda|cuda:N>"


def check_device(value: str | None) -> str | None:
    """auto, cpu, cuda or cuda:N (a choice list cannot hold every GPU index)."""
    if value is None or value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")


DeviceOpt = Annotated[
    str, typer.Option(callback=check_device, metavar=DEVICE_METAVAR, help="auto: CUDA when available.")
]
