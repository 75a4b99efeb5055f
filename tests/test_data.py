"""Readers in models/data/, each against a small real file written in its real format."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hamdex.models.data import (
    Block,
    DataFormatError,
    DataNotFoundError,
    concat_blocks,
    count_items,
    decode_text,
    demo_corpus_path,
    iter_blocks,
    load_20newsgroups,
    load_demo_corpus,
    newsgroups,
    read_all,
    subject_of,
)

from tests.ci_skips import NO_20NG

TEXTS = ["first post", "second, with a comma", "third\nspans two lines", "fourth", "fifth"]
LABELS = ["a", "b", "a", None, "b"]
RNG = np.random.default_rng(0)
VECTORS = RNG.standard_normal((5, 3)).astype(np.float32)  # (n, d)
IMAGES = RNG.integers(0, 256, size=(7, 4, 3), dtype=np.uint8)  # (n, h, w)


def post(subject: str, body: str) -> bytes:
    return f"From: someone@example.org\nSubject: {subject}\nLines: 1\n\n{body}\n".encode("latin-1")


# --- writers: one small real file per format -------------------------------------------------------------


def write_npy(tmp_path: Path) -> Path:
    np.save(tmp_path / "v.npy", VECTORS.astype(np.float64))
    return tmp_path / "v.npy"


def write_npz(tmp_path: Path) -> Path:
    np.savez(tmp_path / "v.npz", X=VECTORS, ids=np.array([f"id{i}" for i in range(5)]), y=np.arange(5))
    return tmp_path / "v.npz"


def write_parquet(tmp_path: Path) -> Path:
    table = pa.table({"id": [f"id{i}" for i in range(5)], "text": TEXTS, "label": LABELS, "year": list(range(5))})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)  # several row groups
    return tmp_path / "t.parquet"


def write_jsonl(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"id": f"id{i}", "text": t, "label": lab})
        for i, (t, lab) in enumerate(zip(TEXTS, LABELS, strict=True))
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # trailing blank line
    return tmp_path / "t.jsonl"


def write_csv(tmp_path: Path) -> Path:
    with open(tmp_path / "t.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label", "source"])
        for i, (text, label) in enumerate(zip(TEXTS, LABELS, strict=True)):
            writer.writerow([f"id{i}", text, label or "", "web"])
    return tmp_path / "t.csv"


def write_folder(tmp_path: Path) -> Path:
    root = tmp_path / "news"
    for group, names in {"comp.graphics": ["10", "11", "12"], "sci.space": ["20", "21"]}.items():
        (root / group).mkdir(parents=True)
        for name in names:
            (root / group / name).write_bytes(post(f"Re: {group} {name}", "body"))
    return root


def write_idx(tmp_path: Path, images: np.ndarray = IMAGES, labels: bool = True) -> Path:
    n, h, w = images.shape
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(np.array([0x00000803, n, h, w], dtype=">u4").tobytes() + images.tobytes())
    if labels:
        with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
            f.write(np.array([0x00000801, n], dtype=">u4").tobytes() + (np.arange(n) % 10).astype(np.uint8).tobytes())
    return path


def write_tar(tmp_path: Path) -> Path:
    members = {
        "20news-bydate-train/sci.space/60001": post("space one", "orbits"),
        "20news-bydate-train/comp.graphics/38001": post("graphics one", "pixels \xe9"),
        "20news-bydate-train/sci.space/60000": post("space zero", "rockets"),
        "20news-bydate-test/sci.space/61000": post("space test", "moon"),
    }
    path = tmp_path / "20news-bydate.tar.xz"
    with tarfile.open(path, "w:xz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


WRITERS = {
    "npy": (write_npy, 5),
    "npz": (write_npz, 5),
    "parquet": (write_parquet, 5),
    "jsonl": (write_jsonl, 5),
    "csv": (write_csv, 5),
    "folder": (write_folder, 5),
    "idx": (write_idx, 7),
    "tar": (write_tar, 4),
}


def assert_same(a: Block, b: Block) -> None:
    assert (a.kind, a.ids, a.labels, a.metadata) == (b.kind, b.ids, b.labels, b.metadata)
    if a.kind == "text":
        assert a.inputs == b.inputs
    else:
        assert a.inputs.dtype == b.inputs.dtype
        np.testing.assert_array_equal(a.inputs, b.inputs)


# --- one test per format ---------------------------------------------------------------------------------


def test_npy_vectors(tmp_path):
    block = read_all(write_npy(tmp_path))
    assert block.kind == "vector" and block.inputs.dtype == np.float32 and block.inputs.shape == (5, 3)
    np.testing.assert_array_equal(block.inputs, VECTORS)
    assert block.ids == ["0", "1", "2", "3", "4"]
    assert block.labels == [None] * 5 and block.metadata == [{}] * 5


def test_npy_images(tmp_path):
    np.save(tmp_path / "img.npy", IMAGES)
    block = read_all(tmp_path / "img.npy")
    assert block.kind == "image" and block.inputs.dtype == np.uint8
    np.testing.assert_array_equal(block.inputs, IMAGES)
    assert block.ids == [str(i) for i in range(7)]


def test_npy_blocks_keep_global_row_ids_and_values(tmp_path):
    array = np.arange(103 * 4, dtype=np.float32).reshape(103, 4)
    np.save(tmp_path / "v.npy", array)
    blocks = list(iter_blocks(tmp_path / "v.npy", block_size=10))
    assert [len(b) for b in blocks] == [10] * 10 + [3]
    assert blocks[5].ids == [str(i) for i in range(50, 60)]
    np.testing.assert_array_equal(concat_blocks(blocks).inputs, array)


def test_npy_fortran_order_still_reads(tmp_path):
    array = np.asfortranarray(np.arange(20, dtype=np.float32).reshape(5, 4))
    np.save(tmp_path / "f.npy", array)
    np.testing.assert_array_equal(read_all(tmp_path / "f.npy").inputs, array)


def test_npy_nan_row_is_named_by_its_row_in_the_file(tmp_path):
    array = np.ones((30, 3), np.float32)
    array[17, 1] = np.nan
    np.save(tmp_path / "nan.npy", array)
    with pytest.raises(DataFormatError, match=r"rows 10-19.*row 7"):
        list(iter_blocks(tmp_path / "nan.npy", block_size=10))


def test_npy_reading_holds_about_one_block_in_memory(tmp_path):
    """A 400 MB file read in 4 MB blocks: peak RSS must not grow with the file (a whole-file map would add ~400 MB
    of resident pages as they are touched)."""
    import subprocess
    import sys

    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, "w+", np.float32, (100_000, 1024))
    for start in range(0, len(big), 10_000):
        big[start : start + 10_000] = 1.0
    big.flush()
    del big
    # VmHWM (peak RSS of this process image); ru_maxrss would start at the forking parent's peak
    script = (
        "import sys; from hamdex.models.data import iter_blocks; "
        "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]); "
        "base = hwm(); "
        "total = sum(float(b.inputs.sum()) for b in iter_blocks(sys.argv[1], 1024)); "
        "assert total == 100_000 * 1024, total; "
        "print((hwm() - base) // 1024)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    grown_mb = int(out.stdout.strip())
    assert grown_mb < 100, f"peak RSS grew by {grown_mb} MB reading a 400 MB file"


@pytest.mark.parametrize("input_key", ["X", "vectors", "x"])
@pytest.mark.parametrize("label_key", ["labels", "y", None])
def test_npz(tmp_path, input_key, label_key):
    arrays = {input_key: VECTORS, "ids": np.array([b"p", b"q", b"r", b"s", b"t"])}
    if label_key:
        arrays[label_key] = np.array([3, 1, 4, 1, 5])
    np.savez(tmp_path / "v.npz", **arrays)
    block = read_all(tmp_path / "v.npz")
    np.testing.assert_array_equal(block.inputs, VECTORS)
    assert block.ids == ["p", "q", "r", "s", "t"]  # bytes decoded, not "b'p'"
    if label_key:
        assert block.labels == ["3", "1", "4", "1", "5"]
        assert block.metadata[0] == {"label": "3"}
    else:
        assert block.labels == [None] * 5


def test_npz_images(tmp_path):
    np.savez(tmp_path / "i.npz", images=IMAGES)
    block = read_all(tmp_path / "i.npz")
    assert block.kind == "image" and block.ids[-1] == "6"


def test_parquet_text(tmp_path):
    block = read_all(write_parquet(tmp_path))
    assert block.kind == "text" and block.inputs == TEXTS
    assert block.ids == [f"id{i}" for i in range(5)] and block.labels == LABELS
    assert block.metadata[0] == {"year": 0, "label": "a"}
    assert block.metadata[3] == {"year": 3}


def test_parquet_vectors_without_id(tmp_path):
    table = pa.table(
        {"vector": pa.array(VECTORS.tolist(), pa.list_(pa.float32())), "when": pa.array([0] * 5, pa.date32())}
    )
    pq.write_table(table, tmp_path / "v.parquet", row_group_size=2)
    blocks = list(iter_blocks(tmp_path / "v.parquet", block_size=2))
    block = concat_blocks(blocks)
    assert block.kind == "vector" and block.ids == ["0", "1", "2", "3", "4"]  # row numbers across batches
    np.testing.assert_array_equal(block.inputs, VECTORS)
    assert block.metadata[0] == {"when": "1970-01-01"}  # dates become JSON-able text


def test_jsonl(tmp_path):
    records = [
        {"id": 7, "text": "hello", "label": 2, "metadata": {"lang": "en", "src": "nested"}, "src": "top"},
        {"text": "no id, no label", "score": 0.5},
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    block = read_all(tmp_path / "t.jsonl")
    assert block.ids == ["7", "1"] and block.inputs == ["hello", "no id, no label"]
    assert block.labels == ["2", None]
    assert block.metadata == [{"src": "nested", "lang": "en", "label": "2"}, {"score": 0.5}]


def test_jsonl_vectors(tmp_path):
    lines = [json.dumps({"id": f"v{i}", "vector": v}) for i, v in enumerate(VECTORS.tolist())]
    (tmp_path / "v.jsonl").write_text("\n".join(lines), encoding="utf-8")
    block = read_all(tmp_path / "v.jsonl")
    assert block.kind == "vector" and block.inputs.dtype == np.float32
    np.testing.assert_array_equal(block.inputs, VECTORS)


def test_csv_multiline_text(tmp_path):
    block = read_all(write_csv(tmp_path))
    assert block.inputs == TEXTS  # the quoted two-line text is one item
    assert block.labels == LABELS  # an empty cell is no label
    assert block.metadata[2] == {"source": "web", "label": "a"} and block.metadata[3] == {"source": "web"}


def test_csv_vectors_json_and_space_separated(tmp_path):
    (tmp_path / "v.csv").write_text('id,vector\na,"[0.5, -1, 2]"\nb,1.5 2.5   3.5\n', encoding="utf-8")
    block = read_all(tmp_path / "v.csv")
    assert block.kind == "vector" and block.ids == ["a", "b"]
    np.testing.assert_array_equal(block.inputs, np.array([[0.5, -1, 2], [1.5, 2.5, 3.5]], np.float32))


def test_label_folder(tmp_path):
    root = write_folder(tmp_path)
    (root / "sci.space" / "22").write_bytes(b"Subject:   caf\xe9  \n\nlatin-1 body \xe9\n")
    (root / ".DS_Store").write_bytes(b"junk")
    block = read_all(root)
    assert block.ids[:3] == ["comp.graphics/10", "comp.graphics/11", "comp.graphics/12"]
    assert block.labels == ["comp.graphics"] * 3 + ["sci.space"] * 3
    assert block.metadata[0] == {"label": "comp.graphics", "subject": "Re: comp.graphics 10"}  # "Re: " kept
    assert block.metadata[-1] == {"label": "sci.space", "subject": "café"}
    assert block.inputs[-1].endswith("latin-1 body é\n")


def test_idx_gz(tmp_path):
    block = read_all(write_idx(tmp_path))
    assert block.kind == "image" and block.inputs.shape == (7, 4, 3) and block.inputs.dtype == np.uint8
    np.testing.assert_array_equal(block.inputs, IMAGES)
    assert block.labels == ["0", "1", "2", "3", "4", "5", "6"] and block.metadata[2] == {"label": "2"}
    assert block.ids == [str(i) for i in range(7)]


def test_idx_without_labels_file(tmp_path):
    block = read_all(write_idx(tmp_path, labels=False))
    assert block.labels == [None] * 7 and block.metadata == [{}] * 7


def test_20ng_tarball(tmp_path):
    path = write_tar(tmp_path)
    everything = read_all(path)
    assert len(everything) == 4
    assert {m["split"] for m in everything.metadata} == {"train", "test"}
    train = load_20newsgroups(path, "train")
    assert train.ids == ["comp.graphics/38001", "sci.space/60000", "sci.space/60001"]  # sorted, not tar order
    assert train.labels == ["comp.graphics", "sci.space", "sci.space"]
    assert train.metadata[0] == {"label": "comp.graphics", "subject": "graphics one"}
    assert "pixels \xe9" in train.inputs[0]
    test = load_20newsgroups(path, "test")
    assert test.ids == ["sci.space/61000"] and test.metadata == [{"label": "sci.space", "subject": "space test"}]


# --- streaming, limit, counting --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_blocks_concatenate_to_read_all(tmp_path, fmt):
    writer, n = WRITERS[fmt]
    path = writer(tmp_path)
    blocks = list(iter_blocks(path, block_size=2))
    assert [len(b) for b in blocks] == [2] * (n // 2) + [1] * (n % 2)
    assert_same(concat_blocks(blocks), read_all(path))


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("limit", [0, 1, 3, 100])
def test_limit(tmp_path, fmt, limit):
    writer, n = WRITERS[fmt]
    path = writer(tmp_path)
    got = sum(len(b) for b in iter_blocks(path, block_size=2, limit=limit))
    assert got == min(limit, n)
    if limit:
        assert_same(read_all(path, limit=limit), read_all(path).head(limit))


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("npy", 5),
        ("npz", 5),
        ("parquet", 5),
        ("folder", 5),
        ("idx", 7),
        ("jsonl", None),
        ("csv", None),
        ("tar", None),
    ],
)
def test_count_items(tmp_path, fmt, expected):
    assert count_items(WRITERS[fmt][0](tmp_path)) == expected


# --- errors ----------------------------------------------------------------------------------------------


def write_bytes(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


BAD_INPUTS = {
    "unsupported suffix": ("data.txt", "hello", "unsupported data format"),
    "idx labels file": ("train-labels-idx1-ubyte.gz", b"", "pass the matching"),
    "jsonl without text or vector": ("t.jsonl", '{"id": 1, "notes": "x"}\n', "neither"),
    "jsonl with both": ("t.jsonl", '{"text": "x", "vector": [1]}\n', "both"),
    "jsonl bad json": ("t.jsonl", '{"text": "x"}\n{oops\n', "t.jsonl:2: line is not valid JSON"),
    "jsonl not an object": ("t.jsonl", "[1, 2]\n", "expected a JSON object"),
    "jsonl ragged": ("t.jsonl", '{"vector": [1, 2]}\n{"vector": [1, 2, 3]}\n', "t.jsonl:2: ragged vectors"),
    "jsonl mixed kinds": ("t.jsonl", '{"vector": [1, 2]}\n{"text": "x"}\n', "mixes text and vector"),
    "jsonl non-numeric vector": ("t.jsonl", '{"vector": [1, "a"]}\n', "not a list of numbers"),
    "jsonl nan vector": ("t.jsonl", '{"vector": [1, NaN]}\n', "NaN or infinite"),
    "csv missing column": ("t.csv", "id,notes\n1,x\n", "needs a 'text' or 'vector' column"),
    "csv ragged": ("t.csv", 'vector\n"[1, 2]"\n1 2 3\n', "t.csv:3: ragged vectors"),
    "csv extra cells": ("t.csv", "id,text\n1,x,surplus\n", "more cells than the header"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_row_inputs_raise(tmp_path, case):
    name, content, message = BAD_INPUTS[case]
    path = write_bytes(tmp_path, name, content)
    with pytest.raises(DataFormatError, match=message) as err:
        read_all(path)
    assert str(path) in str(err.value) and err.value.error_type == "data_format"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"id": [1], "notes": ["x"]}, "neither a 'text' nor a 'vector' column"),
        ({"vector": [[1.0, 2.0], [1.0]]}, r"ragged vectors: row 1 has 1 values"),
        ({"vector": [[1.0], None]}, "'vector' is null at row 1"),
        ({"text": ["x", None]}, "'text' is null at row 1"),
        ({"text": [1, 2]}, "must hold strings"),
    ],
)
def test_bad_parquet_raises(tmp_path, table, message):
    pq.write_table(pa.table(table), tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match=message):
        read_all(tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(3), "2-d numeric array"),
        (np.zeros((2, 3, 4), np.float32), r"3-d uint8.*scale them to 0-255 uint8"),
        (np.zeros((2, 3, 4, 1), np.uint8), r"one channel: drop its axis"),
        (np.zeros((2, 3, 4, 3), np.uint8), r"colour images: give them as \(n, h, w\) grayscale"),
        (np.array([[1.0, np.inf]]), "NaN or infinite"),
    ],
)
def test_bad_npy_raises(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataFormatError, match=message):
        read_all(tmp_path / "bad.npy")


def test_bad_npz_raises(tmp_path):
    np.savez(tmp_path / "a.npz", features=VECTORS)
    with pytest.raises(DataFormatError, match="no input array"):
        read_all(tmp_path / "a.npz")
    with pytest.raises(DataFormatError, match="no input array"):
        count_items(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", X=VECTORS, y=np.arange(4))
    with pytest.raises(DataFormatError, match="labels has 4 entries but there are 5 items"):
        read_all(tmp_path / "b.npz")


def test_bad_idx_magic_raises(tmp_path):
    path = write_idx(tmp_path)
    with gzip.open(path, "wb") as f:
        f.write(np.array([0x00000801, 7, 4, 3], dtype=">u4").tobytes())
    with pytest.raises(DataFormatError, match="bad IDX magic number 0x00000801, expected 0x00000803"):
        read_all(path)
    with pytest.raises(DataFormatError, match="bad IDX magic"):
        count_items(path)


def test_idx_truncated_and_label_mismatch_raise(tmp_path):
    path = write_idx(tmp_path)
    with gzip.open(path, "wb") as f:
        f.write(np.array([0x00000803, 7, 4, 3], dtype=">u4").tobytes() + IMAGES.tobytes()[:-5])
    with pytest.raises(DataFormatError, match="truncated IDX data"):
        read_all(path)
    write_idx(tmp_path, IMAGES[:5], labels=False)  # labels file still says 7
    with pytest.raises(DataFormatError, match="has 7 labels but"):
        read_all(path)


def test_a_folder_of_files_alone_is_unlabelled_items(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "b.txt").write_text("Subject: second\n\nbody")
    (tmp_path / "notes" / "a.txt").write_text("first")
    block = read_all(tmp_path / "notes")
    assert block.kind == "text" and block.ids == ["a.txt", "b.txt"] and block.labels == [None, None]
    assert block.inputs[0] == "first" and block.metadata == [{}, {"subject": "second"}]


def test_bad_folder_and_tar_raise(tmp_path):
    root = write_folder(tmp_path)
    (root / "README").write_text("stray")
    with pytest.raises(DataFormatError, match="found files beside the label folders"):
        read_all(root)
    tar_path = tmp_path / "flat.tar.xz"
    with tarfile.open(tar_path, "w:xz") as tar:
        info = tarfile.TarInfo("just-a-file")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataFormatError, match="is not <split>/<group>/<file>"):
        read_all(tar_path)
    (tmp_path / "broken.tar.xz").write_bytes(b"not xz at all")
    with pytest.raises(DataFormatError, match="cannot read as a tar archive"):
        read_all(tmp_path / "broken.tar.xz")


def test_missing_path_and_bad_arguments(tmp_path):
    with pytest.raises(DataNotFoundError, match="no such file"):
        read_all(tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="block_size"):
        next(iter_blocks(write_npy(tmp_path), block_size=0))
    with pytest.raises(DataFormatError, match="no items"):
        read_all(write_bytes(tmp_path, "empty.jsonl", "\n"))
    with pytest.raises(ValueError, match="subset"):
        load_20newsgroups(write_tar(tmp_path), "all")


def test_block_validates_itself():
    with pytest.raises(ValueError, match="differ in length"):
        Block(["a"], ["x", "y"], [None], [{}], "text")
    with pytest.raises(ValueError, match=r"float32 \(n, d\)"):
        Block(["a"], np.zeros((1, 2)), [None], [{}], "vector")  # float64
    with pytest.raises(ValueError, match="list of texts"):
        Block(["a"], np.zeros((1, 2), np.float32), [None], [{}], "text")


def test_decode_and_subject():
    assert decode_text("café".encode()) == "café"
    assert decode_text(b"caf\xe9") == "café"
    assert subject_of("From: x\nSubject:  Re: hi there \n\nbody") == "Re: hi there"
    assert subject_of("From: x\n\nSubject: in the body") is None


# --- the demo corpus -------------------------------------------------------------------------------------


def test_real_20newsgroups_train_split():
    path = demo_corpus_path()
    if path is None:
        pytest.skip(NO_20NG)
    start = time.perf_counter()
    block = load_20newsgroups(path, "train")
    assert time.perf_counter() - start < 15
    assert len(block) == 11_314 and len(set(block.labels)) == 20
    assert len(set(block.ids)) == 11_314
    assert all("subject" in m for m in block.metadata)


def test_demo_corpus_path_honours_env(tmp_path, monkeypatch):
    path = write_tar(tmp_path)
    monkeypatch.setenv("HAMDEX_DEMO_CORPUS", str(path))
    assert demo_corpus_path() == path
    assert len(load_demo_corpus("train")) == 3
    monkeypatch.setenv("HAMDEX_DEMO_CORPUS", str(tmp_path / "missing.tar.xz"))
    with pytest.raises(DataNotFoundError, match="HAMDEX_DEMO_CORPUS"):
        demo_corpus_path()


def test_demo_corpus_falls_back_to_sklearn(monkeypatch):
    bunch = SimpleNamespace(
        data=["Subject: hi\n\nbody", "no headers"],
        target=np.array([1, 0]),
        target_names=["alt.atheism", "sci.space"],
        filenames=np.array(["/cache/20news_home/20news-bydate-train/sci.space/60000", "/x/alt.atheism/5"]),
    )
    monkeypatch.setattr(newsgroups, "demo_corpus_path", lambda: None)  # patched where load_demo_corpus looks it up
    monkeypatch.setattr("sklearn.datasets.fetch_20newsgroups", lambda **kwargs: bunch)
    block = load_demo_corpus("train")
    assert block.ids == ["sci.space/60000", "alt.atheism/5"] and block.labels == ["sci.space", "alt.atheism"]
    assert block.metadata == [{"label": "sci.space", "subject": "hi"}, {"label": "alt.atheism"}]

    def offline(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr("sklearn.datasets.fetch_20newsgroups", offline)
    with pytest.raises(DataNotFoundError, match="HAMDEX_DEMO_CORPUS.*no network"):
        load_demo_corpus("test")
