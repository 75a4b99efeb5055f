"""index.base: both backends answer to CollectionLike (every member, with the same parameters), and the lifecycle
and checks they share behave alike on both: a refused open leaves the folder unlocked, bad arguments raise the
same errors, a closed collection refuses work."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from hamdex.index import (
    Collection,
    CollectionLike,
    CollectionNotFoundError,
    FingerprintMismatchError,
    InvalidItemsError,
    InvalidQueryError,
    MilvusCollection,
    create_collection,
    open_collection,
)

FP = "model-a"
MEMBERS = sorted(
    {n for n, v in vars(CollectionLike).items() if isinstance(v, property) or inspect.isfunction(v)}
    - {"__init__", "__subclasshook__"}  # typing.Protocol's own
)
BACKENDS = [pytest.param("faiss", id="faiss"), pytest.param("milvus", id="milvus", marks=pytest.mark.milvus)]


@pytest.mark.parametrize("cls", [Collection, MilvusCollection], ids=["faiss", "milvus"])
@pytest.mark.parametrize("name", MEMBERS)
def test_both_classes_define_every_member_with_its_parameters(cls: type, name: str) -> None:
    want, got = getattr(CollectionLike, name), getattr(cls, name)
    if isinstance(want, property):
        assert isinstance(got, property)
    else:
        assert set(inspect.signature(got).parameters) == set(inspect.signature(want).parameters)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "milvus":
        pytest.importorskip("pymilvus", reason="the milvus extra is not installed: pip install 'hamdex[milvus]'")
    return request.param


def test_shared_lifecycle_and_checks(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "c"
    codes = np.arange(8, dtype=np.uint8).reshape(2, 4)
    with create_collection(path, 32, FP, backend=backend) as coll:
        assert isinstance(coll, CollectionLike) and coll.backend == backend
        coll.upsert(["a", "b"], codes, [{"x": 1}, None])
        with pytest.raises(InvalidQueryError):
            coll.search(codes, 0)
        with pytest.raises(InvalidQueryError):
            coll.range_search(codes, -1)
        with pytest.raises(InvalidItemsError):
            coll.delete("a")
        assert coll.get("") is None and coll.get("zz") is None
        assert [h.id for h in coll.bucket(codes[1])] == ["b"]
    with pytest.raises(FingerprintMismatchError):
        open_collection(path, "model-b")
    with open_collection(path, FP) as coll:  # the refused open released the lock and the store
        assert len(coll) == 2 and coll.get("a").metadata == {"x": 1}
    assert repr(coll) == f"{type(coll).__name__}(path={str(path)!r}, n_bits=32, count=2)"
    with pytest.raises(CollectionNotFoundError):
        coll.get("a")
