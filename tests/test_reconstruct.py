"""Reconstruct and generate (issue 20, part 5): models.generate on models trained long enough to have a decoder
worth the name (a few hundred steps, seconds), and /v1/reconstruct, /v1/generate and the CLI on them and on the
conftest fixtures."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from hamdex.models import checkpoint, corrupt, generate
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig
from hamdex.models.ensemble import build_model
from hamdex.models.featurizers import make_featurizer
from hamdex.models.hasher import Hasher
from hamdex.models.train import fit_hasher
from hamdex.service.cli import app as cli_app
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import TOPICS, TRAIN, MakeClient, dense_vectors, digit_images, synthetic_texts
from tests.helpers import KEYS, READER, WRITER, assert_error, bearer, metric

LONGER = dataclasses.replace(TRAIN, epochs=200, min_steps=300, batch_size=32)


def _train(tmp: Path, name: str, inputs, kind: str, **model) -> Path:
    hasher, _ = fit_hasher(inputs, kind, model, LONGER)
    checkpoint.save(tmp / name, hasher)
    return tmp / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One checkpoint per kind, trained until reconstructions resemble their items; pixels-itq takes the itq
    read-out, whose codes the decoder never saw."""
    tmp = tmp_path_factory.mktemp("decoders")
    return {
        "text": _train(tmp, "text", synthetic_texts(), "text", n_bits=16, hidden=(32,)),
        "pixels": _train(tmp, "pixels", digit_images(), "pixels", n_bits=32, hidden=(64,), members=2),
        "pixels-itq": _train(tmp, "pixels-itq", digit_images(), "pixels", n_bits=32, hidden=(64,), readout="itq"),
        "dense": _train(tmp, "dense", dense_vectors(), "dense", n_bits=16, hidden=(32,)),
    }


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)  # (n, m)


# ---- models.generate -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pixels", "dense"])
def test_a_reconstruction_is_closer_to_its_item_than_to_the_others(trained: dict[str, Path], kind: str) -> None:
    hasher = checkpoint.load(trained[kind], "cpu")
    inputs = digit_images() if kind == "pixels" else dense_vectors()
    x = hasher.features(inputs)
    decoded = generate.reconstruct(hasher, x)
    assert decoded.outputs.shape == x.shape and decoded.outputs.dtype == np.float32
    assert np.array_equal(decoded.codes, hasher.encode_features(x).codes)  # the code is the indexed one
    d = _sq_distances(decoded.outputs, x)
    own, others = np.diag(d), np.median(d, axis=1)
    assert np.mean(own < others) > 0.9, np.mean(own < others)


