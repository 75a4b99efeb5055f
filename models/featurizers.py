"""Featurizers: raw inputs (texts, uint8 images, float vectors) -> model features, with fitted state that is saved
inside the checkpoint so the service accepts the same raw inputs and produces the same codes as offline.

- ``text``: scikit-learn TF-IDF (10k vocabulary, English stop words, sublinear tf), the protocol of VDSH/NASH.
- ``pixels``: uint8 images scaled to [0, 1] and flattened.
- ``dense``: float vectors standardised with the training mean and standard deviation.
- ``sentence``: texts embedded by a local sentence-transformers encoder, then standardised (models.sentence).

Every featurizer validates raw input and raises :class:`InputError` with a machine-readable ``error_type``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from hamdex.models.sentence import SentenceFeaturizer
from sklearn.feature_extraction.text import TfidfVectorizer

Features = np.ndarray | sp.csr_matrix  # float32 (n, d), dense or sparse


class InputError(ValueError):
    """A raw input the featurizer cannot take; ``error_type`` is machine-readable."""

    def __init__(self, message: str, error_type: str = "invalid_input") -> None:
        super().__init__(message)
        self.error_type = error_type


class TextFeaturizer:
    """TF-IDF over the ``max_features`` most frequent words; the reconstruction target for multinomial loss."""

    kind: ClassVar[str] = "text"
    recon: ClassVar[str] = "multinomial"

    def __init__(self, max_features: int = 10_000, vocabulary: list[str] | None = None) -> None:
        self.max_features = max_features
        self._vec = self._vectorizer(vocabulary)

    def _vectorizer(self, vocabulary: list[str] | None) -> TfidfVectorizer:
        return TfidfVectorizer(
            max_features=self.max_features,
            vocabulary=vocabulary,
            sublinear_tf=True,
            stop_words="english",
            dtype=np.float32,
        )

    @property
    def dim(self) -> int:
        return len(self._vec.vocabulary_)

    def fit(self, texts: Sequence[str]) -> TextFeaturizer:
        self._vec.fit(self._check(texts))
        return self

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self._vec.transform(self._check(texts)).astype(np.float32)  # (n, vocab) CSR

    def _check(self, texts: Sequence[Any]) -> list[str]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError("text inputs must be strings", "input_type")
        return list(texts)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        vocab = sorted(self._vec.vocabulary_, key=self._vec.vocabulary_.__getitem__)
        return {"max_features": self.max_features, "vocabulary": vocab}, {"idf": self._vec.idf_.astype(np.float32)}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, np.ndarray]) -> TextFeaturizer:
        feat = cls(params["max_features"], vocabulary=params["vocabulary"])
        feat._vec._validate_vocabulary()  # sets vocabulary_ from the fixed vocabulary, as fit would
        feat._vec.idf_ = tensors["idf"].astype(np.float64)
        return feat


class PixelFeaturizer:
    """uint8 images (n, h, w[, c]) -> float32 (n, h*w*c) in [0, 1]; the shape is fixed at fit time."""

    kind: ClassVar[str] = "pixels"
    recon: ClassVar[str] = "bernoulli"

    def __init__(self, shape: tuple[int, ...] | None = None) -> None:
        self.shape = tuple(shape) if shape is not None else None

    @property
    def dim(self) -> int:
        assert self.shape is not None, "fit first"
        return int(np.prod(self.shape))

    def fit(self, images: np.ndarray | Sequence[Any]) -> PixelFeaturizer:
        arr = np.asarray(images)
        if arr.ndim < 3:
            raise InputError(f"images must be (n, h, w[, c]), got shape {arr.shape}", "input_shape")
        self.shape = tuple(arr.shape[1:])
        return self

    def transform(self, images: np.ndarray | Sequence[Any]) -> np.ndarray:
        arr = _as_array(images, np.float64)
        if arr.ndim < 2 or arr.reshape(len(arr), -1).shape[1] != self.dim:
            raise InputError(f"images must have shape {self.shape} (or {self.dim} values)", "input_shape")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError("pixel values must be in [0, 255]", "input_range")
        return (arr.reshape(len(arr), -1) / 255.0).astype(np.float32)  # (n, h*w*c)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"shape": list(self.shape or ())}, {}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, np.ndarray]) -> PixelFeaturizer:
        return cls(tuple(params["shape"]))


class DenseFeaturizer:
    """float vectors (n, d) standardised with the training statistics."""

    kind: ClassVar[str] = "dense"
    recon: ClassVar[str] = "gaussian"

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        self.mean, self.std = mean, std

    @property
    def dim(self) -> int:
        assert self.mean is not None, "fit first"
        return len(self.mean)

    def fit(self, vectors: np.ndarray | Sequence[Any]) -> DenseFeaturizer:
        arr = _as_array(vectors, np.float64)
        if arr.ndim != 2:
            raise InputError(f"vectors must be (n, d), got shape {arr.shape}", "input_shape")
        self.mean = arr.mean(axis=0).astype(np.float32)
        self.std = np.maximum(arr.std(axis=0), 1e-6).astype(np.float32)  # constant dims stay finite
        return self

    def transform(self, vectors: np.ndarray | Sequence[Any]) -> np.ndarray:
        arr = _as_array(vectors, np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise InputError(f"vectors must have {self.dim} values each", "input_shape")
        return (arr - self.mean) / self.std  # (n, d)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {}, {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, np.ndarray]) -> DenseFeaturizer:
        return cls(tensors["mean"], tensors["std"])


def infer_image_shape(vectors: np.ndarray) -> tuple[int, int] | None:
    """(side, side) when float rows (n, d) look like flattened square grayscale images: d a square of at least
    8 x 8 and every value an integer in 0..255, some above 1 (0/1 rows would be read as near-black pixels); else
    None. Such rows given to the dense featurizer were standardised per pixel and trained like any vector: 4,500
    28 x 28 images as flat rows got one code for every item (issue 18)."""
    arr = np.asarray(vectors)
    if arr.ndim != 2 or not len(arr):
        return None
    side = math.isqrt(arr.shape[1])
    if side < 8 or side * side != arr.shape[1]:
        return None
    low, high = float(arr.min()), float(arr.max())
    if low < 0 or high > 255 or high <= 1 or not np.array_equal(arr, np.round(arr)):
        return None
    return side, side


def _as_array(values: np.ndarray | Sequence[Any], dtype: type) -> np.ndarray:
    """Raw numbers -> a finite numeric array, or an InputError saying what is wrong."""
    if not isinstance(values, np.ndarray) and any(isinstance(v, str) for v in values):
        raise InputError("this model takes numbers, not text", "input_type")
    try:
        arr = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError("inputs must be equal-length lists of numbers", "input_shape") from exc
    if not np.isfinite(arr).all():
        raise InputError("inputs contain NaN or infinite values", "non_finite")
    return arr


Featurizer = TextFeaturizer | PixelFeaturizer | DenseFeaturizer | SentenceFeaturizer
FEATURIZERS: dict[str, type[Featurizer]] = {
    "text": TextFeaturizer,
    "pixels": PixelFeaturizer,
    "dense": DenseFeaturizer,
    "sentence": SentenceFeaturizer,
}


# featurizer kinds whose raw inputs are texts (the others take numbers: images or vectors)
TEXT_INPUT_KINDS = frozenset({"text", "sentence"})


def make_featurizer(kind: str, **options: Any) -> Featurizer:
    """A new featurizer of ``kind``; ``options`` are its constructor's (e.g. sentence: encoder, max_tokens)."""
    if kind not in FEATURIZERS:
        raise ValueError(f"unknown featurizer {kind!r}; choose one of {', '.join(FEATURIZERS)}")
    try:
        return FEATURIZERS[kind](**options)
    except TypeError as exc:  # an option this kind does not take
        raise ValueError(f"featurizer {kind!r} does not take the options {sorted(options)}: {exc}") from exc


def load_featurizer(kind: str, params: dict, tensors: dict[str, np.ndarray]) -> Featurizer:
    return FEATURIZERS[kind].from_state(params, tensors)
