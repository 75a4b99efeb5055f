import json

import pytest
from hamdex.models.presets import PRESETS, preset
from hamdex.service.cli import app
from typer.testing import CliRunner

TOPICS = {"space": "orbit rocket launch nasa shuttle", "cars": "engine wheel brake dealer sedan"}


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.jsonl"
    rows = [
        {"id": f"{t}-{i}", "text": f"{words} note {i}", "label": t} for t, words in TOPICS.items() for i in range(30)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _train(texts_file, out, *extra):
    result = CliRunner().invoke(
        app, ["train", str(texts_file), "--out", str(out), "--bits", "16", "--hidden", "16", "--device", "cpu", *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "hamdex.json").read_text())


def test_train_uses_the_text_preset(texts_file, tmp_path):
    meta = _train(texts_file, tmp_path / "m", "--epochs", "2")  # 16 bits
    model_over, train_over = PRESETS["text"]
    assert meta["featurizer"]["kind"] == "text"
    assert meta["model_config"]["kl_weight"] == model_over["kl_weight"]  # not raised below 32 bits
    assert meta["train_config"]["neighbours"] == train_over["neighbours"]
    assert meta["train_config"]["subject_weight"] == train_over["subject_weight"] > 0
    assert meta["model_config"]["input_dropout"] == 0.0  # denoising is the image preset's, not the text one's
    assert meta["train_config"]["epochs"] == 2  # an explicit flag wins over the preset


def test_explicit_flags_override_the_preset(texts_file, tmp_path):
    meta = _train(
        texts_file,
        tmp_path / "m",
        "--epochs",
        "1",
        "--neighbours",
        "0",
        "--kl-weight",
        "0.05",
        "--lr",
        "0.002",
        "--batch-size",
        "32",
    )
    assert meta["train_config"]["lr"] == 0.002 and meta["train_config"]["batch_size"] == 32
    assert meta["train_config"]["neighbours"] == 0
    assert meta["train_config"]["contrastive_weight"] == 0  # switched off with the neighbours it needs
    # so is how they are found: over the full vocabulary, with the subject line
    assert meta["train_config"]["full_vocab_neighbours"] is False and meta["train_config"]["subject_weight"] == 0
    assert meta["model_config"]["kl_weight"] == 0.05


def test_contrastive_weight_flag(texts_file, tmp_path):
    meta = _train(texts_file, tmp_path / "m", "--epochs", "1", "--contrastive-weight", "0.25")
    assert meta["train_config"]["contrastive_weight"] == 0.25
    result = CliRunner().invoke(
        app, ["train", str(texts_file), "--out", str(tmp_path / "x"), "--neighbours", "0", "--contrastive-weight", "1"]
    )
    assert result.exit_code == 2 and "needs neighbours" in result.output


def test_subject_weight_flag(texts_file, tmp_path):
    meta = _train(texts_file, tmp_path / "m", "--epochs", "1", "--subject-weight", "0")
    assert meta["train_config"]["subject_weight"] == 0 and meta["train_config"]["full_vocab_neighbours"] is True
    meta = _train(texts_file, tmp_path / "w", "--epochs", "1", "--subject-weight", "0.25")
    assert meta["train_config"]["subject_weight"] == 0.25
    result = CliRunner().invoke(app, ["train", str(texts_file), "--out", str(tmp_path / "x"), "--subject-weight", "-1"])
    assert result.exit_code == 2 and "subject_weight" in result.output


def test_bad_settings_exit_with_a_message(texts_file, tmp_path):
    result = CliRunner().invoke(app, ["train", str(texts_file), "--out", str(tmp_path / "m"), "--bits", "12"])
    assert result.exit_code == 2
    assert "multiple of 8" in result.output


def test_preset_kl_weight_scales_with_bits_per_member():
    at32 = preset("text", 32)[0]["kl_weight"]
    assert at32 == PRESETS["text"][0]["kl_weight"]
    assert preset("text", 128)[0]["kl_weight"] == at32  # four 32-bit members
    assert preset("text", 128, members=1)[0]["kl_weight"] == at32 / 4  # one 128-bit model
    assert preset("text", 128, members=2)[0]["kl_weight"] == at32 / 2
    assert preset("pixels", 128)[0]["kl_weight"] == PRESETS["pixels"][0]["kl_weight"]  # measured: no scaling


def test_members_flag_overrides_the_preset(texts_file, tmp_path):
    meta = _train(texts_file, tmp_path / "m", "--epochs", "1", "--bits", "64", "--members", "1")
    assert meta["model_config"]["members"] == 1
    assert meta["model_config"]["kl_weight"] == PRESETS["text"][0]["kl_weight"] / 2
    meta = _train(texts_file, tmp_path / "e", "--epochs", "1", "--bits", "64")
    assert meta["model_config"]["members"] == 2  # the text preset: 32-bit members
    result = CliRunner().invoke(app, ["train", str(texts_file), "--out", str(tmp_path / "x"), "--members", "3"])
    assert result.exit_code == 2 and "members" in result.output


def test_presets_are_copies_and_unknown_kinds_are_named():
    model_over, _ = preset("text")
    model_over["kl_weight"] = 99
    assert preset("text")[0]["kl_weight"] != 99
    with pytest.raises(ValueError, match="text, pixels, dense"):
        preset("audio")


def test_pixels_train_with_the_preset_and_without_neighbours(tmp_path):
    """The pixel preset finds neighbours in PCA-whitened space; --neighbours 0 drops that with the neighbours."""
    import numpy as np
    from sklearn.datasets import load_digits

    path = tmp_path / "digits.npy"
    np.save(path, (load_digits().images[:120] * 255 / 16).astype(np.uint8))
    meta = _train(path, tmp_path / "m", "--epochs", "1")
    # the preset's 400 whitened dimensions and 30 neighbours, scaled to 120 images (models.presets.for_size)
    assert meta["train_config"]["neighbour_whiten"] == 12 and meta["train_config"]["neighbours"] == 10
    assert meta["train_config"]["target_features"] == PRESETS["pixels"][1]["target_features"] == "scattering"
    assert meta["model_config"]["recon"] == "gaussian" and meta["model_config"]["output_dim"] == 81 * 2 * 2
    meta = _train(path, tmp_path / "m0", "--epochs", "1", "--neighbours", "0")
    assert meta["train_config"]["neighbours"] == 0 and meta["train_config"]["neighbour_whiten"] == 0
    meta = _train(path, tmp_path / "in", "--epochs", "1", "--target-features", "input")
    assert meta["model_config"]["recon"] == "bernoulli" and meta["model_config"]["output_dim"] == 0
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "x"), "--target-features", "edges"])
    assert result.exit_code == 2 and "--target-features" in result.output  # a choice: refused before training


