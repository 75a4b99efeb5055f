"""Readers that turn a user's data into blocks of records, streamed.

Every format yields :class:`Block` s of at most ``block_size`` items, so memory stays flat however large
the input: ``.npy`` is memory-mapped, parquet read batch by batch, jsonl/csv line by line, IDX files in
chunks of bytes, label folders and tarballs file by file. ``read_all`` concatenates the blocks for training.

Formats (dispatched on suffix or directory layout):

- ``.npy``: 2-d numeric -> float32 vectors, 3-d uint8 -> images; ids are row numbers.
- ``.npz``: ``X`` (or ``vectors`` / ``images`` / ``x``), optional ``ids``, optional ``labels`` / ``y``.
- ``.parquet``: ``id`` (optional), ``text`` or ``vector`` (list of floats), optional ``label``; other
  columns -> metadata.
- ``.jsonl``: objects with ``id`` (optional), ``text`` or ``vector``, optional ``label``, optional
  ``metadata`` dict; other keys are merged into metadata.
- ``.csv``: like jsonl; a vector cell is a JSON list (``"[0.1, 0.2]"``) or space-separated floats. Without a
  ``text`` or ``vector`` column, every column but ``id`` and ``label`` holds one number of the vector (pixel
  columns). A first line of numbers only is data, not a header; ``columns=`` names the columns of such a file.
- ``.jsonl.gz``, ``.csv.gz``: the same, gzip-compressed.
- jsonl, csv and parquet records without ``text`` or ``vector``: the text is read from fields such as ``title``,
  ``description``, ``content`` or ``abstract``, joined (``fields``).
- a directory with one sub-folder per label holding text files (the 20 Newsgroups layout), or image files
  (``.png``, ``.jpg``, ...: grayscale uint8 images of one size, ``images``); a directory of such files alone holds
  unlabelled items, ids their file names.
- IDX images (``*-images-idx3-ubyte[.gz]``, the MNIST / Fashion-MNIST format of LeCun et al.) with their
  ``*-labels-idx1-ubyte[.gz]`` next to them.
- the 20 Newsgroups "bydate" tarball (``20news-bydate.tar.xz``, Jason Rennie's split):
  members ``<split>/<group>/<file>``.

Missing ids default to the item's position ("0", "1", ...) in every format.

Text files are decoded as UTF-8 when they are valid UTF-8, else as latin-1 (see :mod:`models.data.text`).

Bad input raises :class:`DataFormatError` naming the file (and the line or row) and the problem.

Modules: ``block`` (Block, errors, shared helpers), ``fields`` (which fields hold the text), ``dispatch``
(iter_blocks / read_all / count_items by suffix), ``arrays`` (.npy, .npz), ``rows`` (.jsonl, .csv), ``parquet``,
``text`` (label folders, decoding), ``images`` (image files in label folders), ``idx`` (IDX images), ``newsgroups``
(the 20news-bydate tarball and the demo corpus). This file only re-exports.
"""

from hamdex.models.data.arrays import NPZ_INPUT_KEYS, NPZ_LABEL_KEYS
from hamdex.models.data.block import KIND_INPUTS, Block, DataFormatError, DataNotFoundError, Kind, concat_blocks
from hamdex.models.data.dispatch import ItemCounter, Reader, count_items, iter_blocks, read_all
from hamdex.models.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC
from hamdex.models.data.newsgroups import (
    DEMO_CORPUS_ENV,
    DEMO_CORPUS_RELPATH,
    TAR_SUFFIXES,
    Subset,
    demo_corpus_path,
    load_20newsgroups,
    load_demo_corpus,
)
from hamdex.models.data.rows import Row
from hamdex.models.data.text import decode_text, subject_of

__all__ = [
    "DEMO_CORPUS_ENV",
    "DEMO_CORPUS_RELPATH",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "KIND_INPUTS",
    "NPZ_INPUT_KEYS",
    "NPZ_LABEL_KEYS",
    "TAR_SUFFIXES",
    "Block",
    "DataFormatError",
    "DataNotFoundError",
    "ItemCounter",
    "Kind",
    "Reader",
    "Row",
    "Subset",
    "concat_blocks",
    "count_items",
    "decode_text",
    "demo_corpus_path",
    "iter_blocks",
    "load_20newsgroups",
    "load_demo_corpus",
    "read_all",
    "subject_of",
]
