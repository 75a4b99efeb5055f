"""The 20 Newsgroups "bydate" tarball (``20news-bydate.tar.xz``, Jason Rennie's split) and the demo corpus.

Members are ``<split>/<group>/<file>``. The demo corpus is the local tarball, else scikit-learn's download.
"""

from __future__ import annotations

import logging
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from hamdex.models.data.block import Block, DataFormatError, DataNotFoundError, _existing
from hamdex.models.data.text import _text_block, _text_blocks, _text_metadata, _visible, decode_text

LOG = logging.getLogger(__name__)

Subset = Literal["train", "test"]

DEMO_CORPUS_ENV = "HAMDEX_DEMO_CORPUS"
DEMO_CORPUS_RELPATH = Path("shared/data/20news-bydate.tar.xz")
TAR_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar")


def _iter_20ng_tar(path: Path, block_size: int) -> Iterator[Block]:
    yield from _text_blocks(_tar_items(path, subset=None), block_size)


def _tar_items(path: Path, subset: str | None) -> Iterator[tuple[str, str, str, dict]]:
    """Stream ``<split>/<group>/<file>`` members in one pass ("r|*": no seeking, no index of members).

    ``subset`` keeps only ``*-<subset>`` splits (metadata {"label", "subject"}); None keeps all and adds
    ``"split"`` to the metadata, since ids alone do not say which split an item came from.
    """
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                item = _tar_item(tar, member, path, subset)
                if item is not None:
                    yield item
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataFormatError(f"{path}: cannot read as a tar archive: {err}") from err


def _tar_item(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, subset: str | None):
    if not member.isfile() or not all(_visible(part) for part in member.name.split("/")):
        return None
    parts = member.name.strip("/").split("/")
    if len(parts) != 3:
        raise DataFormatError(f"{path}: member {member.name!r} is not <split>/<group>/<file> as in 20news-bydate")
    split, group, filename = parts
    split_name = split.rsplit("-", 1)[-1]  # "20news-bydate-train" -> "train"
    if subset is not None and split_name != subset:
        return None
    handle = tar.extractfile(member)
    assert handle is not None  # isfile() members always have data
    text = decode_text(handle.read())
    metadata = _text_metadata(group, text)
    if subset is None:
        metadata["split"] = split_name
    return f"{group}/{filename}", text, group, metadata


def load_20newsgroups(path: str | Path, subset: Subset) -> Block:
    """One split of the 20news-bydate tarball, sorted by (group, file name) whatever the tar order.

    ids "<group>/<file>", labels the group, metadata {"label", "subject"}.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    path = _existing(path)
    start = time.perf_counter()
    items = sorted(_tar_items(path, subset), key=lambda item: _group_file_key(item[0]))
    if not items:
        raise DataFormatError(f"{path}: no members in a '*-{subset}' split")
    LOG.info("read %d %s posts from %s in %.2f s", len(items), subset, path, time.perf_counter() - start)
    return _text_block(items)


def _group_file_key(item_id: str) -> tuple[str, str]:
    group, _, filename = item_id.partition("/")
    return group, filename


def demo_corpus_path() -> Path | None:
    """The 20news-bydate tarball: $HAMDEX_DEMO_CORPUS, else ../shared/data beside the repo or the cwd."""
    env = os.environ.get(DEMO_CORPUS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise DataNotFoundError(f"{DEMO_CORPUS_ENV}={env}: no such file")
        return path
    repo_root = Path(__file__).resolve().parents[2]  # models/data/newsgroups.py -> the repository root
    for base in (repo_root.parent, Path.cwd().parent):
        if (base / DEMO_CORPUS_RELPATH).exists():
            return base / DEMO_CORPUS_RELPATH
    return None


def load_demo_corpus(subset: Subset) -> Block:
    """The 20 Newsgroups split from the local tarball, else downloaded by scikit-learn."""
    path = demo_corpus_path()
    if path is not None:
        return load_20newsgroups(path, subset)
    LOG.info("no local 20news-bydate tarball; asking scikit-learn to fetch 20 Newsgroups (%s)", subset)
    try:
        from sklearn.datasets import fetch_20newsgroups

        bunch = fetch_20newsgroups(subset=subset, remove=(), shuffle=False)
    except Exception as err:  # no network, no sklearn, a broken cache: all mean "no demo corpus"
        raise DataNotFoundError(
            f"20 Newsgroups is not available: no local tarball (set {DEMO_CORPUS_ENV} to a "
            f"20news-bydate.tar.xz, or put it at ../{DEMO_CORPUS_RELPATH} next to the repository) "
            f"and scikit-learn could not fetch it: "
            f"{type(err).__name__}: {err}"
        ) from err
    return _block_from_sklearn(bunch)


def _block_from_sklearn(bunch: Any) -> Block:
    """Map a ``fetch_20newsgroups`` bunch to a Block, with ids "<group>/<file>" as the tarball gives them."""
    filenames = getattr(bunch, "filenames", None)
    items = []
    for index, (text, target) in enumerate(zip(bunch.data, bunch.target, strict=True)):
        group = bunch.target_names[int(target)]
        # The file name (the post number) matches the tarball's ids; the index is the fallback if absent.
        name = Path(str(filenames[index])).name if filenames is not None else str(index)
        items.append((f"{group}/{name}", text, group, _text_metadata(group, text)))
    return _text_block(items)
