"""Training with labels (issue 20, part 3): a class-conditioned decoder and a supervised contrastive term; the encoder
never takes a label."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from hamdex.models import checkpoint
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig
from hamdex.models.bits import hamming
from hamdex.models.ensemble import build_model
from hamdex.models.train import TrainConfig, condition_rate, encode_labels, fit_hasher
from hamdex.service.cli import app
from hamdex.service.cli_info import labels_line
from sklearn.datasets import load_digits
from typer.testing import CliRunner

TOPICS = {"space": "orbit rocket launch nasa shuttle", "cars": "engine wheel brake dealer sedan"}
CFG = TrainConfig(epochs=4, progress=False, safeguard=False, device="cpu")
SMALL = {"n_bits": 16, "hidden": (64,)}
WIDE = {"n_bits": 32, "hidden": (256,)}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images * 255 / 16).astype(np.uint8), d.target.astype(str)


def _gathering(codes: np.ndarray, labels: np.ndarray) -> float:
    """Mean Hamming distance within a class over the mean between classes (lower: classes gather)."""
    dist = hamming(codes, codes).astype(float)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    return dist[same].mean() / dist[labels[:, None] != labels[None, :]].mean()


def test_encode_labels_indexes_sorted_names_and_keeps_a_seeded_share():
    codes, names = encode_labels(["b", None, "a", "", "b"])
    assert names == ["a", "b"] and codes.tolist() == [1, -1, 0, -1, 1]
    labels = [str(i % 4) for i in range(1000)]
    kept, _ = encode_labels(labels, 0.1, seed=3)
    assert (kept >= 0).sum() == 100
    assert np.array_equal(kept, encode_labels(labels, 0.1, seed=3)[0])
    with pytest.raises(ValueError, match="two classes"):
        encode_labels(["a", "a", None])
    with pytest.raises(ValueError, match="fraction"):
        encode_labels(["a", "b"], 0.0)


def test_labels_gather_a_class_and_travel_in_the_checkpoint(digits, tmp_path):
    images, labels = digits
    cfg = TrainConfig(epochs=30, progress=False, safeguard=False, device="cpu")
    plain, _ = fit_hasher(images, "pixels", WIDE, cfg)  # as tests/test_train.py: it learns the digits
    labelled, _ = fit_hasher(images, "pixels", WIDE, cfg, labels=list(labels))
    assert labelled.model.config.label_names == tuple(str(i) for i in range(10))
    report = labelled.info["report"]["labels"]
    assert report == {"labelled": len(labels), "propagated": 0, "classes": 10, "label_space": None}  # no neighbours
    codes = labelled.encode(images).codes  # no labels at encode time
    assert _gathering(codes, labels) < _gathering(plain.encode(images).codes, labels) - 0.05
    checkpoint.save(tmp_path / "m", labelled)
    loaded = checkpoint.load(tmp_path / "m", device="cpu")
    assert loaded.model.config == labelled.model.config
    assert np.array_equal(loaded.encode(images[:50]).codes, codes[:50])
    assert loaded.fingerprint == labelled.fingerprint


def test_partial_labels_train_and_report_the_labelled_count(digits):
    images, labels = digits
    few = [lab if i % 10 == 0 else None for i, lab in enumerate(labels)]  # 10% labelled
    cfg = dataclasses.replace(CFG, label_propagation=0.5)
    hasher, _ = fit_hasher(images, "pixels", {**SMALL, "members": 2}, cfg, labels=few)
    report = hasher.info["report"]["labels"]
    assert (report["labelled"], report["classes"]) == (180, 10)
    # some unlabelled training rows took a class from the kNN graph: at most half of them (the held-out tenth none)
    assert 0 < report["propagated"] <= 0.5 * (len(labels) - 180) + 1
    assert hasher.encode(images[:5]).codes.shape == (5, 2)


def test_condition_rate_gives_the_decoder_a_class_for_at_most_a_tenth_of_the_items():
    assert condition_rate(np.array([0, 1] * 50)) == pytest.approx(0.1)  # every item labelled
    assert condition_rate(np.array([0, 1, -1, -1] * 25)) == pytest.approx(0.2)
    assert condition_rate(np.array([0] + [-1] * 9)) == 1.0  # 10% labelled: every labelled item, as before
    assert condition_rate(np.full(10, -1)) == 1.0


@pytest.mark.parametrize(("every", "share"), [(1, 0.1), (10, 0.1), (50, 0.02)])
def test_the_decoder_sees_the_classes_of_about_a_tenth_of_the_items(digits, monkeypatch, every, share):
    """Whatever share of the items is labelled, the decoder is given a class for at most about a tenth of them
    (all labelled: a random tenth each step); the label term still sees every labelled item."""
    import hamdex.models.train as train_module

    images, labels = digits
    seen: list[torch.Tensor] = []
    build = train_module.build_model

    def spying(config):
        model = build(config)
        forward = model.forward

        def recording(x, target=None, labels=None):
            if labels is not None and model.training:
                seen.append(labels.clone())
            return forward(x, target, labels)

        model.forward = recording
        return model

    monkeypatch.setattr(train_module, "build_model", spying)
    some = [lab if i % every == 0 else None for i, lab in enumerate(labels)]
    fit_hasher(images, "pixels", SMALL, dataclasses.replace(CFG, epochs=2), labels=some)
    given = torch.cat(seen)
    assert len(given) > 1000 and abs(float((given >= 0).float().mean()) - share) < 0.03


def test_the_unlabelled_model_is_unchanged():
    config = ModelConfig(input_dim=8, n_bits=8, recon="gaussian", hidden=(8,))
    assert "label_embedding" not in "".join(HashingAutoencoder(config).state_dict())
    assert checkpoint.LATER_FIELDS["label_names"] == config.label_names  # left out of the fingerprint


@pytest.mark.parametrize("members", [1, 2])
def test_the_decoder_is_conditioned_only_through_the_label_embedding(members):
    torch.manual_seed(0)
    config = ModelConfig(input_dim=8, n_bits=16, recon="gaussian", hidden=(8,), members=members, label_names=("a", "b"))
    model = build_model(config).eval()
    x = torch.rand(4, 8)
    bits, _ = model.encode(x)
    assert model(x).loss == model(x, labels=torch.tensor([-1, -1, -1, -1])).loss  # None = unknown
    first = model if members == 1 else model.members[0]
    with torch.no_grad():
        first.label_embedding.weight[0] += 1.0
    assert model(x, labels=torch.tensor([0, 0, 1, 1])).loss != model(x).loss
    assert torch.equal(model.encode(x)[0], bits)  # the encoder never reads a label


def test_decoding_a_labelled_model_uses_the_unknown_class():
    from hamdex.models.generate import decode_bits

    torch.manual_seed(0)
    config = ModelConfig(input_dim=8, n_bits=16, recon="gaussian", hidden=(8,), label_names=("a", "b"))
    model = build_model(config).eval()
    bits, _ = model.encode(torch.rand(4, 8))
    before = decode_bits(model, bits)
    with torch.no_grad():
        model.label_embedding.weight[2] += 1.0  # the "unknown" row: what a decode without a label adds
    assert not torch.allclose(decode_bits(model, bits), before)


@pytest.mark.parametrize("names", [("a",), ("a", "a")])
def test_label_names_are_two_or_more_distinct(names):
    with pytest.raises(ValueError, match="label_names"):
        ModelConfig(input_dim=8, label_names=names)


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.jsonl"
    rows = [
        {"id": f"{t}-{i}", "text": f"{words} note {i}", "label": t, "topic": t if i % 3 else ""}
        for t, words in TOPICS.items()
        for i in range(30)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _invoke(texts_file, out, *extra):
    args = ["train", str(texts_file), "--out", str(out), "--bits", "16", "--hidden", "16", "--device", "cpu"]
    return CliRunner().invoke(app, [*args, "--epochs", "2", *extra])


@pytest.mark.parametrize(("field", "labelled"), [("label", 60), ("topic", 40)])
def test_cli_trains_with_a_label_field(texts_file, tmp_path, field, labelled):
    result = _invoke(texts_file, tmp_path / "m", "--label-field", field)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "hamdex.json").read_text())
    # every item labelled: nothing to spread; 40 labelled: too few to check a propagation against (models.propagate)
    line = f"labels: {labelled} labelled items, 2 classes"
    assert line in result.output
    assert meta["model_config"]["label_names"] == ["cars", "space"]
    # 60 or 40 labelled items: 12 or 8 to hide, too few to check the classes in the neighbour space against
    unchecked = {"used": False, "weight": 1.0, "classifier": None, "accuracy": None, "check": None}
    assert meta["report"]["labels"] == {
        "labelled": labelled,
        "propagated": 0,
        "classes": 2,
        "label_space": unchecked,
        "readout": {"fisher": False},
    }
    result = CliRunner().invoke(app, ["info", str(tmp_path / "m")])
    assert line in result.output


def test_cli_fisher_readout_is_recorded_and_reported(texts_file, tmp_path):
    result = _invoke(texts_file, tmp_path / "m", "--label-field", "label", "--fisher-readout")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "hamdex.json").read_text())
    assert meta["train_config"]["fisher_readout"] is True
    assert meta["report"]["labels"]["readout"] == {"fisher": True}  # 30 labelled items a class
    assert "read out along the classes (Fisher)" in result.output


def test_cli_label_fraction_keeps_a_share(texts_file, tmp_path):
    result = _invoke(
        texts_file, tmp_path / "m", "--label-field", "label", "--label-fraction", "0.5", "--label-weight", "3"
    )
    assert result.exit_code == 0, result.output
    assert "labels: 30 labelled items, 2 classes" in result.output
    assert json.loads((tmp_path / "m" / "hamdex.json").read_text())["train_config"]["label_weight"] == 3.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--label-field", "colour"], "no item has a 'colour' field"),
        (["--label-fraction", "0.5"], "--label-fraction goes with --label-field"),
        (["--label-weight", "3"], "--label-space and --fisher-readout go with --label-field"),
        (["--label-propagation", "0.5"], "--label-space and --fisher-readout go with --label-field"),
        (["--label-space", "1"], "--label-space and --fisher-readout go with --label-field"),
        (["--fisher-readout"], "--label-weight, --label-propagation, --label-space and --fisher-readout go with"),
        (["--label-field", "label", "--label-fraction", "0.01"], "two classes"),
    ],
)
def test_cli_label_errors(texts_file, tmp_path, extra, message):
    result = _invoke(texts_file, tmp_path / "m", *extra)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_the_labels_line_counts_propagated_items():
    line = labels_line({"labelled": 1131, "propagated": 4582, "classes": 20})
    assert line == "1,131 labelled items (+4,582 propagated), 20 classes"
    assert labels_line({"labelled": 60, "classes": 2}) == "60 labelled items, 2 classes"  # reports before it
    used = {"used": True, "weight": 1.0, "check": {"without": 0.61, "with": 0.7}}
    line = labels_line({"labelled": 60, "classes": 2, "label_space": used})
    assert line == "60 labelled items, 2 classes; neighbours found with the classes (a classifier's probabilities)"
    assert "neighbours" not in labels_line({"labelled": 60, "classes": 2, "label_space": {**used, "used": False}})
