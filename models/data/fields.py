"""Where an item's input is when it has no ``text`` or ``vector`` field: the layouts of common data sets.

Text data sets as people download them rarely name their text ``text``: news sets have ``Title`` and
``Description``, encyclopedia sets ``title`` and ``content``, review sets ``summary`` and ``review``. A record
(jsonl object, csv row, parquet row) with neither ``text`` nor ``vector`` (nor the HTTP row's ``input``) takes its
text from the fields named below, matched without regard to case and joined in this order, a heading first: one
rule for every reader, so ``hamdex train``, ``eval`` and ``index`` read such a file alike, with nothing to pass.
Fields read as text are not kept as metadata, as ``text`` is not. Likewise an ``embedding`` (or ``embeddings``)
field, what embedding exports call it, is the item's vector.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

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
# what embedding exports call an item's vector; before the text fields: a record with an embedding and a title
# brought the embedding to be searched, the title to be shown
VECTOR_FIELDS = ("embedding", "embeddings")
# the fields that name an item's input outright: where one of them is present, no other field is looked for
INPUT_FIELDS = frozenset({"text", "vector", "input"})


class Found(NamedTuple):
    """Where a record without an input field of its own has its input."""

    vector: str | None  # the field that holds its vector under another name (VECTOR_FIELDS)
    text: list[str]  # else the fields that hold its text, in TEXT_FIELDS' order

    def __bool__(self) -> bool:
        return self.vector is not None or bool(self.text)

    def describe(self) -> str:
        """What the reader logs: where each item's input comes from."""
        if self.vector is not None:
            return f"no 'vector' field; each item's vector is its {self.vector!r}"
        return f"no 'text' field; each item's text is {describe(self.text)}, joined"


def input_fields(names: Iterable[str]) -> Found:
    """Where the records with these field names have their input (nothing found where they have an input field
    of their own), matched without regard to case: a vector field first, else the text fields."""
    names = list(names)
    if not INPUT_FIELDS.isdisjoint(names):
        return Found(None, [])
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)  # the first spelling wins where two differ only in case
    vector = next((by_lower[field] for field in VECTOR_FIELDS if field in by_lower), None)
    return Found(vector, [] if vector else [by_lower[field] for field in TEXT_FIELDS if field in by_lower])


def joined_text(values: Iterable[object]) -> str:
    """The text of one item from its text fields' values: the non-empty strings, joined by a blank line."""
    return "\n\n".join(v.strip() for v in values if isinstance(v, str) and v.strip())


def describe(fields: list[str]) -> str:
    """'title' and 'content' -> "'title' and 'content'" (for the log line that says where the text came from)."""
    quoted = [repr(f) for f in fields]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
