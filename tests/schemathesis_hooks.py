"""Schemathesis hooks: the bulk routes' NDJSON body, which their OpenAPI document describes as the array of rows it
holds, sent as one JSON value per line (a value that is not an array, as one line); and a CPython 3.11 workaround.
Loaded by the API tests, and by the schemathesis CLI through the repository's schemathesis.toml (or
``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``).
"""

from __future__ import annotations

import ast
import json
import threading
from typing import Any

import schemathesis

NDJSON = "application/x-ndjson"


def ndjson_lines(value: Any) -> bytes:
    rows = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


@schemathesis.serializer(NDJSON)
def _ndjson(ctx: Any, value: Any) -> bytes:
    return ndjson_lines(value)


# CPython 3.11.7 (this virtualenv's) can fail ast.parse in two threads at once ("SystemError: AST constructor
# recursion depth mismatch", a CPython bug), and Hypothesis parses lambdas' source to describe strategies: with `-w 2`
# schemathesis's workers did, and the run counted it as errors. One parse at a time.
_PARSE_LOCK = threading.Lock()
_parse = ast.parse


def _parse_one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _PARSE_LOCK:
        return _parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time  # type: ignore[assignment]
