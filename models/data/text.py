"""Text: folders with one sub-folder of text files per label (the 20 Newsgroups layout), and text decoding.

Text files are decoded as UTF-8 when they are valid UTF-8, else as latin-1 (which never fails). No
20 Newsgroups post with non-ASCII bytes is valid UTF-8, so the demo corpus decodes exactly as
scikit-learn's ``fetch_20newsgroups`` (latin-1) does, while users' UTF-8 folders still decode correctly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from hamdex.models.data.block import Block, DataFormatError


def decode_text(raw: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else latin-1 (see the module docstring)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def subject_of(text: str) -> str | None:
    """The ``Subject:`` header of a news post (raw, trimmed), looked for in the header lines only."""
    for line in text.splitlines():
        if not line.strip():
            return None  # end of the headers
        if line[:8].lower() == "subject:":
            return line[8:].strip()
    return None


def _text_metadata(label: str, text: str) -> dict:
    subject = subject_of(text)
    return {"label": label} if subject is None else {"label": label, "subject": subject}


def _visible(name: str) -> bool:
    return not name.startswith(".")  # .DS_Store, editor swap files


def _label_folder_files(root: Path) -> list[tuple[str, list[Path]]]:
    """(label, files) per sub-folder, sorted by name like scikit-learn's ``load_files``."""
    entries = sorted(p for p in root.iterdir() if _visible(p.name))
    stray = [p.name for p in entries if not p.is_dir()]
    if stray or not entries:
        found = f"files at the top level: {stray[:5]}" if stray else "nothing"
        raise DataFormatError(f"{root}: expected one sub-folder per label holding text files, found {found}")
    out = []
    for folder in entries:
        files = sorted(p for p in folder.iterdir() if _visible(p.name))
        nested = [p.name for p in files if not p.is_file()]
        if nested:
            raise DataFormatError(f"{folder}: label folders must hold only files, found folders {nested[:5]}")
        out.append((folder.name, files))
    return out


def _iter_label_folder(root: Path, block_size: int) -> Iterator[Block]:
    yield from _text_blocks(_label_folder_items(root), block_size)


def _label_folder_items(root: Path) -> Iterator[tuple[str, str, str, dict]]:
    for label, files in _label_folder_files(root):
        for file in files:
            text = decode_text(file.read_bytes())
            yield f"{label}/{file.name}", text, label, _text_metadata(label, text)


def _text_blocks(items: Iterator[tuple[str, str, str, dict]], block_size: int) -> Iterator[Block]:
    """(id, text, label, metadata) items -> text blocks."""
    buffer: list[tuple[str, str, str, dict]] = []
    for item in items:
        buffer.append(item)
        if len(buffer) == block_size:
            yield _text_block(buffer)
            buffer = []
    if buffer:
        yield _text_block(buffer)


def _text_block(items: list[tuple[str, str, str, dict]]) -> Block:
    ids, texts, labels, metadata = (list(column) for column in zip(*items, strict=True))
    return Block(ids, texts, labels, metadata, "text")
