"""The sentence featurizer (models.sentence) with the real all-MiniLM-L6-v2 on a few dozen short texts: its
embeddings are sentence-transformers' own, a checkpoint records the encoder (not its weights) and refuses another
one, and ``hamdex train --featurizer sentence`` gives a model the service serves from raw texts.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hamdex.models import bits, checkpoint, sentence
from hamdex.models.featurizers import InputError, make_featurizer
from hamdex.models.hasher import Hasher
from hamdex.models.train import TrainConfig, fit_hasher
from hamdex.service.cli import app
from typer.testing import CliRunner

from tests.conftest import MakeClient, synthetic_texts

TEXTS = synthetic_texts(n_per_topic=8)  # 32 texts of 4-6 words from four topics
TRAIN = TrainConfig(epochs=2, progress=False, seed=0, device="cpu")
SMALL = {"n_bits": 16, "hidden": (32,)}


def _train(tmp: Path, **options: object) -> tuple[Hasher, Path]:
    hasher, _ = fit_hasher(TEXTS, "sentence", SMALL, TRAIN, {"device": "cpu", **options})
    path = tmp / "model"
    checkpoint.save(path, hasher)
    return hasher, path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Hasher, Path]:
    """A 16-bit sentence model on the default encoder, saved."""
    return _train(tmp_path_factory.mktemp("sentence"))


@pytest.fixture
def encoder_copy(tmp_path: Path) -> Path:
    """A directory holding the default encoder: its weights copied (so they can be tampered with), the rest linked."""
    copy = tmp_path / "my-encoder"
    for src in sentence.default_dir().rglob("*"):
        if src.is_file():
            dst = copy / src.relative_to(sentence.default_dir())
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst) if src.suffix in sentence.WEIGHT_SUFFIXES else dst.symlink_to(src)
    return copy


# ---- the featurizer ---------------------------------------------------------------------------------------


def test_embeddings_are_sentence_transformers_own(trained: tuple[Hasher, Path]) -> None:
    from sentence_transformers import SentenceTransformer

    feat = trained[0].featurizer
    reference = SentenceTransformer(str(sentence.default_dir()), device="cpu")
    reference.max_seq_length = sentence.MAX_TOKENS
    expected = reference.encode(TEXTS, normalize_embeddings=True)  # (n, 384)
    emb = feat.embed(TEXTS)
    assert emb.dtype == np.float32 and emb.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(emb, expected, atol=1e-6)
    assert feat.mean.dtype == np.float32 and feat.std.dtype == np.float32  # undone as x * std + mean
    np.testing.assert_allclose(feat.mean, expected.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(feat.transform(TEXTS), (emb - feat.mean) / feat.std, atol=1e-6)


@pytest.mark.parametrize("bad", ["one string", [1.0, 2.0], ["text", None]])
def test_non_text_inputs_are_refused(trained: tuple[Hasher, Path], bad: object) -> None:
    with pytest.raises(InputError) as info:
        trained[0].featurizer.transform(bad)
    assert info.value.error_type == "input_type"


def test_state_names_the_encoder_not_its_weights(trained: tuple[Hasher, Path]) -> None:
    params, tensors = trained[0].featurizer.state()
    assert params["encoder"] == sentence.DEFAULT_NAME and params["max_tokens"] == 128 and params["dim"] == 384
    assert params["weights_sha256"] == sentence.weights_sha256(sentence.default_dir())
    assert Path(params["encoder_path"]) == sentence.default_dir()
    assert sorted(tensors) == ["mean", "std"]
    meta = checkpoint.read_meta(trained[1])
    assert meta["featurizer"] == {"kind": "sentence", "params": params}


def test_options_go_to_the_featurizer() -> None:
    feat = make_featurizer("sentence", max_tokens=16, device="cpu")
    assert feat.max_tokens == 16
    with pytest.raises(ValueError, match="does not take"):
        make_featurizer("text", encoder="x")
    with pytest.raises(sentence.EncoderError, match="no sentence encoder directory"):
        make_featurizer("sentence", encoder="/no/such/encoder")
    with pytest.raises(sentence.EncoderError, match="past the encoder's 512 positions"):
        make_featurizer("sentence", max_tokens=513, device="cpu").fit(TEXTS)


def test_concurrent_featurizers_sharing_the_encoder(trained: tuple[Hasher, Path]) -> None:
    """The service featurizes each request in its own thread; two models on one encoder truncate differently."""
    long = trained[0].featurizer
    short = sentence.SentenceFeaturizer(max_tokens=4, device="cpu", mean=long.mean, std=long.std)
    texts = [f"{t} and then {t}" for t in TEXTS]
    expected = {id(f): f.embed(texts) for f in (long, short)}
    assert not np.allclose(expected[id(long)], expected[id(short)], atol=1e-3)
    with ThreadPoolExecutor(4) as pool:
        runs = [(f, pool.submit(f.embed, texts)) for _ in range(3) for f in (long, short)]
        for f, run in runs:
            np.testing.assert_array_equal(run.result(), expected[id(f)])


# ---- checkpoints ------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_codes(trained: tuple[Hasher, Path]) -> None:
    hasher, path = trained
    loaded = checkpoint.load(path, "cpu")
    assert loaded.fingerprint == hasher.fingerprint
    queries = [*TEXTS[:5], "an unseen text about rockets and football"]
    np.testing.assert_array_equal(loaded.encode(queries).codes, hasher.encode(queries).codes)
    np.testing.assert_array_equal(loaded.encode(queries).codes, loaded.encode(queries).codes)  # deterministic


def test_fingerprint_covers_the_encoder(trained: tuple[Hasher, Path]) -> None:
    hasher = trained[0]
    feat = hasher.featurizer
    other = dataclasses.replace(feat.source, weights_sha256="0" * 64)
    changed = sentence.SentenceFeaturizer(max_tokens=feat.max_tokens, mean=feat.mean, std=feat.std, source=other)
    assert checkpoint.compute_fingerprint(hasher.model, feat) == hasher.fingerprint
    assert checkpoint.compute_fingerprint(hasher.model, changed) != hasher.fingerprint


def test_default_encoder_found_when_its_recorded_path_is_gone(trained: tuple[Hasher, Path], tmp_path: Path) -> None:
    hasher = trained[0]
    moved = dataclasses.replace(hasher.featurizer.source, path=tmp_path / "another-venv" / "model")
    feat = sentence.SentenceFeaturizer(mean=hasher.featurizer.mean, std=hasher.featurizer.std, source=moved)
    feat.path = sentence.default_dir()  # loaded from there, recorded as moved
    checkpoint.save(tmp_path / "m", Hasher(hasher.model, feat, "", hasher.device))
    loaded = checkpoint.load(tmp_path / "m", "cpu")
    assert loaded.featurizer.path == sentence.default_dir()
    np.testing.assert_array_equal(loaded.encode(TEXTS).codes, hasher.encode(TEXTS).codes)


def test_tampered_moved_or_replaced_encoder(
    encoder_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher, path = _train(tmp_path, encoder=encoder_copy)
    assert hasher.featurizer.source.name == "my-encoder"
    assert checkpoint.load(path, "cpu").fingerprint == hasher.fingerprint
    monkeypatch.setenv(sentence.ENCODER_ENV, str(sentence.default_dir()))  # the same weights elsewhere: accepted
    assert checkpoint.load(path, "cpu").featurizer.path == sentence.default_dir()
    monkeypatch.delenv(sentence.ENCODER_ENV)

    weights = encoder_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match=r"trained with my-encoder .*weights sha256") as info:
        checkpoint.load(path, "cpu")
    assert sentence.ENCODER_ENV in str(info.value)

    encoder_copy.rename(tmp_path / "elsewhere")
    with pytest.raises(checkpoint.CheckpointError, match=r"needs the sentence encoder my-encoder .*not found"):
        checkpoint.load(path, "cpu")


# ---- the command line and the service ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "texts.jsonl"
    texts = synthetic_texts(n_per_topic=38, seed=2)  # 152
    data.write_text("\n".join(json.dumps({"id": f"t{i}", "text": t}) for i, t in enumerate(texts)))
    out = tmp / "model"
    args = ["train", str(data), "--out", str(out), "--featurizer", "sentence", "--max-tokens", "32", "--bits", "16"]
    args += ["--hidden", "32", "--epochs", "2", "--min-steps", "10", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_cli_trains_a_sentence_model(cli_model: Path) -> None:
    meta = checkpoint.read_meta(cli_model)
    assert meta["featurizer"]["kind"] == "sentence" and meta["featurizer"]["params"]["max_tokens"] == 32
    assert meta["model_config"]["input_dim"] == 384 and meta["model_config"]["recon"] == "gaussian"
    result = CliRunner().invoke(app, ["info", str(cli_model)])
    sha = meta["featurizer"]["params"]["weights_sha256"]
    assert result.exit_code == 0 and f"encoder {sentence.DEFAULT_NAME} (version" in result.output
    assert sha[:12] in result.output


def test_cli_refuses_sentence_options_that_do_not_fit(tmp_path: Path) -> None:
    texts, vectors = tmp_path / "t.jsonl", tmp_path / "v.npy"
    texts.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    np.save(vectors, np.zeros((10, 4), np.float32))
    cases = [
        ([str(texts), "--encoder", str(tmp_path)], "--encoder go with --featurizer sentence, not text"),
        ([str(vectors), "--featurizer", "sentence"], "--featurizer sentence embeds texts"),
        ([str(texts), "--featurizer", "sentence", "--encoder", str(tmp_path / "none")], "no sentence encoder"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "m")])
        assert result.exit_code == 2 and message in result.output, result.output


def test_service_encodes_and_searches_texts(cli_model: Path, make_client: MakeClient) -> None:
    client = make_client(cli_model)
    offline = checkpoint.load(cli_model, "cpu")
    texts = ["rocket launch into orbit", "butter and flour in the oven", "the striker scored a goal"]
    resp = client.post("/v1/encode", json={"inputs": texts, "format": "hex"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["codes"] == [bits.to_wire(c, "hex") for c in offline.encode(texts).codes]
    assert resp.json()["fingerprint"] == offline.fingerprint
    items = [{"id": f"d{i}", "input": t} for i, t in enumerate(texts)]
    assert client.post("/v1/items", json={"items": items}).status_code == 200
    resp = client.post("/v1/search", json={"queries": [{"input": texts[0]}], "k": 1})
    assert resp.status_code == 200 and resp.json()["results"][0][0]["id"] == "d0", resp.text
    resp = client.post("/v1/encode", json={"inputs": [[0.1, 0.2]]})
    assert resp.status_code == 422 and resp.json()["error_type"] == "input_type"
    assert client.get("/info").json()["featurizer"] == "sentence"


def test_service_decodes_and_documents_a_sentence_model(cli_model: Path, make_client: MakeClient) -> None:
    """A sentence model's reconstruction and generation are embeddings (kind sentence, field vector), masks are
    refused as for text, and /openapi.json says the inputs are texts."""
    client = make_client(cli_model)
    dim = checkpoint.load(cli_model, "cpu").featurizer.dim
    resp = client.post("/v1/reconstruct", json={"items": [{"input": "rocket launch into orbit"}]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["kind"] == "sentence" and len(body["outputs"][0]["vector"]) == dim
    resp = client.post("/v1/generate", json={"n": 2, "seed": 1})
    assert resp.status_code == 200 and all(len(o["vector"]) == dim for o in resp.json()["outputs"]), resp.text
    resp = client.post("/v1/reconstruct", json={"items": [{"input": "rocket", "mask": [True] * dim}]})
    assert resp.status_code == 422 and resp.json()["error_type"] == "invalid_input", resp.text
    schema = json.dumps(client.get("/openapi.json").json()["components"]["schemas"])
    assert '"maxLength"' in schema and f'"minItems": {dim}' not in schema


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_runs_the_encoder_in_bf16(trained: tuple[Hasher, Path]) -> None:
    cpu = trained[0].featurizer
    gpu = checkpoint.load(trained[1], "cuda").featurizer
    assert gpu.device.type == "cuda"
    assert next(sentence.load_encoder(gpu.path, gpu.device).model.parameters()).dtype == torch.bfloat16
    cosines = (gpu.embed(TEXTS) * cpu.embed(TEXTS)).sum(axis=1)  # unit rows, float32 both
    assert cosines.min() > 0.999
