"""Metadata filters: their grammar and bounds (:func:`check_filter`), the Python evaluator that defines what they
mean (:func:`matches`), and their translation to an SQLite condition (:func:`filter_sql`).

A filter is an object; each entry is ANDed. ``{"field": value}`` tests equality; ``{"field": {"$op": arg, ...}}``
applies operators to one top-level field (``$eq $ne $in $nin $gt $gte $lt $lte $exists``); ``{"$and": [filters]}``
and ``{"$or": [filters]}`` combine filters. Comparisons are type-strict, as JSON types go: true is not 1, "1" is not
1, null is only null; numbers compare with numbers and strings with strings (by code point), anything else is not
in range. ``$ne`` and ``$nin`` hold for a missing field (they negate ``$eq`` and ``$in``). The bounds below keep a
filter's SQL within SQLite's limits and its evaluation cheap; each is refused with InvalidQueryError (a 422).

The SQL form is built so that SQLite does the selecting and Python re-checks only what SQLite may get wrong: each
node compiles to ``(sup, unc)``, where ``sup`` holds for every row the filter matches and is exact on every row
where ``unc`` is false. A row SQLite selects is re-checked with :func:`matches` when its ``unc`` is true or its JSON
holds a NUL (SQLite's JSON functions end strings there). A negation is ``NOT sup OR unc``, which keeps both
properties. What SQLite cannot compare exactly (a field name JSON escapes, a value with NUL, a number near 2**63 or
beyond) compiles to ``("1", "1")``: every row, decided in Python.
"""

from __future__ import annotations

import math
from itertools import count
from typing import Any

from hamdex.index.errors import InvalidQueryError

MAX_FILTER_DEPTH = 4  # filter objects nested through $and / $or, the outermost counting as 1
MAX_FILTER_TERMS = 4096  # field tests in one filter, each $in / $nin value counting as one (SQL variables < 32766)
MAX_IN_VALUES = 256  # values of one $in / $nin
MAX_BRANCHES = 16  # filters in one $and / $or
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists")
RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
COMBINATORS = ("$and", "$or")

_NUL = "\\u0000"  # how JSON writes a NUL inside a string
HOLDS_NUL = f"instr(metadata, '{_NUL}') > 0"  # a row that may hold a NUL in a field or string


def is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def check_filter(where: object) -> dict[str, Any]:
    """``where`` if it is a filter within the bounds (None: the empty filter), else InvalidQueryError."""
    if where is None:
        return {}
    terms = [0]
    _check_object(where, 1, terms)
    return dict(where)  # type: ignore[call-overload]


def _check_object(where: object, depth: int, terms: list[int]) -> None:
    if not isinstance(where, dict):
        raise InvalidQueryError(f"a filter must be an object of field: condition, got {type(where).__name__}")
    if depth > MAX_FILTER_DEPTH:
        raise InvalidQueryError(f"a filter nests deeper than {MAX_FILTER_DEPTH} levels")
    for key, cond in where.items():
        if key in COMBINATORS:
            if not isinstance(cond, list) or not 0 < len(cond) <= MAX_BRANCHES:
                raise InvalidQueryError(f"{key} takes a list of 1 to {MAX_BRANCHES} filters")
            for sub in cond:
                _check_object(sub, depth + 1, terms)
        elif not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidQueryError(f"filter fields must be non-empty strings not starting with '$', got {key!r}")
        else:
            _check_utf8(key, "filter field")
            _check_condition(key, cond, terms)


def _check_condition(key: str, cond: object, terms: list[int]) -> None:
    if not isinstance(cond, dict):
        _check_value(key, cond, "$eq", terms)
        return
    if not cond:
        raise InvalidQueryError(f"the condition on {key!r} names no operator")
    for op, arg in cond.items():
        if op not in OPERATORS:
            raise InvalidQueryError(f"unknown filter operator {op!r} on {key!r}; operators: {', '.join(OPERATORS)}")
        if op in ("$in", "$nin"):
            if not isinstance(arg, list) or len(arg) > MAX_IN_VALUES:
                raise InvalidQueryError(f"{op} on {key!r} takes a list of at most {MAX_IN_VALUES} values")
            for value in arg:
                _check_value(key, value, op, terms)
        elif op == "$exists":
            if not isinstance(arg, bool):
                raise InvalidQueryError(f"$exists on {key!r} takes true or false")
        else:
            _check_value(key, arg, op, terms)


def _check_value(key: str, value: object, op: str, terms: list[int]) -> None:
    terms[0] += 1
    if terms[0] > MAX_FILTER_TERMS:
        raise InvalidQueryError(f"a filter holds more than {MAX_FILTER_TERMS} tests (each $in value counts)")
    if op in RANGE_OPS:
        if not (isinstance(value, str) or _is_number(value)):
            raise InvalidQueryError(f"{op} on {key!r} takes a number or a string, got {value!r}")
    elif not is_scalar(value):
        raise InvalidQueryError(f"filter value of {key!r} must be a string, number, boolean or null")
    if isinstance(value, float) and math.isnan(value):
        raise InvalidQueryError(f"filter value of {key!r} is NaN, which equals nothing")
    if isinstance(value, str):
        _check_utf8(value, "filter value")


