"""A benchmark's output: its log lines, the tables it prints, JSON (no NaN or infinity: null instead) and markdown."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (dict keys become strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(results), indent=2, allow_nan=False) + "\n")


def setup_logging(*quiet: str) -> None:
    """INFO lines with the time to stderr; the loggers named in ``quiet`` (a line per request...) WARNING only."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def publish(results: dict[str, Any], text: str, json_path: Path | None, md_path: Path | None) -> None:
    """Print the tables; write the ``--json`` and ``--md`` files where asked for."""
    print(text)
    if json_path:
        write_json(results, json_path)
    if md_path:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(text.lstrip() + "\n")
