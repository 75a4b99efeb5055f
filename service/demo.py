"""The demo that ``make serve`` runs: a 20 Newsgroups model and collection, built when missing.

The model trains on the training posts of the bundled corpus (see models.data.demo_corpus_path) and the collection
holds those posts with metadata ``{"label": <newsgroup>, "subject": <subject line>}``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hamdex.index import Collection
from hamdex.models import checkpoint, data
from hamdex.models.presets import preset
from hamdex.models.train import TrainConfig, fit_hasher
from hamdex.service.bulk.job import index_blocks, split_block

LOG = logging.getLogger(__name__)

DEMO_BITS = 32  # the text preset (models/presets.py) at 32 bits


def ensure_demo(model_path: Path, collection_path: Path, *, device: str = "auto", progress: bool = True) -> None:
    """Train the demo model if none exists at model_path; index the training posts if the collection is empty."""
    corpus = None
    if not (model_path / checkpoint.META).exists():
        corpus = data.load_demo_corpus("train")
        LOG.info("no model at %s: training the 20 Newsgroups demo model on %d posts", model_path, len(corpus.ids))
        model_over, train_over = preset("text", DEMO_BITS)
        cfg = TrainConfig(device=device, progress=progress, **train_over)
        hasher, _ = fit_hasher(corpus.inputs, "text", {**model_over, "n_bits": DEMO_BITS}, cfg)
        checkpoint.save(model_path, hasher)
    hasher = checkpoint.load(model_path, device)
    with Collection.open_or_create(collection_path, hasher.n_bits, hasher.fingerprint) as collection:
        if len(collection) == 0:
            corpus = corpus or data.load_demo_corpus("train")
            LOG.info("indexing %d demo posts into %s", len(corpus.ids), collection_path)
            index_blocks(split_block(corpus, 2048), hasher, collection, total=len(corpus.ids), progress=progress)
