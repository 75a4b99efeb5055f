"""One row shape in files and over HTTP (issue 22): a data file's row may name its input ``input`` (a text or a
vector), as an HTTP row does, and a bulk NDJSON row may name it ``text`` or ``vector``, as a data file does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hamdex.models import data
from hamdex.service.bulk.ndjson import BadLine, parse_line
from hamdex.service.settings import Settings

from tests.conftest import MakeClient
from tests.helpers import assert_error

NDJSON = {"content-type": "application/x-ndjson"}


def test_a_data_file_takes_input_for_text_or_vector(tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"id": "a", "input": "goal team", "topic": 1}\n{"id": "b", "text": "rocket launch"}\n')
    block = data.read_all(str(texts))
    assert block.kind == "text" and block.inputs == ["goal team", "rocket launch"]
    assert block.metadata[0] == {"topic": 1}  # input is the input, not metadata
    vectors = tmp_path / "vectors.jsonl"
    vectors.write_text('{"id": "a", "input": [1, 2]}\n{"id": "b", "vector": [3, 4]}\n')
    block = data.read_all(str(vectors))
    assert block.kind == "vector" and np.array_equal(block.inputs, [[1, 2], [3, 4]])
    both = tmp_path / "both.jsonl"
    both.write_text('{"id": "a", "input": "x", "text": "y"}\n')
    with pytest.raises(data.DataFormatError):
        data.read_all(str(both))


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"id": "a", "text": "goal team"}, "goal team"),
        ({"id": "a", "vector": [1.0, 2.0]}, [1.0, 2.0]),
        ({"id": "a", "input": "goal team"}, "goal team"),
    ],
)
def test_a_bulk_row_takes_text_or_vector(row: dict, expected: object) -> None:
    parsed = parse_line(json.dumps(row).encode(), Settings())
    assert parsed.input == expected if isinstance(expected, str) else np.array_equal(parsed.input, expected)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"id": "a", "text": "x", "input": "y"}, "data_format"),
        ({"id": "a", "text": [1.0]}, "input_type"),
        ({"id": "a", "vector": "x"}, "input_type"),
    ],
)
def test_a_bulk_row_with_other_than_one_input_is_bad(row: dict, reason: str) -> None:
    with pytest.raises(BadLine) as bad:
        parse_line(json.dumps(row).encode(), Settings())
    assert bad.value.reason == reason


def test_a_data_file_line_goes_through_the_bulk_route_as_it_is(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    body = b'{"id": "a", "text": "goal team", "metadata": {"n": 1}}\n{"id": "b", "input": "rocket launch"}\n'
    resp = client.post("/v1/items:bulk", content=body, headers=NDJSON)
    assert resp.status_code == 200, resp.text
    assert resp.json()["items"] == 2 and client.get("/v1/items/a").json()["metadata"] == {"n": 1}


def test_the_items_route_takes_a_data_files_row(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir)
    items = [{"id": "a", "text": "goal team", "metadata": {"n": 1}}, {"id": "b", "input": "goal team"}]
    resp = client.post("/v1/items", json={"items": items})
    assert resp.status_code == 200, resp.text
    assert client.get("/v1/items/a").json()["code"] == client.get("/v1/items/b").json()["code"]
    for bad in ({"id": "c", "text": "x", "input": "y"}, {"id": "c", "text": None}, {"id": "c", "text": 1}):
        assert_error(client.post("/v1/items", json={"items": [bad]}), 422, "validation_error")
    document = client.get("/openapi.json").json()["components"]["schemas"]["ItemIn"]
    assert "text" in document["properties"] and "vector" not in document["properties"]  # a text model


def test_a_dense_models_items_take_vector(make_client: MakeClient, dense_model_dir: Path) -> None:
    client = make_client(dense_model_dir)
    vector = [float(i) for i in range(12)]
    resp = client.post("/v1/items", json={"items": [{"id": "a", "vector": vector}, {"id": "b", "input": vector}]})
    assert resp.status_code == 200, resp.text
    assert client.get("/v1/items/a").json()["code"] == client.get("/v1/items/b").json()["code"]
    document = client.get("/openapi.json").json()["components"]["schemas"]["ItemIn"]
    assert document["properties"]["vector"]["minItems"] == 12 and "text" not in document["properties"]
