"""The registry of named collections: names, lazy cached opening from many threads, create and drop that never
leave a half collection visible, an attached outside collection, and close."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import hamdex.index.registry as registry_module
import numpy as np
import pytest
from hamdex.index import (
    Collection,
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    FingerprintMismatchError,
    InvalidManifestError,
)
from hamdex.index.errors import CollectionProtectedError, InvalidCollectionNameError
from hamdex.index.registry import ROOT_LOCK, Registry, check_name, peek_fingerprint

FP = "fp-test"


def codes(n: int, n_bits: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, n_bits // 8), dtype=np.uint8)


def visible(root: Path) -> list[str]:
    """Everything in the root but the registry's lock file."""
    return sorted(p.name for p in root.iterdir() if p.name != ROOT_LOCK) if root.exists() else []


@pytest.fixture
def reg(tmp_path: Path):
    with Registry(tmp_path / "root") as r:
        yield r


# ---- names --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "Z", "0", "news-2024", "a.b_c-d", "x" * 64, "v1.2"])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "_x", "a/b", "a b", "x" * 65, "..", "a\n", "é", "a\\b", None, 3])
def test_invalid_names_are_typed_errors(reg: Registry, name: object) -> None:
    with pytest.raises(InvalidCollectionNameError) as info:
        check_name(name)
    assert info.value.error_type == "invalid_collection_name"
    for call in (reg.get, reg.drop, lambda n: reg.create(n, 16, FP)):
        with pytest.raises(InvalidCollectionNameError):
            call(name)
    assert not reg.root.exists()  # nothing was made for a bad name


# ---- create, get, persistence -------------------------------------------------------------------------------


def test_create_get_and_names(reg: Registry) -> None:
    assert reg.names() == [] and "a" not in reg
    made = reg.create("a", 16, FP, "ivf", {"nlist": 4}, model="text")
    reg.create("b", 32, "other-fp")
    assert reg.get("a") is made  # cached: the same open object
    assert reg.names() == ["a", "b"] and "a" in reg and "c" not in reg
    m = made.manifest
    assert (m.n_bits, m.fingerprint, m.index_kind, m.model, m.count) == (16, FP, "ivf", "text", 0)
    assert m.index_params == {"nlist": 4, "nprobe": 8, "train_size_per_list": 39}  # defaults filled in
    assert visible(reg.root) == ["a", "b"]  # no temp directory left behind


def test_create_existing_name_is_refused(reg: Registry) -> None:
    reg.create("a", 16, FP).upsert(["x"], codes(1))
    with pytest.raises(CollectionExistsError) as info:
        reg.create("a", 16, FP)
    assert info.value.error_type == "collection_exists"
    assert len(reg.get("a")) == 1  # untouched


@pytest.mark.parametrize(("kind", "params"), [("nope", {}), ("flat", {"nlist": 4}), ("hnsw", {"m": 0})])
def test_create_with_bad_settings_leaves_nothing(reg: Registry, kind: str, params: dict) -> None:
    with pytest.raises(InvalidManifestError):
        reg.create("a", 16, FP, kind, params)
    assert reg.names() == [] and visible(reg.root) == []


def test_unknown_name_is_not_found(reg: Registry) -> None:
    with pytest.raises(CollectionNotFoundError) as info:
        reg.get("missing")
    assert info.value.error_type == "collection_not_found"
    (reg.root / "plain-dir").mkdir(parents=True)  # a directory without a collection is not one
    assert reg.names() == []
    with pytest.raises(CollectionNotFoundError):
        reg.get("plain-dir")


