"""API key parsing and checking (service/auth.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hamdex.service.auth import ApiKeys, KeyConfigError

READER = "reader-key-0123456789"
WRITER = "writer-key-0123456789"
ADMIN = "admin-key-01234567890"


def test_keys_parse_from_text_and_file_and_match_only_themselves(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    admin_digest = hashlib.sha256(ADMIN.encode()).hexdigest()
    file.write_text(f"# ops keys\nsha256:{admin_digest} admin\n")
    keys = ApiKeys.parse(f"{READER} read;{WRITER} write", file)
    assert keys.enabled and len(keys.keys) == 3
    assert keys.authenticate(READER).scopes == {"read"}
    assert keys.authenticate(WRITER).scopes == {"read", "write"}
    assert keys.authenticate(ADMIN).scopes == {"read", "write", "admin"}
    assert keys.authenticate(READER + "x") is None
    assert keys.authenticate("") is None and keys.authenticate(None) is None


def test_secrets_are_not_kept() -> None:
    keys = ApiKeys.parse(f"{READER} read")
    assert READER not in repr(keys)
    assert keys.keys[0].digest == hashlib.sha256(READER.encode()).digest()


def test_no_keys_means_disabled() -> None:
    assert not ApiKeys.parse(None).enabled
    assert not ApiKeys.parse("  ;# nothing\n").enabled


@pytest.mark.parametrize(
    "text",
    [
        "justakeywithoutscope-000",
        f"{READER} root",
        f"{READER} read extra",
        "short read",
        "sha256:abcd read",
        "sha256:" + "zz" * 32 + " read",
    ],
)
def test_bad_key_lines_are_refused(text: str) -> None:
    with pytest.raises(KeyConfigError):
        ApiKeys.parse(text)


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="cannot read"):
        ApiKeys.parse(None, tmp_path / "absent")
