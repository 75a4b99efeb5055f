"""Models by name, each loaded on first use and then cached (one Hasher per name).

The name ``default`` is the checkpoint at ``HAMDEX_MODEL_PATH``; any other name is a checkpoint directory
``HAMDEX_MODELS_DIR/<name>`` (names follow the collection-name rule, so a name is one plain path component).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from hamdex.index.registry import NAME_PATTERN
from hamdex.models import checkpoint
from hamdex.models.hasher import Hasher
from hamdex.service.errors import ApiError

LOG = logging.getLogger(__name__)

DEFAULT = "default"


class Hashers:
    def __init__(self, default_path: Path, models_dir: Path, device: str) -> None:
        self.default_path, self.models_dir, self.device = Path(default_path), Path(models_dir), device
        self._lock = threading.Lock()  # guards the two dicts
        self._loaded: dict[str, Hasher] = {}
        self._name_locks: dict[str, threading.Lock] = {}

    def path(self, name: str) -> Path:
        """The checkpoint directory of model ``name``; ``model_not_found`` when there is no checkpoint there."""
        if name == DEFAULT:
            return self.default_path
        path = self.models_dir / name if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else None
        if path is None or not (path / checkpoint.META).is_file():
            raise ApiError("model_not_found", f"no model named {name!r} (no checkpoint in {self.models_dir})")
        return path

    def loaded(self, name: str) -> Hasher | None:
        """The model called ``name`` if it is loaded, else None."""
        with self._lock:
            return self._loaded.get(name)

    def get(self, name: str) -> Hasher:
        """The model called ``name``, loaded once; concurrent first calls load it once between them."""
        with self._lock:
            hasher = self._loaded.get(name)
        if hasher is not None:
            return hasher
        path = self.path(name)
        with self._lock:
            name_lock = self._name_locks.setdefault(name, threading.Lock())
        with name_lock:
            with self._lock:
                hasher = self._loaded.get(name)
            if hasher is not None:  # loaded by another thread while this one waited
                return hasher
            try:
                hasher = checkpoint.load(path, self.device)
            except checkpoint.CheckpointError as exc:
                if name == DEFAULT:
                    raise
                raise ApiError("model_error", f"model {name!r} cannot be loaded: {exc}") from exc
            LOG.info("loaded model %r (%s, %d bits) from %s", name, hasher.fingerprint, hasher.n_bits, path)
            with self._lock:
                self._loaded[name] = hasher
            return hasher
