"""Where an item's text is when it has no ``text`` field: the layouts of common labelled text sets.

Text data sets as people download them rarely name their text ``text``: news sets have ``Title`` and
``Description``, encyclopedia sets ``title`` and ``content``, review sets ``summary`` and ``review``. A record
(jsonl object, csv row, parquet row) with neither ``text`` nor ``vector`` (nor the HTTP row's ``input``) takes its
text from the fields named below, matched without regard to case and joined in this order, a heading first: one
rule for every reader, so ``hamdex train``, ``eval`` and ``index`` read such a file alike, with nothing to pass.
Fields read as text are not kept as metadata, as ``text`` is not.
"""

from __future__ import annotations

from collections.abc import Iterable

# heading-like fields first, then body-like ones; an item's text is the non-empty ones joined by a blank line.
# Not "subject": tables of measurements name their subject ids so, and a numeric-looking id would become the text
TEXT_FIELDS = (
    "title",
    "headline",
    "question",
    "summary",
    "abstract",
    "description",
    "content",
    "body",
    "document",
    "sentence",
    "review",
    "message",
)
# the fields that name an item's input outright: where one of them is present, no text field is looked for
INPUT_FIELDS = ("text", "vector", "input")


def text_fields(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that hold an item's text, in :data:`TEXT_FIELDS`' order ([] where ``names``
    has an input field of its own, or none of these)."""
    names = list(names)
    if any(name in INPUT_FIELDS for name in names):
        return []
    by_lower = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)  # the first spelling wins where two differ only in case
    return [by_lower[field] for field in TEXT_FIELDS if field in by_lower]


def joined_text(values: Iterable[object]) -> str:
    """The text of one item from its text fields' values: the non-empty strings, joined by a blank line."""
    return "\n\n".join(v.strip() for v in values if isinstance(v, str) and v.strip())


def describe(fields: list[str]) -> str:
    """'title' and 'content' -> "'title' and 'content'" (for the log line that says where the text came from)."""
    quoted = [repr(f) for f in fields]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
