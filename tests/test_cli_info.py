"""``hamdex info MODEL``: the model card from the checkpoint's metadata, as text and as JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hamdex.models import checkpoint
from hamdex.service.cli import app
from typer.testing import CliRunner


def test_text_card(dense_model_dir: Path) -> None:
    result = CliRunner().invoke(app, ["info", str(dense_model_dir)], terminal_width=200)
    assert result.exit_code == 0, result.output
    meta = checkpoint.read_meta(dense_model_dir)
    text = result.output
    assert f"fingerprint {meta['fingerprint']}" in text
    assert f"{meta['model_config']['n_bits']} bits, {meta['model_config']['bottleneck']} bottleneck" in text
    for section in ("training report", "code health", "safeguard:", "model config", "featurizer dense", "versions"):
        assert section in text
    assert f"hamdex {meta['versions']['hamdex']}" in text


def test_json_card_matches_the_metadata(dense_model_dir: Path) -> None:
    result = CliRunner().invoke(app, ["info", str(dense_model_dir), "--json", "--verify"])
    assert result.exit_code == 0, result.output
    card, meta = json.loads(result.output), checkpoint.read_meta(dense_model_dir)
    assert card["verified"] is True and card["fingerprint"] == meta["fingerprint"]
    for key in ("model_config", "train_config", "report", "versions"):
        assert card[key] == meta[key]
    assert card["featurizer"]["kind"] == meta["featurizer"]["kind"]


def test_missing_and_tampered_checkpoints(dense_model_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["info", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no hamdex checkpoint" in result.output
    copy = tmp_path / "copy"
    shutil.copytree(dense_model_dir, copy)
    meta = json.loads((copy / checkpoint.META).read_text())
    meta["fingerprint"] = "0" * 16
    (copy / checkpoint.META).write_text(json.dumps(meta))
    assert CliRunner().invoke(app, ["info", str(copy)]).exit_code == 0  # the card alone reads the metadata
    result = CliRunner().invoke(app, ["info", str(copy), "--verify"])
    assert result.exit_code == 2 and "fingerprint" in result.output
