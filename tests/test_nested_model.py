"""Nested codes from a model (issue 20, part 1; ``ModelConfig.nested``, docs/nested.md): the members are the groups
of bits between prefixes, a prefix's bits never depend on the bits after it (weights or read-out), the config
round-trips through the checkpoint and its fingerprint, the default leaves models unchanged, bad prefix lists are
refused, and a nested model served over HTTP ranks a ``bits`` search by its prefixes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hamdex.models import checkpoint
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig, member_widths, readout_groups
from hamdex.models.ensemble import MemberEnsemble, build_model
from hamdex.models.train import fit_hasher
from hamdex.service.cli import app
from typer.testing import CliRunner

from tests.conftest import TRAIN, MakeClient, digit_images, synthetic_texts
from tests.helpers import oracle_hits


@pytest.fixture(scope="module")
def nested_pixels():
    """A 32-bit pixel model nested at 8 and 16 bits, itq read-out: members of 8, 8 and 16 bits."""
    overrides = {"n_bits": 32, "hidden": (32,), "nested": (8, 16), "readout": "itq"}
    hasher, _ = fit_hasher(digit_images(200), "pixels", overrides, TRAIN)
    return hasher


def test_config_normalises_and_splits_into_members() -> None:
    config = ModelConfig(input_dim=10, n_bits=64, members=2, nested=[16, 32])
    assert config.nested == (16, 32, 64)
    assert member_widths(config) == [16, 16, 32] and readout_groups(config) == (16, 32, 64)
    # cut at the prefixes and at the preset's member boundaries (every 32 bits)
    config = ModelConfig(input_dim=10, n_bits=128, members=4, nested=(16,))
    assert member_widths(config) == [16, 16, 32, 32, 32]
    model = build_model(config)
    assert isinstance(model, MemberEnsemble) and [m.config.n_bits for m in model.members] == [16, 16, 32, 32, 32]
    assert all(m.config.nested == () and m.config.readout == "threshold" for m in model.members)
    assert member_widths(ModelConfig(input_dim=10, n_bits=64, members=2)) == [32, 32]


@pytest.mark.parametrize(
    ("nested", "message"),
    [
        ((12, 32), "multiples of 8"),
        ((0,), "multiples of 8"),
        ((32, 16), "strictly increasing"),
        ((16, 16), "strictly increasing"),
        ((16, 72), "beyond the code's 64 bits"),
        ((64,), "at least one prefix shorter"),
    ],
)
def test_bad_prefix_lists_are_refused(nested, message) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(input_dim=10, n_bits=64, nested=nested)


def test_default_is_not_nested_and_builds_what_it_built() -> None:
    config = ModelConfig(input_dim=10, n_bits=32)
    assert config.nested == () and member_widths(config) == [32] and readout_groups(config) == ()
    assert isinstance(build_model(config), HashingAutoencoder)
    with pytest.raises(ValueError, match="MemberEnsemble"):
        HashingAutoencoder(ModelConfig(input_dim=10, n_bits=32, nested=(16,)))
    # left out of the fingerprint at its default, as every later field (tests/test_golden_codes.py pins the rest)
    assert "nested" in checkpoint.LATER_FIELDS and checkpoint.LATER_FIELDS["nested"] == ()


def test_prefix_bits_never_depend_on_later_members(nested_pixels) -> None:
    model = nested_pixels.model
    assert model.config.nested == (8, 16, 32) and [m.config.n_bits for m in model.members] == [8, 8, 16]
    rotation = model.readout.rotation
    for end in (8, 16):  # block-diagonal: no bit of a prefix reads out from a score after it
        assert torch.count_nonzero(rotation[:end, end:]) == 0 and torch.count_nonzero(rotation[end:, :end]) == 0
    assert torch.count_nonzero(rotation[:8, :8]) > 8  # a real rotation inside a group, not the identity
    x = nested_pixels.features(digit_images(200))
    before = nested_pixels.encode_features(x).codes
    with torch.no_grad():  # scramble the last member: the first 16 bits (2 bytes) must not move
        for p in model.members[2].parameters():
            p.copy_(torch.randn_like(p))
    after = nested_pixels.encode_features(x).codes
    assert np.array_equal(before[:, :2], after[:, :2]) and not np.array_equal(before[:, 2:], after[:, 2:])
    with torch.no_grad():
        for p in model.members[1].parameters():
            p.copy_(torch.randn_like(p))
    assert np.array_equal(before[:, :1], nested_pixels.encode_features(x).codes[:, :1])


def test_checkpoint_round_trip_and_fingerprint(nested_pixels, tmp_path) -> None:
    fp = checkpoint.save(tmp_path / "m", nested_pixels)
    meta = json.loads((tmp_path / "m" / "hamdex.json").read_text())
    assert meta["model_config"]["nested"] == [8, 16, 32]
    loaded = checkpoint.load(tmp_path / "m", "cpu")
    assert loaded.model.config == nested_pixels.model.config and loaded.fingerprint == fp
    x = nested_pixels.features(digit_images(50))
    assert np.array_equal(loaded.encode_features(x).codes, nested_pixels.encode_features(x).codes)
    # the prefixes are part of the fingerprint: the same tensors under a config without them hash differently
    feat_state, tensors = checkpoint._tensors(nested_pixels.model, nested_pixels.featurizer)
    plain = ModelConfig(**{**meta["model_config"], "nested": ()})
    assert checkpoint.fingerprint(plain, feat_state, tensors) != fp


def test_cli_trains_nested_and_refuses_bad_lists(tmp_path) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"id": str(i), "text": t}) for i, t in enumerate(synthetic_texts())))
    base = ["train", str(path), "--bits", "64", "--hidden", "16", "--epochs", "1", "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "m"), "--nested", "16,32"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "m" / "hamdex.json").read_text())["model_config"]
    # the text preset's 64 bits are two 32-bit members: cut at 16 as well
    assert config["nested"] == [16, 32, 64] and config["members"] == 2 and config["readout"] == "itq"
    info = CliRunner().invoke(app, ["info", str(tmp_path / "m")])
    assert "nested codes: prefixes of 16, 32, 64 bits" in info.output, info.output
    for bad, message in (("12", "multiples of 8"), ("32,16", "strictly increasing"), ("a,b", "comma-separated")):
        result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "x"), "--nested", bad])
        assert result.exit_code == 2 and message in result.output, result.output


def test_served_nested_model_searches_by_prefix(make_client: MakeClient, tmp_path: Path) -> None:
    texts = synthetic_texts()
    hasher, _ = fit_hasher(texts, "text", {"n_bits": 32, "hidden": (32,), "nested": (16,)}, TRAIN)
    checkpoint.save(tmp_path / "model", hasher)
    client = make_client(tmp_path / "model")
    info = client.get("/info").json()
    assert info["nested"] == [16, 32] and info["n_bits"] == 32
    ids = [f"t{i:03d}" for i in range(len(texts))]
    resp = client.post("/v1/items", json={"items": [{"id": i, "input": t} for i, t in zip(ids, texts, strict=True)]})
    assert resp.status_code == 200, resp.text
    codes = hasher.encode(texts).codes
    for bits in (16, 32):
        resp = client.post("/v1/search", json={"queries": [{"input": texts[0]}], "k": 5, "bits": bits})
        assert resp.status_code == 200, resp.text
        hits = [(h["distance"], h["id"]) for h in resp.json()["results"][0]]
        assert hits == oracle_hits(codes[0, : bits // 8], ids, codes[:, : bits // 8])[:5]
