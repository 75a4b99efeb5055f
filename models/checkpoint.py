"""Checkpoints: a directory with ``model.safetensors`` (weights and featurizer arrays) and ``hamdex.json`` (model
config, featurizer parameters, training config and summary, library versions, fingerprint).

The fingerprint is a SHA-256 over the model config, the featurizer state and every tensor's bytes, so two
checkpoints share it exactly when they encode identically. Collections store it and refuse a different model. It
is recomputed on load, so a damaged weights file is reported instead of silently producing other codes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hamdex.models.autoencoder import ModelConfig
from hamdex.models.ensemble import Model, build_model
from hamdex.models.featurizers import Featurizer, load_featurizer
from hamdex.models.hasher import Hasher, resolve_device
from hamdex.models.sentence import EncoderError
from safetensors.numpy import load_file, save_file

FORMAT_VERSION = 1
WEIGHTS, META = "model.safetensors", "hamdex.json"
FEATURIZER_PREFIX = "featurizer."


class CheckpointError(Exception):
    error_type = "checkpoint"


def library_versions() -> dict[str, str]:
    names = ("hamdex", "torch", "numpy", "scikit-learn", "faiss-cpu", "safetensors")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ModelConfig fields added after the first release, with the value that means "as before": left out of the
# fingerprint at that value, so checkpoints (and the collections that store their fingerprint) keep theirs
LATER_FIELDS = {
    "members": 1,
    "output_dim": 0,
    "readout": "threshold",
    "label_names": (),
    "nested": (),
    "readout_from": 0,
}


def fingerprint(config: ModelConfig, featurizer_state: dict, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    model = {k: v for k, v in config.to_dict().items() if LATER_FIELDS.get(k, object()) != v}
    h.update(json.dumps({"model": model, "featurizer": featurizer_state}, sort_keys=True).encode())
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _tensors(model: Model, featurizer: Featurizer) -> tuple[dict, dict[str, np.ndarray]]:
    """Everything that determines the codes, as (featurizer JSON state, named numpy arrays)."""
    params, feat_arrays = featurizer.state()
    tensors = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    tensors.update({FEATURIZER_PREFIX + k: np.asarray(v) for k, v in feat_arrays.items()})
    return {"kind": featurizer.kind, "params": params}, tensors


def compute_fingerprint(model: Model, featurizer: Featurizer) -> str:
    feat_state, tensors = _tensors(model, featurizer)
    return fingerprint(model.config, feat_state, tensors)


def save(path: str | Path, hasher: Hasher) -> str:
    """Write a checkpoint directory atomically (temp dir + rename); returns the fingerprint."""
    path = Path(path)
    feat_state, tensors = _tensors(hasher.model, hasher.featurizer)
    fp = fingerprint(hasher.model.config, feat_state, tensors)
    meta = {
        **{k: v for k, v in hasher.info.items() if k not in ("format_version", "fingerprint", "versions")},
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_config": hasher.model.config.to_dict(),
        "featurizer": feat_state,
        "versions": library_versions(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    save_file(tensors, str(tmp / WEIGHTS))
    (tmp / META).write_text(json.dumps(meta, indent=2))
    for f in (tmp / WEIGHTS, tmp / META):
        _fsync(f)
    if path.exists():
        _replace_dir(tmp, path)
    else:
        os.replace(tmp, path)
    return fp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(new: Path, old: Path) -> None:
    """Swap a finished checkpoint in for an existing one, never leaving a half-written directory at ``old``."""
    backup = old.with_name(f".{old.name}.old")
    if backup.exists():
        _remove_tree(backup)
    os.replace(old, backup)
    os.replace(new, old)
    _remove_tree(backup)


def _remove_tree(path: Path) -> None:
    for f in path.iterdir():
        f.unlink()
    path.rmdir()


def read_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise CheckpointError(f"no hamdex checkpoint at {path} (missing {META})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"unreadable checkpoint metadata {meta_path}: {exc}") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: unsupported format_version {meta.get('format_version')}")
    return meta


def load(path: str | Path, device: str = "auto") -> Hasher:
    """Rebuild a Hasher from its checkpoint directory (always from the stored config, never from flags)."""
    path = Path(path)
    meta = read_meta(path)
    try:
        tensors = load_file(str(path / WEIGHTS))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"unreadable weights {path / WEIGHTS}: {exc}") from exc
    config = ModelConfig.from_dict(meta["model_config"])
    fp = fingerprint(config, meta["featurizer"], tensors)
    if fp != meta["fingerprint"]:
        raise CheckpointError(f"{path}: fingerprint {fp} does not match the stored {meta['fingerprint']}")
    model = build_model(config)
    weights = {k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith(FEATURIZER_PREFIX)}
    model.load_state_dict(weights)
    feat_arrays = {k[len(FEATURIZER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(FEATURIZER_PREFIX)}
    try:
        featurizer = load_featurizer(meta["featurizer"]["kind"], meta["featurizer"]["params"], feat_arrays)
    except EncoderError as exc:  # the sentence encoder it names is missing or has other weights
        raise CheckpointError(f"{path}: {exc}") from exc
    info = {k: v for k, v in meta.items() if k not in ("model_config", "featurizer")}
    return Hasher(model, featurizer, fp, resolve_device(device), info)
