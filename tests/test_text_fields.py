"""Text sets as people download them: the text in 'title' / 'content' / 'Description' columns (models.data.fields),
read alike by every reader and by ``hamdex index``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hamdex.index import open_collection
from hamdex.models import checkpoint
from hamdex.models.data import DataFormatError, iter_blocks, read_all
from hamdex.models.data.fields import input_fields
from hamdex.service.cli import _labelled_by, app
from typer.testing import CliRunner

AG_ROWS = [
    ("3", "Wall St. Bears Claw Back", "Short-sellers are seeing green again."),
    ("4", "Google IPO faces hurdles", "The search company said shares would be priced."),
]


def test_text_fields_are_matched_without_case_in_heading_then_body_order():
    assert input_fields(["Class Index", "Description", "Title"]).text == ["Title", "Description"]
    assert input_fields(["content", "title", "label"]).text == ["title", "content"]
    assert not input_fields(["text", "title"])  # an item with a text field of its own keeps it
    assert not input_fields(["id", "label", "notes"])
    assert input_fields(["title", "Embedding"]) == ("Embedding", [])  # the vector first, the title metadata


def test_jsonl_title_and_content_are_the_text_and_not_metadata(tmp_path: Path):
    records = [
        {"id": "a", "title": "Abbott Farnham", "content": "An English footballer.", "label": 4, "year": 1},
        {"title": "", "content": "Only a body."},
        {"text": "Its own text.", "title": "kept as metadata"},
    ]
    path = tmp_path / "db.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    block = read_all(path)
    assert block.inputs == ["Abbott Farnham\n\nAn English footballer.", "Only a body.", "Its own text."]
    assert block.labels == ["4", None, None]
    assert block.metadata == [{"year": 1, "label": "4"}, {}, {"title": "kept as metadata"}]


def test_csv_with_a_header_of_other_names(tmp_path: Path):
    path = tmp_path / "ag.csv"
    lines = ["Class Index,Title,Description"] + [f'{c},"{t}","{d}"' for c, t, d in AG_ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    block = read_all(path)
    assert block.kind == "text"
    assert block.inputs == [f"{t}\n\n{d}" for _, t, d in AG_ROWS]
    assert block.metadata == [{"Class Index": c} for c, _, _ in AG_ROWS]


def test_csv_without_a_header_line_says_how_to_name_its_columns(tmp_path: Path):
    path = tmp_path / "ag.csv"
    path.write_text("\n".join(f'"{c}","{t}","{d}"' for c, t, d in AG_ROWS) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"without a header line: name its columns \(hamdex --columns"):
        read_all(path)
    block = read_all(path, columns=["label", "title", "description"])
    assert block.labels == ["3", "4"] and block.inputs[0] == f"{AG_ROWS[0][1]}\n\n{AG_ROWS[0][2]}"


def test_parquet_text_columns_and_a_row_without_text(tmp_path: Path):
    table = pa.table({"Title": ["a b", None, "e"], "Content": ["c", None, None], "label": ["x", "y", "z"]})
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(DataFormatError, match="'text' is null at row 1"):
        read_all(tmp_path / "p.parquet")
    skipped: list[DataFormatError] = []
    block = next(iter_blocks(tmp_path / "p.parquet", on_error=skipped.append))
    assert block.inputs == ["a b\n\nc", "e"] and block.ids == ["0", "2"] and block.labels == ["x", "z"]
    assert len(skipped) == 1 and block.metadata == [{"label": "x"}, {"label": "z"}]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"title": 7, "content": "x"}, "'title' holds text, so must be a string"),
        ({"title": "", "content": " "}, "item has no text: 'title' and 'content' are empty"),
        ({"id": 1, "notes": "x"}, "neither a non-empty 'text' nor a 'vector'"),
    ],
)
def test_bad_text_fields_raise_and_skip(tmp_path: Path, record: dict, message: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({"title": "fine"}) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=message):
        read_all(path)
    skipped: list[DataFormatError] = []
    block = next(iter_blocks(path, on_error=skipped.append))
    assert block.inputs == ["fine"] and block.ids == ["1"] and len(skipped) == 1


def test_index_reads_them_as_train_did(tmp_path: Path, text_model_dir: Path):
    """``hamdex index`` of a title / description file gives the codes of the joined texts."""
    path = tmp_path / "ag.csv"
    lines = ["Class Index,Title,Description"] + [f'{c},"{t}","{d}"' for c, t, d in AG_ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    coll = tmp_path / "coll"
    result = CliRunner().invoke(app, ["index", str(path), "-m", str(text_model_dir), "-c", str(coll)])
    assert result.exit_code == 0, result.output
    hasher = checkpoint.load(text_model_dir, "cpu")
    expected = hasher.encode([f"{t}\n\n{d}" for _, t, d in AG_ROWS]).codes
    with open_collection(coll) as collection:
        assert len(collection) == 2
        for i, code in enumerate(expected):
            item = collection.get(str(i))
            assert item is not None and (item.code == code).all() and item.metadata == {"Class Index": AG_ROWS[i][0]}


def test_index_names_the_columns_of_a_csv_without_a_header_line(tmp_path: Path, text_model_dir: Path):
    path = tmp_path / "ag.csv"
    path.write_text("\n".join(f'"{c}","{t}","{d}"' for c, t, d in AG_ROWS) + "\n", encoding="utf-8")
    coll, runner = tmp_path / "coll", CliRunner()
    refused = runner.invoke(app, ["index", str(path), "-m", str(text_model_dir), "-c", str(coll), "--strict"])
    assert refused.exit_code != 0 and "--columns" in refused.output
    names = ["--columns", "label,title,description"]
    result = runner.invoke(app, ["index", str(path), "-m", str(text_model_dir), "-c", str(coll), *names])
    assert result.exit_code == 0, result.output
    with open_collection(coll) as collection:
        assert len(collection) == 2
        item = collection.get("1")
        assert item is not None and item.metadata == {"label": "4"}


def test_eval_reads_the_label_from_the_field_named(tmp_path: Path, text_model_dir: Path):
    """A labelled set whose labels are not called 'label': a clear exit naming the option, then the numbers."""
    path = tmp_path / "ag.csv"
    topics = {"1": "cup final team match goal", "2": "shares bank profit market rate"}
    lines = ["Class Index,Title,Description"]
    lines += [f'{c},"{words.split()[i % 5]} news","{words} {i}"' for i in range(40) for c, words in topics.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["eval", "-m", str(text_model_dir), "--database", str(path), "--queries", str(path), "--k", "5"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--label-field" in refused.output and "Class Index" in refused.output
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, [*args, "--label-field", "Class Index", "--baselines", "itq", "--json", str(out)])
    assert result.exit_code == 0, result.output
    methods = json.loads(out.read_text())["methods"]
    assert set(methods) == {"hamdex", "itq"} and all(0 <= m["p@5"] <= 1 for m in methods.values())
    block = _labelled_by(read_all(path), "Class Index", str(path))
    assert block.labels == [c for _ in range(40) for c in topics]  # the column's values, item by item


def test_a_table_of_numbers_with_a_subject_column_stays_vectors(tmp_path: Path):
    """'subject' is not a text field: measurements name their subject ids so."""
    path = tmp_path / "m.csv"
    path.write_text("subject,label,a,b\n17,x,0.5,1\n18,y,2,3\n", encoding="utf-8")
    block = read_all(path)
    assert block.kind == "vector" and block.inputs.tolist() == [[17, 0.5, 1], [18, 2, 3]]


def test_an_embedding_field_is_the_vector_and_the_title_metadata(tmp_path: Path):
    """Embedding exports call the vector 'embedding': it is the input, a title beside it is shown, not encoded."""
    rows = [{"id": "a", "title": "first", "embedding": [0.5, 1.0]}, {"id": "b", "title": "second", "embedding": [2, 3]}]
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "e.csv").write_text('id,title,Embedding\na,first,"[0.5, 1.0]"\nb,second,2 3\n', encoding="utf-8")
    table = {"id": ["a", "b"], "title": ["first", "second"], "embeddings": [[0.5, 1.0], [2.0, 3.0]]}
    pq.write_table(pa.table(table), tmp_path / "e.parquet")
    for name in ("e.jsonl", "e.csv", "e.parquet"):
        block = read_all(tmp_path / name)
        assert block.kind == "vector" and block.inputs.tolist() == [[0.5, 1.0], [2.0, 3.0]], name
        assert block.ids == ["a", "b"] and block.metadata == [{"title": "first"}, {"title": "second"}], name
