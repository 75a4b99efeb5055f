"""hamdex: semantic hashing retrieval. Binary-bottleneck autoencoders turn items into short binary codes, a FAISS
binary index finds Hamming neighbours, and a FastAPI service serves both.

The package's folders: ``hamdex.models`` (featurizers, autoencoders, training, checkpoints), ``hamdex.index``
(durable collections of codes), ``hamdex.evaluation`` (metrics and baselines), ``hamdex.service`` (the HTTP service
and the ``hamdex`` CLI). What most code needs is here::

    import hamdex

    hasher = hamdex.load_model("var/model")               # a trained checkpoint (hamdex train)
    codes = hasher.encode(["rocket engines and orbits"]).codes  # packed, one uint8 row per item
    with hamdex.open_collection("var/collection", hasher.fingerprint) as collection:
        hits = collection.search(codes, k=10)

A running server (``hamdex serve``) is reached through ``hamdex.Client`` (or ``hamdex.AsyncClient``; docs/client.md)::

    with hamdex.Client("http://127.0.0.1:8000") as client:
        hits = client.search(["rocket engines and orbits"], k=10)[0]

The names are imported on first use, so ``import hamdex`` stays light (no torch, no FAISS; the client needs
neither).
"""

from __future__ import annotations

from importlib import import_module, metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Installed, the folders are this package's subpackages (pyproject.toml's package-dir). In a source checkout run
# without installing it (a second worktree, PYTHONPATH=.), they are the folders beside this one.
_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "models" / "__init__.py").is_file():
    __path__.append(str(_ROOT))

try:
    __version__ = metadata.version("hamdex")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# public name -> (module, attribute)
_EXPORTS = {
    "AsyncClient": ("hamdex.client", "AsyncClient"),
    "Client": ("hamdex.client", "Client"),
    "HamdexError": ("hamdex.client", "HamdexError"),
    "Hasher": ("hamdex.models.hasher", "Hasher"),
    "load_model": ("hamdex.models.checkpoint", "load"),
    "save_model": ("hamdex.models.checkpoint", "save"),
    "open_collection": ("hamdex.index.backends", "open_collection"),
    "create_collection": ("hamdex.index.backends", "create_collection"),
    "open_or_create_collection": ("hamdex.index.backends", "open_or_create_collection"),
}
__all__ = [
    "AsyncClient",
    "Client",
    "HamdexError",
    "Hasher",
    "__version__",
    "create_collection",
    "load_model",
    "open_collection",
    "open_or_create_collection",
    "save_model",
]

if TYPE_CHECKING:
    from hamdex.client import AsyncClient, Client, HamdexError
    from hamdex.index.backends import create_collection, open_collection, open_or_create_collection
    from hamdex.models.checkpoint import load as load_model
    from hamdex.models.checkpoint import save as save_model
    from hamdex.models.hasher import Hasher


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hamdex' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
