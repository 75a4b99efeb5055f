"""The ``filter`` of a request: validated by :func:`index.filters.check_filter` (a 422 with its reason), and
described in the OpenAPI document as the grammar it accepts, nesting unrolled to MAX_FILTER_DEPTH levels (JSON Schema
tools generate from it; a recursive reference would let them nest past the bound). The bound on the number of tests
(MAX_FILTER_TERMS) is said in words: JSON Schema cannot count across a tree."""

from __future__ import annotations

from typing import Annotated, Any

from hamdex.index.filters import (
    COMBINATORS,
    MAX_BRANCHES,
    MAX_FILTER_DEPTH,
    MAX_FILTER_TERMS,
    MAX_IN_VALUES,
    RANGE_OPS,
    check_filter,
)
from pydantic import AfterValidator, WithJsonSchema

SCALAR: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
_VALUES = {"type": "array", "items": SCALAR, "maxItems": MAX_IN_VALUES}
CONDITION: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "$eq": SCALAR,
        "$ne": SCALAR,
        "$in": _VALUES,
        "$nin": _VALUES,
        **{op: {"anyOf": [{"type": "string"}, {"type": "number"}]} for op in RANGE_OPS},
        "$exists": {"type": "boolean"},
    },
}
DESCRIPTION = (
    "Only items whose metadata passes this filter. Each entry must hold: `{field: value}` (equal, by JSON type: "
    'true is not 1, "1" is not 1), `{field: {op: arg, ...}}` with `$eq $ne $in $nin $gt $gte $lt $lte $exists` '
    "(ranges compare numbers with numbers and strings with strings; `$ne` / `$nin` hold for a missing field), "
    f"`$and` / `$or`: lists of filters. Bounds: nesting {MAX_FILTER_DEPTH} levels, {MAX_FILTER_TERMS} tests in all "
    f"(each `$in` value counts), {MAX_IN_VALUES} values per `$in`, {MAX_BRANCHES} filters per `$and` / `$or`. "
    "No lone surrogates."
)


def _filter_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "propertyNames": {"minLength": 1, "pattern": "^[^$]" if depth == MAX_FILTER_DEPTH else "^[^$]|^\\$(and|or)$"},
        "additionalProperties": {"anyOf": [SCALAR, CONDITION]},
    }
    if depth < MAX_FILTER_DEPTH:
        branches = {"type": "array", "minItems": 1, "maxItems": MAX_BRANCHES, "items": _filter_schema(depth + 1)}
        schema["properties"] = dict.fromkeys(COMBINATORS, branches)
    return schema


def filter_schema() -> dict[str, Any]:
    """The filter's JSON Schema, described."""
    return {**_filter_schema(1), "description": DESCRIPTION}


def _checked(where: dict[str, Any]) -> dict[str, Any]:
    return check_filter(where)  # InvalidQueryError is a ValueError: pydantic answers 422 with its message


Filter = Annotated[dict[str, Any], AfterValidator(_checked), WithJsonSchema(filter_schema())]