def _check_utf8(text: str, what: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidQueryError(f"{what} {text[:40]!r} holds a lone surrogate (not UTF-8)") from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- the meaning: a Python evaluator ------------------------------------------------------------------------


def matches(metadata: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether ``metadata`` passes the (checked) filter ``where``."""
    for key, cond in where.items():
        if key == "$and":
            ok = all(matches(metadata, sub) for sub in cond)
        elif key == "$or":
            ok = any(matches(metadata, sub) for sub in cond)
        elif isinstance(cond, dict):
            ok = all(_holds(metadata, key, op, arg) for op, arg in cond.items())
        else:
            ok = key in metadata and _equal(metadata[key], cond)
        if not ok:
            return False
    return True


def _holds(metadata: dict[str, Any], key: str, op: str, arg: Any) -> bool:
    present = key in metadata
    have = metadata.get(key)
    if op == "$exists":
        return present == arg
    if op == "$eq":
        return present and _equal(have, arg)
    if op == "$ne":
        return not (present and _equal(have, arg))
    if op == "$in":
        return present and any(_equal(have, v) for v in arg)
    if op == "$nin":
        return not (present and any(_equal(have, v) for v in arg))
    if not present or not _same_kind(have, arg):
        return False
    if op == "$gt":
        return have > arg
    if op == "$gte":
        return have >= arg
    if op == "$lt":
        return have < arg
    return have <= arg


def _equal(have: Any, want: Any) -> bool:
    """Equal by JSON type and value: true is not 1, "1" is not 1 (1 and 1.0 are one number)."""
    return isinstance(have, bool) == isinstance(want, bool) and is_scalar(have) and have == want


def _same_kind(have: Any, want: Any) -> bool:
    if isinstance(want, str):
        return isinstance(have, str)
    return _is_number(have)


def nul_sensitive(where: dict[str, Any]) -> bool:
    """Whether SQLite's answer to ``where`` may differ on a row holding a NUL (its JSON functions cut strings
    there): the filter compares a string somewhere, or negates (a negation's SQL keeps every row holding a NUL).
    A filter of number, boolean, null and ``$exists`` tests alone is decided without looking for NULs."""
    for key, cond in where.items():
        if key in COMBINATORS:
            if any(nul_sensitive(sub) for sub in cond):
                return True
            continue
        tests = cond.items() if isinstance(cond, dict) else [("$eq", cond)]
        for op, arg in tests:
            values = arg if op in ("$in", "$nin") else [arg]
            if op in ("$ne", "$nin") or any(isinstance(v, str) for v in values):
                return True
    return False


# ---- the SQL form -------------------------------------------------------------------------------------------


def filter_sql(where: dict[str, Any], params: dict[str, Any]) -> tuple[str, str]:
    """(sup, unc) SQL conditions over the column ``metadata`` for the checked filter ``where`` (see the module
    docstring); the values they bind are added to ``params``."""
    sup, unc = _Compiler(params).object(where)
    return f"({sup})", f"({unc})"  # whatever the SQL around them, they stay one term each


class _Compiler:
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self._names = count()

    def bind(self, value: Any) -> str:
        name = f"f{next(self._names)}"
        self.params[name] = value
        return f":{name}"

    def object(self, where: dict[str, Any]) -> tuple[str, str]:
        parts = []
        for key, cond in where.items():
            if key == "$and":
                parts.append(_all([self.object(sub) for sub in cond]))
            elif key == "$or":
                parts.append(_any([self.object(sub) for sub in cond]))
            elif isinstance(cond, dict):
                parts.append(_all([self.test(key, op, arg) for op, arg in cond.items()]))
            else:
                parts.append(self.test(key, "$eq", cond))
        return _all(parts)

    def test(self, key: str, op: str, arg: Any) -> tuple[str, str]:
        if "\x00" in key or escaped_in_json(key):
            return "1", "1"  # a JSON path cannot name it exactly: every row, and Python decides
        path = json_path_literal(key)
        t, v = f"json_type(metadata, {path})", f"json_extract(metadata, {path})"
        if op == "$exists":
            return (f"{t} IS NOT NULL" if arg else f"{t} IS NULL"), "0"
        if op == "$eq":
            return self.equal(t, v, arg)
        if op == "$ne":
            return _not(self.equal(t, v, arg))
        if op == "$in":
            return self.one_of(t, v, arg)
        if op == "$nin":
            return _not(self.one_of(t, v, arg))
        if isinstance(arg, str):
            return self.string_range(t, v, op, arg)
        return self.number_range(t, v, op, arg)

    def equal(self, t: str, v: str, value: Any) -> tuple[str, str]:
        if value is None:
            return f"{t} = 'null'", "0"
        if isinstance(value, bool):
            return f"{t} = '{str(value).lower()}'", "0"
        if isinstance(value, str):
            if "\x00" in value:
                return f"{t} = 'text' AND {HOLDS_NUL}", "1"
            return f"{v} = {self.bind(value)} AND {t} = 'text'", "0"
        if not abs(value) < 2**62:  # SQLite reads JSON integers beyond 64 bits as reals: Python decides near there
            return f"{t} IN ('integer', 'real')", "1"
        # within 64 bits, a JSON integer beyond them (an SQL real) equals no number, as in Python. The value first:
        # it rules out most rows, and the type is then read only for the few left
        return f"{v} = {self.bind(value)} AND ({t} = 'real' OR ({t} = 'integer' AND typeof({v}) = 'integer'))", "0"

    def one_of(self, t: str, v: str, values: list[Any]) -> tuple[str, str]:
        """``$in``: plain strings and numbers as one SQL ``IN`` list each (one index search), the rest as tests."""
        strings = [x for x in values if isinstance(x, str) and "\x00" not in x]
        numbers = [x for x in values if _is_number(x) and abs(x) < 2**62]
        rest = [x for x in values if not any(x is y for y in strings + numbers)]
        parts = [self.equal(t, v, x) for x in rest]
        if strings:
            parts.append((f"{v} IN ({', '.join(self.bind(x) for x in strings)}) AND {t} = 'text'", "0"))
        if numbers:
            listed = ", ".join(self.bind(x) for x in numbers)
            parts.append(
                (f"{v} IN ({listed}) AND ({t} = 'real' OR ({t} = 'integer' AND typeof({v}) = 'integer'))", "0")
            )
        return _any(parts)

    def string_range(self, t: str, v: str, op: str, value: str) -> tuple[str, str]:
        """A stored string holding NUL reads as its part before the NUL, which orders as the whole does against
        a value without NUL, unless the two are equal: rows equal to the value are re-checked."""
        if "\x00" in value:
            return "1", "1"
        x = self.bind(value)
        compare = ">=" if op in ("$gt", "$gte") else "<="
        return f"{v} {compare} {x} AND {t} = 'text'", f"{v} = {x}"

    def number_range(self, t: str, v: str, op: str, value: float) -> tuple[str, str]:
        """SQLite compares 64-bit integers exactly but reads JSON reals with its own parser (possibly an ulp off)
        and integers beyond 64 bits as reals: the bound is widened by a band far wider than those errors, and
        rows within the band are re-checked."""
        try:
            x = float(value)
        except OverflowError:
            return "1", "1"
        if math.isinf(x):
            return "1", "1"
        eps = abs(x) * 1e-9 + 1e-290
        if op in ("$gt", "$gte"):
            sup = f"{v} >= {self.bind(x - eps)}"
        else:
            sup = f"{v} <= {self.bind(x + eps)}"
        unc = "1" if not abs(value) < 2**62 else f"abs({v} - {self.bind(x)}) <= {self.bind(eps)}"
        return f"{sup} AND {t} IN ('integer', 'real')", unc


def _all(parts: list[tuple[str, str]]) -> tuple[str, str]:
    return _joined(parts, "AND", ("1", "0"))


def _any(parts: list[tuple[str, str]]) -> tuple[str, str]:
    return _joined(parts, "OR", ("0", "0"))


def _joined(parts: list[tuple[str, str]], op: str, empty: tuple[str, str]) -> tuple[str, str]:
    """``parts`` joined by ``op`` as a balanced tree: SQLite refuses expressions nested 1000 deep, which a chain
    of a few thousand terms would be."""
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]
    half = len(parts) // 2
    (a, ua), (b, ub) = _joined(parts[:half], op, empty), _joined(parts[half:], op, empty)
    return f"({a}) {op} ({b})", _or_unc([ua, ub])


def _not(part: tuple[str, str]) -> tuple[str, str]:
    """Where ``unc`` holds (or the row holds a NUL) the row is kept, for Python to decide."""
    sup, unc = part
    if unc == "1":
        return "1", "1"
    kept = f" OR COALESCE(({unc}), 0)" if unc != "0" else ""
    return f"NOT COALESCE(({sup}), 0){kept} OR {HOLDS_NUL}", unc


def _or_unc(uncs: list[str]) -> str:
    if "1" in uncs:
        return "1"
    uncs = [u for u in uncs if u != "0"]
    return " OR ".join(f"COALESCE(({u}), 0)" for u in uncs) if uncs else "0"


def escaped_in_json(key: str) -> bool:
    """Whether json.dumps writes ``key`` escaped (a quote, a backslash, a control or non-ASCII character): a JSON
    path compares the stored, escaped text, so ``$."é"`` never finds the stored ``"\\u00e9"``."""
    return not key.isascii() or '"' in key or "\\" in key or any(ord(ch) < 0x20 for ch in key)


def json_path_literal(key: str) -> str:
    """The SQL literal of the JSON path to top-level ``key`` (one json.dumps writes unescaped), inlined rather
    than bound so that an expression index on the same text applies."""
    return "'" + f'$."{key}"'.replace("'", "''") + "'"