def test_a_texts_reconstruction_names_its_topic(trained: dict[str, Path]) -> None:
    hasher = checkpoint.load(trained["text"], "cpu")
    texts = synthetic_texts()
    decoded = generate.reconstruct(hasher, hasher.features(texts))
    np.testing.assert_allclose(decoded.outputs.sum(axis=1), 1.0, rtol=1e-5)  # a distribution over the vocabulary
    words = generate.top_words(hasher.featurizer, decoded.outputs, 5)
    topics = list(TOPICS.values())
    on_topic = [np.mean([w in topics[i // 10] for w, _ in row]) for i, row in enumerate(words)]
    assert np.mean(on_topic) > 0.8
    assert all(p1 >= p2 for row in words for (_, p1), (_, p2) in zip(row, row[1:], strict=False))


@pytest.mark.parametrize("kind", ["text", "pixels", "dense"])
def test_decoding_a_threshold_models_code_is_reconstructing_its_item(trained: dict[str, Path], kind: str) -> None:
    """Without the itq read-out, the decoder sees exactly the code's bits: generate(encode(x)) == reconstruct(x)."""
    hasher = checkpoint.load(trained[kind], "cpu")
    inputs = {"text": synthetic_texts(), "pixels": digit_images(40), "dense": dense_vectors(40)}[kind]
    x = hasher.features(inputs)
    codes = hasher.encode_features(x).codes
    np.testing.assert_allclose(generate.generate(hasher, codes).outputs, generate.reconstruct(hasher, x).outputs)


def test_an_itq_models_code_decodes_to_a_likeness_of_its_item(trained: dict[str, Path]) -> None:
    hasher = checkpoint.load(trained["pixels-itq"], "cpu")
    x = hasher.features(digit_images())
    d = _sq_distances(generate.generate(hasher, hasher.encode_features(x).codes).outputs, x)
    assert np.mean(np.diag(d) < np.median(d, axis=1)) > 0.75


def test_sampled_codes_follow_the_seed(trained: dict[str, Path]) -> None:
    hasher = checkpoint.load(trained["pixels"], "cpu")
    a, b = generate.sample_codes(hasher.model, 50, 7), generate.sample_codes(hasher.model, 50, 7)
    assert a.shape == (50, 4) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, generate.sample_codes(hasher.model, 50, 8))
    share = np.unpackbits(generate.sample_codes(hasher.model, 2000, 0)).mean()
    assert 0.45 < share < 0.55  # the Bernoulli(0.5) prior
    images = generate.to_inputs(hasher.featurizer, generate.generate(hasher, a).outputs)
    assert images.shape == (50, 8, 8) and images.min() >= 0 and images.max() <= 255


def test_a_gaussian_bit_is_the_priors_mean_on_its_side() -> None:
    model = HashingAutoencoder(ModelConfig(input_dim=6, n_bits=8, bottleneck="gaussian", recon="gaussian"))
    z = generate.bits_to_z(model, torch.tensor([[True] * 4 + [False] * 4]))
    half_normal = float(np.sqrt(2 / np.pi))  # E[z | z > 0] for z ~ N(0, 1) (thresholds 0)
    np.testing.assert_allclose(z.numpy(), [[half_normal] * 4 + [-half_normal] * 4], rtol=1e-5)
    model.bottleneck.thresholds.fill_(1.0)  # above a high threshold: further out; below it: near the middle
    z = generate.bits_to_z(model, torch.tensor([[True] * 4 + [False] * 4]))
    assert z[0, 0] > 1.0 and -half_normal < z[0, 7] < 0
    p = generate.sample_codes(model, 4000, 0)
    assert 0.1 < np.unpackbits(p).mean() < 0.22  # P(z > 1) = 0.16


def test_inpainting_keeps_the_known_values_and_beats_filling_with_the_mean(trained: dict[str, Path]) -> None:
    hasher = checkpoint.load(trained["pixels"], "cpu")
    x = hasher.features(digit_images())
    masks = np.tile(corrupt.region_mask((8, 8), "bottom"), (len(x), 1))
    decoded = generate.reconstruct(hasher, np.where(masks, 0.0, x).astype(np.float32), masks)
    np.testing.assert_array_equal(decoded.outputs[~masks], x[~masks])  # the known half as given
    filled = decoded.outputs[masks].reshape(len(x), -1)
    truth = x[masks].reshape(len(x), -1)
    mean_fill = np.broadcast_to(
        np.where(masks, 0, x).sum(1, keepdims=True) / (~masks).sum(1, keepdims=True), truth.shape
    )
    assert ((filled - truth) ** 2).mean() < 0.8 * ((mean_fill - truth) ** 2).mean()
    assert np.array_equal(decoded.codes, hasher.encode_features(decoded.outputs).codes)  # the completed item's code


def test_denoising_brings_noisy_images_closer_to_the_clean_ones(trained: dict[str, Path]) -> None:
    hasher = checkpoint.load(trained["pixels"], "cpu")
    clean = hasher.features(digit_images())
    noisy = corrupt.add_noise(clean, "salt_pepper", 0.3, np.random.default_rng(0), pixels=True)
    denoised = generate.reconstruct(hasher, noisy).outputs
    assert ((denoised - clean) ** 2).mean() < ((noisy - clean) ** 2).mean()


def test_a_decoder_of_other_features_is_not_reconstructable(trained: dict[str, Path], tmp_path: Path) -> None:
    path = _scattering_like(trained["pixels"], tmp_path)
    hasher = checkpoint.load(path, "cpu")
    with pytest.raises(generate.NotReconstructable, match="--target-features input"):
        generate.generate(hasher, np.zeros((1, 4), np.uint8))


def _scattering_like(source: Path, tmp_path: Path) -> Path:
    """A checkpoint like ``source`` whose decoder outputs 5 other features (as --target-features scattering)."""
    base = checkpoint.load(source, "cpu")
    config = dataclasses.replace(base.model.config, output_dim=5, recon="gaussian")
    hasher = Hasher(build_model(config), base.featurizer, "", base.device)
    hasher.fingerprint = checkpoint.compute_fingerprint(hasher.model, hasher.featurizer)
    checkpoint.save(tmp_path / "scattering", hasher)
    return tmp_path / "scattering"


@pytest.mark.parametrize("kind", corrupt.NOISES)
def test_noise_stays_in_range_and_follows_the_seed(kind: str) -> None:
    x = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    a = corrupt.add_noise(x, kind, 0.3, np.random.default_rng(1), pixels=True)
    assert a.min() >= 0 and a.max() <= 1 and not np.array_equal(a, x)
    assert np.array_equal(a, corrupt.add_noise(x, kind, 0.3, np.random.default_rng(1), pixels=True))


@pytest.mark.parametrize(("region", "missing"), [("top", 32), ("bottom", 32), ("left", 32), ("centre", 16)])
def test_region_masks(region: str, missing: int) -> None:
    mask = corrupt.region_mask((8, 8), region)
    assert mask.shape == (64,) and mask.sum() == missing


# ---- the API ---------------------------------------------------------------------------------------------------


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_reconstruct_answers_in_each_kinds_form(make_client: MakeClient, trained: dict[str, Path]) -> None:
    images = digit_images(3)
    client = make_client(trained["pixels"])
    body = client.post("/v1/reconstruct", json={"items": [{"input": im.tolist()} for im in images]}).json()
    assert body["kind"] == "pixels" and body["n_bits"] == 32 and "seed" not in body
    pngs = [_png(out["image"]) for out in body["outputs"]]
    assert all(p.shape == (8, 8) and p.dtype == np.uint8 for p in pngs)
    arrays = client.post(
        "/v1/reconstruct", json={"items": [{"input": im.tolist()} for im in images], "image_format": "array"}
    ).json()["outputs"]
    assert [np.array_equal(np.array(a["pixels"]), p) for a, p in zip(arrays, pngs, strict=True)] == [True] * 3
    codes = client.post("/v1/encode", json={"inputs": [im.tolist() for im in images]}).json()["codes"]
    assert [out["code"] for out in body["outputs"]] == codes
    assert set(body["outputs"][0]) == {"code", "image"}  # only the kind's field

    text = make_client(trained["text"]).post(
        "/v1/reconstruct", json={"items": [{"input": "rocket orbit galaxy comet"}], "top_words": 3}
    )
    words = text.json()["outputs"][0]["words"]
    assert len(words) == 3 and {w["word"] for w in words} <= set(TOPICS["space"])

    vectors = dense_vectors(2)
    dense = make_client(trained["dense"]).post(
        "/v1/reconstruct", json={"items": [{"input": v.tolist()} for v in vectors]}
    )
    assert [len(out["vector"]) for out in dense.json()["outputs"]] == [12, 12]


def test_inpainting_over_http(make_client: MakeClient, trained: dict[str, Path]) -> None:
    image = digit_images(1)[0]
    mask = [[True] * 8] * 4 + [[False] * 8] * 4  # the top half is missing
    client = make_client(trained["pixels"])
    items = [{"input": image.tolist(), "mask": mask}, {"input": image.tolist()}]
    out = client.post("/v1/reconstruct", json={"items": items, "image_format": "array"}).json()["outputs"]
    inpainted, plain = np.array(out[0]["pixels"]), np.array(out[1]["pixels"])
    assert np.array_equal(inpainted[4:], image[4:])  # known rows as given
    assert not np.array_equal(inpainted[:4], image[:4]) and inpainted[:4].std() > 0  # the rest filled
    assert not np.array_equal(plain[4:], image[4:])  # no mask: the reconstruction throughout
    flat = client.post("/v1/reconstruct", json={"items": [{"input": image.tolist(), "mask": sum(mask, [])}]})
    assert flat.json()["outputs"][0]["code"] == out[0]["code"]  # a flat mask is the same mask


def test_codes_from_encode_decode_through_generate(make_client: MakeClient, trained: dict[str, Path]) -> None:
    client = make_client(trained["dense"])
    vectors = [v.tolist() for v in dense_vectors(3)]
    for fmt in ("hex", "base64", "bits"):
        codes = client.post("/v1/encode", json={"inputs": vectors, "format": fmt}).json()["codes"]
        generated = client.post("/v1/generate", json={"codes": codes}).json()
        assert "seed" not in generated
        reconstructed = client.post("/v1/reconstruct", json={"items": [{"input": v} for v in vectors]}).json()
        assert generated == reconstructed


def test_generate_samples_follow_the_seed(make_client: MakeClient, trained: dict[str, Path]) -> None:
    client = make_client(trained["pixels"])
    first = client.post("/v1/generate", json={"n": 4, "seed": 11}).json()
    assert first["seed"] == 11 and len(first["outputs"]) == 4
    assert client.post("/v1/generate", json={"n": 4, "seed": 11}).json() == first
    assert client.post("/v1/generate", json={"n": 4, "seed": 12}).json() != first
    drawn = client.post("/v1/generate", json={"n": 2}).json()
    again = client.post("/v1/generate", json={"n": 2, "seed": drawn["seed"]}).json()
    assert again == drawn  # an unseeded draw says its seed
    codes = [out["code"] for out in first["outputs"]]
    assert client.post("/v1/generate", json={"codes": codes}).json()["outputs"] == first["outputs"]


def test_decode_errors_are_typed(make_client: MakeClient, trained: dict[str, Path], text_model_dir: Path) -> None:
    client = make_client(text_model_dir, max_batch=2)
    assert_error(client.post("/v1/reconstruct", json={"items": []}), 422, "empty_batch")
    assert_error(client.post("/v1/reconstruct", json={"items": [{"input": "a"}] * 3}), 422, "batch_too_large")
    assert_error(client.post("/v1/generate", json={"codes": ["0000"] * 3}), 422, "batch_too_large")
    assert_error(client.post("/v1/generate", json={"n": 3}), 422, "batch_too_large")
    assert_error(client.post("/v1/generate", json={"n": 0}), 422, "validation_error")
    assert_error(client.post("/v1/reconstruct", json={"items": [{"input": "a", "mask": [True]}]}), 422, "invalid_input")
    assert_error(client.post("/v1/reconstruct", json={"items": [{"input": [1.0, 2.0]}]}), 422, "input_type")
    assert_error(client.post("/v1/generate", json={"codes": ["00"]}), 422, "code_format")
    assert_error(client.post("/v1/generate", json={"codes": ["0000"], "seed": 1}), 422, "validation_error")
    assert_error(client.post("/v1/generate", json={"codes": ["0000"], "n": 1}), 422, "validation_error")
    assert_error(client.post("/v1/generate", json={}), 422, "validation_error")
    pixels = make_client(trained["pixels"])
    short = {"input": digit_images(1)[0].tolist(), "mask": [True] * 10}
    assert_error(pixels.post("/v1/reconstruct", json={"items": [short]}), 422, "input_shape")


def test_a_scattering_model_answers_409(make_client: MakeClient, trained: dict[str, Path], tmp_path: Path) -> None:
    client = make_client(_scattering_like(trained["pixels"], tmp_path))
    body = assert_error(client.post("/v1/generate", json={"n": 1}), 409, "not_reconstructable")
    assert "--target-features input" in body["error"]
    items = {"items": [{"input": digit_images(1)[0].tolist()}]}
    assert_error(client.post("/v1/reconstruct", json=items), 409, "not_reconstructable")
    assert client.post("/v1/encode", json={"inputs": [digit_images(1)[0].tolist()]}).is_success  # it still hashes


def test_decode_routes_need_a_read_key_and_are_counted(make_client: MakeClient, text_model_dir: Path) -> None:
    client = make_client(text_model_dir, api_keys=KEYS, open_reads=True)
    body = {"items": [{"input": "goal"}]}
    assert_error(client.post("/v1/reconstruct", json=body), 401, "unauthorized")  # open reads: encode and search
    assert_error(client.post("/v1/generate", json={"n": 1}), 401, "unauthorized")
    assert client.post("/v1/reconstruct", json=body, headers=bearer(READER)).status_code == 200
    assert client.post("/v1/generate", json={"n": 1}, headers=bearer(WRITER)).status_code == 200  # write has read
    assert_error(client.post("/v1/generate", json={"n": 1}, headers=bearer("no-such-key")), 401, "unauthorized")
    text = client.get("/metrics", headers=bearer(READER)).text
    assert metric(text, "hamdex_http_requests_total", route="/v1/reconstruct", method="POST", status="200") == 1


# ---- the command line ------------------------------------------------------------------------------------------


def test_cli_writes_png_grids_for_images(trained: dict[str, Path], tmp_path: Path) -> None:
    images = tmp_path / "digits.npy"
    np.save(images, digit_images(10))
    out = tmp_path / "recon.png"
    args = ["reconstruct", str(images), "-m", str(trained["pixels"]), "--out", str(out), "--level", "0.2"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert _grid_shape(out) == (3 * 9 + 1, 10 * 9 + 1)  # originals, noisy, reconstructed; 8x8 with 1-pixel gaps
    result = CliRunner().invoke(cli_app, [*args[:6], "--mask", "centre"])
    assert result.exit_code == 0, result.output
    sampled = tmp_path / "sampled.png"
    gen = ["generate", "-m", str(trained["pixels"]), "--out", str(sampled), "--n", "20", "--seed", "3"]
    assert CliRunner().invoke(cli_app, gen).exit_code == 0
    assert _grid_shape(sampled) == (2 * 9 + 1, 16 * 9 + 1)
    first = sampled.read_bytes()
    assert CliRunner().invoke(cli_app, gen).exit_code == 0 and sampled.read_bytes() == first


def _grid_shape(path: Path) -> tuple[int, int]:
    return np.asarray(Image.open(path)).shape


def test_cli_writes_json_for_text_and_vectors(trained: dict[str, Path], tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(synthetic_texts(2))))
    out = tmp_path / "words.json"
    args = ["reconstruct", str(texts), "-m", str(trained["text"]), "--out", str(out), "--top-words", "3"]
    assert CliRunner().invoke(cli_app, args).exit_code == 0
    records = json.loads(out.read_text())
    assert len(records) == 8 and all(len(r["words"]) == 3 for r in records)
    result = CliRunner().invoke(cli_app, ["generate", records[0]["code"], "-m", str(trained["text"])])
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["words"][0][0] == records[0]["words"][0][0]
    bad = CliRunner().invoke(cli_app, ["generate", "zz", "-m", str(trained["text"])])
    assert bad.exit_code == 2


@pytest.mark.parametrize("bottleneck", ["sign", "bernoulli", "vq"])
def test_every_binary_bottlenecks_decoder_sees_the_codes_bits(bottleneck: str) -> None:
    """The decoder of a binary bottleneck sees bits in {0, 1}: decoding an item's code is reconstructing it."""
    torch.manual_seed(0)
    config = ModelConfig(input_dim=12, n_bits=16, bottleneck=bottleneck, recon="gaussian", hidden=(16,))
    featurizer = make_featurizer("dense").fit(dense_vectors())
    hasher = Hasher(build_model(config), featurizer, "untrained")
    x = hasher.features(dense_vectors(30))
    codes = hasher.encode_features(x).codes
    np.testing.assert_allclose(generate.generate(hasher, codes).outputs, generate.reconstruct(hasher, x).outputs)


def test_the_document_states_the_decode_limits(make_client: MakeClient, trained: dict[str, Path]) -> None:
    """Valid by the OpenAPI document <=> taken by the server, on a pixel model (masks) and a text one (no mask)."""
    image, rows = digit_images(1)[0].tolist(), [[True] * 8] * 8
    cases = {
        "pixels": [
            ("/v1/reconstruct", {"items": [{"input": image, "mask": rows}]}),
            ("/v1/reconstruct", {"items": [{"input": image, "mask": [False] * 64}], "image_format": "array"}),
            ("/v1/reconstruct", {"items": [{"input": image, "mask": [True] * 63}]}),
            ("/v1/reconstruct", {"items": [{"input": image, "mask": None}]}),
            ("/v1/reconstruct", {"items": [{"input": image[:7]}]}),
            ("/v1/reconstruct", {"items": [{"input": image}] * 3}),
            ("/v1/generate", {"codes": ["00000000"], "top_words": 1000}),
            ("/v1/generate", {"codes": ["0000"]}),
            ("/v1/generate", {"n": 2, "seed": None}),
            ("/v1/generate", {"n": 3}),
            ("/v1/generate", {"n": 1, "seed": -1}),
        ],
        "text": [
            ("/v1/reconstruct", {"items": [{"input": "goal"}], "top_words": 1001}),
            ("/v1/reconstruct", {"items": [{"input": "goal", "mask": [True]}]}),
            ("/v1/reconstruct", {"items": [{"input": "goal", "mask": None}]}),
            ("/v1/generate", {"codes": ["0000"], "seed": None}),
        ],
    }
    for kind, requests in cases.items():
        client = make_client(trained[kind], max_batch=2)
        doc = client.get("/openapi.json").json()
        for path, body in requests:
            schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            valid = jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).is_valid(body)
            resp = client.post(path, json=body)
            assert valid == resp.is_success, (kind, path, body, valid, resp.status_code, resp.text[:200])


def test_top_words_are_those_of_a_stable_sort() -> None:
    """The partition that replaced a full sort picks the same words in the same order, ties to the lower index."""
    from hamdex.models import generate

    class Vocabulary:
        def state(self) -> tuple[dict, dict]:
            return {"vocabulary": [f"w{i}" for i in range(40)]}, {}

    rng = np.random.default_rng(0)
    for trial in range(200):
        p = rng.random((4, 40)).astype(np.float32)
        p[:, rng.integers(0, 40, 8)] = p[0, 0]  # ties, at the boundary too
        if trial % 10 == 0:
            p[:] = 0.5
        k = int(rng.integers(0, 41))
        expected = np.argsort(-p, axis=1, kind="stable")[:, :k]
        got = generate.top_words(Vocabulary(), p, k)  # type: ignore[arg-type]
        assert [[word for word, _ in row] for row in got] == [[f"w{j}" for j in row] for row in expected]
