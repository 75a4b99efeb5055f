"""benchmarks/nested_quality.py's ``--data 20ng``: 20 Newsgroups on benchmarks/quality.py's protocol (every training
post the database, every test post a query), so that a nested model's rows sit beside quality.py's dedicated ones."""

from __future__ import annotations

from hamdex.models import data


def _posts(part: str, n: int) -> data.Block:
    labels = [f"group{i % 2}" for i in range(n)]
    return data.Block(
        [f"{part}/{i}" for i in range(n)], [f"{part} post {i}" for i in range(n)], labels, [{}] * n, "text"
    )


def test_20ng_takes_every_training_post_and_every_test_post(monkeypatch):
    from benchmarks import nested_quality  # at first use, not at collection: the module sets TQDM_DISABLE

    monkeypatch.setattr(
        nested_quality.data, "load_20newsgroups", lambda path, part: _posts(part, 7 if part == "train" else 3)
    )
    assert nested_quality.parse_args(["--data", "20ng", "--nested-only"]).data == "20ng"
    split = nested_quality.DATASETS["20ng"]()
    assert split.train.inputs == [f"train post {i}" for i in range(7)]
    assert split.queries.inputs == [f"test post {i}" for i in range(3)]
    assert list(split.queries.labels) == ["group0", "group1", "group0"]
    assert split.train.kind == split.queries.kind == "text"
