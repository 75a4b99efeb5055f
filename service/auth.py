"""API keys with scopes: parsed from a string or a file, kept only as SHA-256 digests, checked in constant time.

A key line is ``<key> <scope>[,<scope>...]`` where the key is either the secret itself or ``sha256:<hex digest>``
(so a key file need not hold secrets). Scopes: ``read`` (encode, get, search), ``write`` (upsert, delete) and
``admin`` (create and drop collections); ``admin`` implies the others, ``write`` implies ``read``. In the
environment variable several lines are separated by ``;``. Lines starting with ``#`` are comments.

Checking a presented key hashes it and compares the digest with every configured digest using
``hmac.compare_digest``, always all of them, so the time taken says nothing about which key (if any) was close.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("read", "write", "admin")
_IMPLIED = {"admin": {"admin", "write", "read"}, "write": {"write", "read"}, "read": {"read"}}


class KeyConfigError(ValueError):
    """The configured keys cannot be parsed (the service refuses to start rather than run open)."""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKey:
    digest: bytes  # SHA-256 of the secret
    scopes: frozenset[str]  # with implied scopes expanded
    name: str  # first 8 hex digits of the digest: safe to log


@dataclass(frozen=True)
class ApiKeys:
    keys: tuple[ApiKey, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @classmethod
    def parse(cls, text: str | None, file: Path | None = None) -> ApiKeys:
        lines = [line for chunk in (text or "").split(";") for line in chunk.splitlines()]
        if file is not None:
            try:
                lines += file.read_text("utf-8").splitlines()
            except OSError as exc:
                raise KeyConfigError(f"cannot read the API key file {file}: {exc}") from exc
        keys = [
            _parse_line(line, i) for i, line in enumerate(lines, 1) if line.strip() and not line.strip().startswith("#")
        ]
        return cls(tuple(keys))

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key matching ``presented``, or None; compares against every key whatever happens."""
        if not presented:
            return None
        wanted, found = digest(presented), None
        for key in self.keys:
            if hmac.compare_digest(wanted, key.digest):
                found = key
        return found


def _parse_line(line: str, line_no: int) -> ApiKey:
    parts = line.split()
    if len(parts) != 2:
        raise KeyConfigError(f"API key line {line_no}: expected '<key> <scope>[,<scope>]', got {len(parts)} fields")
    secret, scope_text = parts
    scopes = {s.strip() for s in scope_text.split(",") if s.strip()}
    unknown = scopes - set(SCOPES)
    if not scopes or unknown:
        raise KeyConfigError(f"API key line {line_no}: scopes must be among {', '.join(SCOPES)}, got {scope_text!r}")
    if secret.startswith("sha256:"):
        try:
            raw = bytes.fromhex(secret.removeprefix("sha256:"))
        except ValueError as exc:
            raise KeyConfigError(f"API key line {line_no}: 'sha256:' must be followed by 64 hex digits") from exc
        if len(raw) != 32:
            raise KeyConfigError(f"API key line {line_no}: 'sha256:' must be followed by 64 hex digits")
    else:
        if len(secret) < 16:
            raise KeyConfigError(f"API key line {line_no}: keys must be at least 16 characters long")
        raw = digest(secret)
    expanded = frozenset().union(*(_IMPLIED[s] for s in scopes))
    return ApiKey(raw, expanded, raw.hex()[:8])