def test_readout_flag_overrides_the_preset(tmp_path):
    import numpy as np
    from sklearn.datasets import load_digits

    path = tmp_path / "digits.npy"
    np.save(path, (load_digits().images[:120] * 255 / 16).astype(np.uint8))
    meta = _train(path, tmp_path / "m", "--epochs", "1", "--neighbours", "0")
    assert meta["model_config"]["readout"] == PRESETS["pixels"][0]["readout"] == "itq"
    assert meta["model_config"]["input_dropout"] == PRESETS["pixels"][0]["input_dropout"] == 0.3  # denoising
    meta = _train(path, tmp_path / "t", "--epochs", "1", "--neighbours", "0", "--readout", "threshold")
    assert meta["model_config"]["readout"] == "threshold"
    meta = _train(path, tmp_path / "d", "--epochs", "1", "--neighbours", "0", "--input-dropout", "0")
    assert meta["model_config"]["input_dropout"] == 0.0  # a value given, zero too, wins over the preset's
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "x"), "--readout", "pca"])
    assert result.exit_code == 2 and "'pca' is not one of 'threshold', 'itq'" in result.output


def test_scattering_targets_need_images(texts_file, tmp_path):
    result = CliRunner().invoke(
        app, ["train", str(texts_file), "--out", str(tmp_path / "x"), "--target-features", "scattering"]
    )
    assert result.exit_code == 2 and "needs images" in result.output