def test_collections_persist_and_open_lazily(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Registry(root) as first:
        first.create("a", 16, FP, model="m").upsert(["x", "y"], codes(2), [{"k": 1}, None])
        first.create("b", 16, FP)
    second = Registry(root)
    try:
        assert second.names() == ["a", "b"]
        with Collection.open(root / "a") as direct:  # not opened (so not locked) by the registry yet
            assert len(direct) == 2
        a = second.get("a")
        assert len(a) == 2 and a.get("x").metadata == {"k": 1} and a.manifest.model == "m"
        with pytest.raises(CollectionLockedError):  # now the registry holds it
            Collection.open(root / "a")
    finally:
        second.close()


def test_concurrent_first_gets_open_once(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.create("a", 16, FP)
    reg.close()
    fresh = Registry(reg.root)
    opened = []
    real_open = Collection.open

    def slow_open(*args, **kwargs):
        opened.append(args[0])
        time.sleep(0.05)  # let the other threads pile up behind the first open
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Collection, "open", slow_open)  # what index.open_collection calls
    got: list[Collection] = []
    threads = [threading.Thread(target=lambda: got.append(fresh.get("a"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(opened) == 1 and len(got) == 8 and all(c is got[0] for c in got)
    finally:
        fresh.close()


def test_on_open_hook_can_refuse(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Registry(root) as r:
        r.create("good", 16, FP)
        r.create("bad", 16, "foreign")
    calls = []

    def check(name: str, collection: Collection) -> None:
        calls.append(name)
        if collection.fingerprint != FP:
            raise FingerprintMismatchError(collection.path, FP, collection.fingerprint)

    with Registry(root, on_open=check) as r:
        assert len(r.get("good")) == 0
        r.get("good")
        for _ in range(2):  # refused each time, never cached
            with pytest.raises(FingerprintMismatchError):
                r.get("bad")
        assert calls == ["good", "bad", "bad"]
        with Collection.open(root / "bad") as direct:  # the refused collection was closed again
            assert direct.fingerprint == "foreign"
        listed = {entry.name: entry for entry in r.list()}
        assert listed["good"].manifest is not None and listed["good"].error is None
        assert listed["bad"].manifest is None and isinstance(listed["bad"].error, FingerprintMismatchError)


# ---- drop ---------------------------------------------------------------------------------------------------


def test_drop_removes_and_the_name_can_be_reused(reg: Registry) -> None:
    old = reg.create("a", 16, FP)
    old.upsert(["x"], codes(1))
    reg.create("b", 16, FP).upsert(["y"], codes(1))
    reg.drop("a")
    assert reg.names() == ["b"] and "a" not in reg and visible(reg.root) == ["b"]
    with pytest.raises(CollectionNotFoundError):
        reg.get("a")
    with pytest.raises(CollectionNotFoundError):
        reg.drop("a")
    with pytest.raises(CollectionNotFoundError):  # the dropped object is closed
        old.upsert(["z"], codes(1))
    again = reg.create("a", 16, FP)
    assert again is not old and len(again) == 0
    assert len(reg.get("b")) == 1


def test_drop_of_a_collection_not_opened_yet(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Registry(root) as r:
        r.create("a", 16, FP)
    with Registry(root) as r:
        r.drop("a")
        assert r.names() == [] and visible(root) == []


def test_drop_waits_for_work_in_flight(reg: Registry) -> None:
    reg.create("a", 16, FP).upsert(["x"], codes(1))
    inside, release, dropped = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def worker() -> None:
        with reg.use("a") as collection:
            inside.set()
            release.wait(10)
            seen.append(len(collection.search(codes(1), 5)[0]))  # still open: the drop waits

    def dropper() -> None:
        reg.drop("a")
        dropped.set()

    t1 = threading.Thread(target=worker)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=dropper)
    t2.start()
    assert not dropped.wait(0.3)  # blocked behind the use in flight
    release.set()
    t1.join(10)
    t2.join(10)
    assert dropped.is_set() and seen == [1]
    with pytest.raises(CollectionNotFoundError):
        with reg.use("a"):
            pass


def test_crash_mid_drop_never_shows_a_half_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    r = Registry(root)
    r.create("a", 16, FP).upsert(["x"], codes(1))
    r.create("b", 16, FP)

    def crash(path, *args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(registry_module.shutil, "rmtree", crash)
    with pytest.raises(OSError, match="power cut"):
        r.drop("a")
    monkeypatch.undo()
    assert r.names() == ["b"]  # renamed away before the delete began
    assert any(name.startswith(".trash-a.") for name in visible(root))
    r.close()
    with Registry(root) as after:  # a new registry clears the leftover
        assert visible(root) == ["b"] and after.names() == ["b"]


def test_leftover_of_an_interrupted_create_is_hidden_and_removed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    half = root / ".creating-a.0123"
    Collection.create(half, 16, FP).close()  # as if the rename into place never happened
    with Registry(root) as r:
        assert r.names() == [] and not half.exists()
        r.create("a", 16, FP)
        assert r.names() == ["a"]


# ---- attach and close ---------------------------------------------------------------------------------------


def test_attached_collection_is_served_but_never_dropped(tmp_path: Path) -> None:
    outside = Collection.create(tmp_path / "elsewhere", 16, FP)
    outside.upsert(["x"], codes(1))
    r = Registry(tmp_path / "root")
    r.attach("default", outside)
    assert r.names() == ["default"] and "default" in r and r.is_attached("default")
    assert r.get("default") is outside
    with pytest.raises(CollectionProtectedError) as info:
        r.drop("default")
    assert info.value.error_type == "collection_protected"
    with pytest.raises(CollectionExistsError):
        r.create("default", 16, FP)
    with pytest.raises(CollectionExistsError):
        r.attach("default", outside)
    assert len(r.get("default")) == 1 and (tmp_path / "elsewhere").is_dir()
    r.close()  # closes the attached collection too: its lock is free again
    with Collection.open(tmp_path / "elsewhere") as again:
        assert again.ids() == ["x"]


def test_close_closes_everything_and_is_final(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = Registry(root)
    a = r.create("a", 16, FP)
    a.upsert(["x", "y"], codes(2))
    r.close()
    r.close()  # idempotent
    with pytest.raises(CollectionNotFoundError):
        r.get("a")
    with pytest.raises(CollectionNotFoundError):
        r.create("c", 16, FP)
    with pytest.raises(CollectionNotFoundError):  # the collection object itself is closed
        a.upsert(["z"], codes(1))
    with Collection.open(root / "a") as again:
        assert again.ids() == ["x", "y"]


def test_list_reports_counts_and_broken_collections(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Registry(root) as r:
        r.create("a", 16, FP).upsert(["x", "y"], codes(2))
        r.create("b", 32, "fp-b", "hnsw")
    with Collection.open(root / "b") as held_elsewhere, Registry(root) as r:
        listed = r.list()
        assert [entry.name for entry in listed] == ["a", "b"]
        assert listed[0].manifest.count == 2 and listed[0].error is None
        assert listed[1].manifest is None and isinstance(listed[1].error, CollectionLockedError)
        assert held_elsewhere.n_bits == 32


def test_peek_fingerprint_reads_without_opening(tmp_path: Path) -> None:
    assert peek_fingerprint(tmp_path / "none") is None
    with Collection.create(tmp_path / "c", 16, FP):
        assert peek_fingerprint(tmp_path / "c") == FP  # even while it is open (locked)


def test_one_registry_owns_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    owner = Registry(root)
    owner.create("a", 16, FP).upsert(["x"], codes(1))
    owner.create("b", 16, FP)
    owner.get("b")
    leftover = root / ".trash-c.0123"
    leftover.mkdir()
    other = Registry(root)  # e.g. another process on the same directory
    try:
        assert other.names() == ["a", "b"] and leftover.exists()  # the owner's hidden work is left alone
        with pytest.raises(CollectionLockedError):
            other.create("c", 16, FP)
        with pytest.raises(CollectionLockedError):
            other.drop("b")
        with pytest.raises(CollectionLockedError):  # open in the owner
            other.get("a")
        assert visible(root) == [".trash-c.0123", "a", "b"]
    finally:
        other.close()
        owner.close()
    with Registry(root) as next_owner:
        assert not leftover.exists()
        next_owner.drop("a")
        assert next_owner.names() == ["b"]


def test_try_use_never_waits(reg: Registry) -> None:
    """The event loop's fast path: the open collection at once; None when it is not open or a drop holds it."""
    with reg.try_use("a") as missing:
        assert missing is None  # not created: try_use opens nothing
    reg.create("a", 16, FP)
    with reg.try_use("a") as collection:
        assert collection is not None and collection is reg.get("a")
    entry = reg._entries["a"]
    with entry.lock.write():  # what a drop holds while it closes the collection
        done = []
        thread = threading.Thread(target=lambda: done.append(reg.try_use("a").__enter__()))
        thread.start()
        thread.join(2)
        assert done == [None]  # answered at once, without waiting for the writer
    with reg.try_use("a") as again:
        assert again is not None
    reg.drop("a")
    with reg.try_use("a") as dropped:
        assert dropped is None
