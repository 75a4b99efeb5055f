"""Text: folders with one sub-folder of text files per label (the 20 Newsgroups layout; of images: models.data.images),
and text decoding.

Text files are decoded as UTF-8 when they are valid UTF-8, else as latin-1 (which never fails). No
20 Newsgroups post with non-ASCII bytes is valid UTF-8, so the demo corpus decodes exactly as
scikit-learn's ``fetch_20newsgroups`` (latin-1) does, while users' UTF-8 folders still decode correctly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from hamdex.models.data.block import Block, DataFormatError, _folder_item_id
from hamdex.models.data.images import IMAGE_SUFFIXES, image_blocks, is_image


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


def _text_metadata(label: str | None, text: str) -> dict:
    subject = subject_of(text)
    return {
        **({} if label is None else {"label": label}),
        **({} if subject is None else {"subject": subject}),
    }


_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})  # what Windows leaves in folders of images


def _visible(name: str) -> bool:
    return not name.startswith(".") and name.lower() not in _SYSTEM_FILES  # .DS_Store, editor swap files


def _label_folder_files(root: Path) -> list[tuple[str | None, list[Path]]]:
    """(label, files) per sub-folder, sorted by name like scikit-learn's ``load_files``; a folder of files only is
    one unlabelled group, (None, files)."""
    entries = sorted(p for p in root.iterdir() if _visible(p.name))
    stray = [p.name for p in entries if not p.is_dir()]
    if entries and len(stray) == len(entries):
        return [(None, entries)]  # no label folders: unlabelled items
    if stray or not entries:
        found = f"files beside the label folders: {stray[:5]}" if stray else "nothing"
        raise DataFormatError(
            f"{root}: expected one sub-folder per label holding text files or images (or the files alone), found "
            f"{found}"
        )
    out = []
    for folder in entries:
        files = sorted(p for p in folder.iterdir() if _visible(p.name))
        nested = [p.name for p in files if not p.is_file()]
        if nested:
            raise DataFormatError(f"{folder}: label folders must hold only files, found folders {nested[:5]}")
        out.append((folder.name, files))
    return out


def _iter_label_folder(root: Path, block_size: int) -> Iterator[Block]:
    """Label folders of text files, or of images (models.data.images); a tree of both is an error."""
    folders = _label_folder_files(root)
    files = [file for _, in_folder in folders for file in in_folder]
    images = [file for file in files if is_image(file)]
    if images and len(images) < len(files):
        other = next(file for file in files if not is_image(file))
        raise DataFormatError(
            f"{root}: label folders mix {len(images)} images and {len(files) - len(images)} other files (e.g. "
            f"{other}); give images or text files"
        )
    if images:
        yield from image_blocks(folders, block_size)
    else:
        yield from _text_blocks(_label_folder_items(folders), block_size)


def _label_folder_items(folders: list[tuple[str | None, list[Path]]]) -> Iterator[tuple[str, str, str | None, dict]]:
    for label, files in folders:
        for file in files:
            raw = file.read_bytes()
            if b"\x00" in raw:  # no text file holds NUL bytes: a binary file would train on garbage
                raise DataFormatError(
                    f"{file}: a binary file, not text; label folders hold text files or images "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))})",
                    "input_type",
                )
            text = decode_text(raw)
            yield _folder_item_id(label, file), text, label, _text_metadata(label, text)


def _text_blocks(items: Iterator[tuple[str, str, str | None, dict]], block_size: int) -> Iterator[Block]:
    """(id, text, label, metadata) items -> text blocks."""
    buffer: list[tuple[str, str, str | None, dict]] = []
    for item in items:
        buffer.append(item)
        if len(buffer) == block_size:
            yield _text_block(buffer)
            buffer = []
    if buffer:
        yield _text_block(buffer)


def _text_block(items: list[tuple[str, str, str | None, dict]]) -> Block:
    ids, texts, labels, metadata = (list(column) for column in zip(*items, strict=True))
    return Block(ids, texts, labels, metadata, "text")
