"""The end-of-training safeguard (models.safeguard), its label-free probe (models.probe), the training schedule in
steps, and the training report in the checkpoint and in /info (issue 18)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hamdex.evaluation.baselines import ITQ
from hamdex.evaluation.metrics import mean_average_precision
from hamdex.models import checkpoint, safeguard
from hamdex.models.autoencoder import HashingAutoencoder, ModelConfig
from hamdex.models.bits import pack
from hamdex.models.featurizers import make_featurizer
from hamdex.models.health import code_health
from hamdex.models.presets import preset
from hamdex.models.probe import average_precisions, build_probe, encode_rows
from hamdex.models.safeguard import assess, decide, fit_itq_candidate, itq_model
from hamdex.models.train import TrainConfig, fit_hasher, split, train
from hamdex.service.cli import app
from sklearn.datasets import load_digits
from typer.testing import CliRunner

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Two OpenMP threads on a busy 2-core machine train several times slower than one (tests/test_quality_bench)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    """sklearn digits as uint8 images (n, 8, 8), labels, and the pixel features of all of them."""
    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)
    x = make_featurizer("pixels").fit(images).transform(images)  # (1797, 64) in [0, 1]
    return images, d.target, x


@pytest.fixture(scope="module")
def probe(digits):
    _, _, x = digits
    train_idx, val_idx = split(len(x), 0.1, 0)
    return build_probe(x, val_idx, train_idx)


def test_probe_map_is_one_for_codes_of_the_clusters_and_chance_for_one_code(probe):
    by_cluster = pack(np.unpackbits(probe.labels.astype(np.uint8)[:, None], axis=1))  # one code per cluster
    score = probe.score(by_cluster)
    assert (score.map, score.stderr) == (pytest.approx(1.0), pytest.approx(0.0))
    assert np.array_equal(score.aps, np.ones(len(probe.queries)))  # each query's AP, for paired comparisons
    one_code = np.zeros((len(probe.rows), 1), np.uint8)
    q = len(probe.queries)
    base_rate = np.mean([np.mean(probe.labels[q:] == label) for label in probe.labels[:q]])
    assert probe.score(one_code).map == pytest.approx(base_rate, abs=0.03)


def test_probe_map_equals_the_evaluation_map():
    rng = np.random.default_rng(0)
    codes, labels = rng.integers(0, 256, (300, 2), dtype=np.uint8), rng.integers(0, 5, 300)
    ours = average_precisions(codes[:50], codes[50:], labels[:50], labels[50:]).mean()
    assert ours == pytest.approx(mean_average_precision(codes[:50], codes[50:], labels[:50], labels[50:]), abs=1e-9)


def test_itq_model_gives_the_codes_of_the_itq_baseline(digits, tmp_path):
    _, _, x = digits
    model = itq_model(x, 16, "bernoulli")
    ours = encode_rows(model, x, np.arange(len(x)), CPU)
    theirs = ITQ(16).fit(x).encode(x)
    assert np.mean(ours == theirs) > 0.999  # float32 weights against float64: a rare bit on the boundary may differ


def _constant_model(input_dim: int, n_bits: int) -> HashingAutoencoder:
    """Every input gets the same code: the collapse of issue 18 in its purest form."""
    model = HashingAutoencoder(ModelConfig(input_dim=input_dim, n_bits=n_bits, recon="bernoulli", hidden=()))
    with torch.no_grad():
        model.encoder[0].weight.zero_()
        model.encoder[0].bias.copy_(torch.linspace(-1, 1, n_bits))
    return model.eval()


def test_a_collapse_is_detected_and_itq_is_shipped_with_a_warning(digits, probe):
    _, _, x = digits
    collapsed = assess("model", _constant_model(x.shape[1], 16), x, probe, CPU)
    itq = fit_itq_candidate(x, 16, "bernoulli", probe, CPU)
    assert collapsed.health["distinct_code_fraction"] == pytest.approx(1 / len(x))
    verdict = decide(collapsed, itq)
    assert verdict.collapsed and verdict.action == "itq fallback" and verdict.chosen is itq and not verdict.ok
    assert "collapsed" in verdict.warnings[0] and "ITQ" in verdict.warnings[0]
    report = verdict.report()
    assert report["shipped"] == "itq" and set(report["candidates"]) == {"model", "itq"}
    json.dumps(report)  # it travels in the checkpoint's JSON


def test_a_model_that_clearly_wins_is_kept(digits, probe):
    _, _, x = digits
    itq = fit_itq_candidate(x, 16, "bernoulli", probe, CPU)
    winner = assess("model", itq.model, x, probe, CPU)
    winner.probe_map = itq.probe_map * 1.2  # as if it ranked better
    assert decide(winner, itq).action == "kept"


def test_fallback_path_gives_a_model_that_beats_itq_on_digits(digits, monkeypatch):
    """The pixel preset cut to 120 steps does not clearly beat ITQ on digits (probe mAP 0.580 against 0.564): the
    safeguard trains on from its weights, and the model it then keeps beats ITQ by label mAP on digits it never
    saw (measured 0.730 against 0.613). The path is under test, not the margin: at the default 10% the kept model
    (probe 0.633, 1.12 x) would pass by a hair that another CPU's float sums could take away."""
    monkeypatch.setattr(safeguard, "MARGIN", 0.05)
    images, labels, _ = digits
    order = np.random.default_rng(0).permutation(len(images))
    q, db = order[:300], order[300:]
    model_over, train_over = preset("pixels", 16)
    train_over.update(epochs=20, min_steps=0)  # 6 steps an epoch
    cfg = TrainConfig(progress=False, device="cpu", safeguard=True, **train_over)
    hasher, result = fit_hasher(images[db], "pixels", {**model_over, "n_bits": 16}, cfg)
    report = hasher.info["report"]
    assert report["steps"] == 240 and len(result.history) == 40  # two rounds of 20 epochs
    assert report["safeguard"]["action"] == "kept" and report["safeguard"]["ok"], report["safeguard"]
    x_db, x_q = hasher.features(images[db]), hasher.features(images[q])
    ours = mean_average_precision(
        hasher.encode_features(x_q).codes, hasher.encode_features(x_db).codes, labels[q], labels[db]
    )
    itq = ITQ(16).fit(x_db)
    theirs = mean_average_precision(itq.encode(x_q), itq.encode(x_db), labels[q], labels[db])
    assert ours > theirs + 0.05, (ours, theirs)


def test_min_steps_extend_training_and_hold_off_early_stopping():
    x = np.random.default_rng(0).random((640, 8)).astype(np.float32)  # noise: early stopping would end it soon
    cfg = ModelConfig(input_dim=8, n_bits=8, recon="gaussian", hidden=(8,), bottleneck="sign")
    result = train(cfg, TrainConfig(epochs=1, min_steps=30, patience=1, batch_size=64, progress=False), x)
    assert result.steps >= 30 and len(result.history) == 4  # 576 training rows: 9 steps an epoch
    assert [h["steps"] for h in result.history] == [9, 18, 27, 36]


def test_report_is_in_the_checkpoint_and_survives_a_round_trip(digits, tmp_path):
    images, _, _ = digits
    cfg = TrainConfig(epochs=2, progress=False, safeguard=True)
    hasher, _ = fit_hasher(images[:600], "pixels", {"n_bits": 16, "hidden": (32,)}, cfg)
    report = hasher.info["report"]
    assert report["held_out"] == 60 and report["validation"]["signal"] == "probe mAP"
    assert set(report["code_health"]) == set(code_health(np.zeros((1, 2), np.uint8)))
    assert report["safeguard"]["action"] in ("kept", "read-out switched", "itq fallback")
    checkpoint.save(tmp_path / "m", hasher)
    assert checkpoint.read_meta(tmp_path / "m")["report"] == report
    loaded = checkpoint.load(tmp_path / "m", "cpu")
    assert loaded.info["report"] == report and loaded.fingerprint == hasher.fingerprint
    assert np.array_equal(loaded.encode(images[:50]).codes, hasher.encode(images[:50]).codes)


def test_small_sets_are_reported_unchecked(digits):
    images, _, _ = digits
    cfg = TrainConfig(epochs=1, progress=False, safeguard=True)
    hasher, _ = fit_hasher(images[:200], "pixels", {"n_bits": 16, "hidden": (16,)}, cfg)
    guard = hasher.info["report"]["safeguard"]
    assert guard["action"] == "unchecked" and "held-out" in guard["reason"] and guard["ok"]
    assert hasher.info["report"]["validation"]["signal"] == "loss"  # 20 held out: too few for the probe


def test_info_shows_the_training_report(pixel_model_dir, make_client):
    client = make_client(pixel_model_dir)
    body = client.get("/info").json()
    assert body["training"] == checkpoint.read_meta(pixel_model_dir)["report"]
    assert body["training"]["safeguard"]["action"] == "unchecked"  # fit_hasher's default: off


def test_strict_exits_nonzero_on_a_fallback_and_the_report_is_printed(tmp_path):
    """A barely trained model on digits loses to ITQ: the CLI says so, saves the ITQ model, and --strict exits 1."""
    path = tmp_path / "digits.npy"
    np.save(path, np.round(load_digits().images * (255 / 16)).astype(np.uint8))
    args = ["train", str(path), "--bits", "16", "--hidden", "8", "--epochs", "1", "--lr", "1e-6", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "m"), "--strict"])
    assert result.exit_code == 1, result.output
    assert "WARNING" in result.output and "replaced by ITQ" in result.output and "--strict" in result.output
    assert "code health: distinct codes" in result.output and "against ITQ" in result.output
    meta = checkpoint.read_meta(tmp_path / "m")  # saved all the same, for a look
    assert meta["report"]["safeguard"]["shipped"] == "itq" and meta["model_config"]["hidden"] == []
    relaxed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert relaxed.exit_code == 0 and "WARNING" in relaxed.output


def test_pixel_preset_scales_its_neighbourhoods_with_the_training_set():
    full = preset("pixels", 32, n_items=60_000)[1]
    assert (full["neighbours"], full["neighbour_whiten"]) == (30, 400)  # as tuned on all of Fashion-MNIST
    small = preset("pixels", 32, n_items=1000)[1]
    assert (small["neighbours"], small["neighbour_whiten"]) == (10, 100)
    assert preset("pixels", 32)[1] == preset("pixels", 32, n_items=None)[1] == full  # size unknown: as tuned
    assert preset("text", 32, n_items=1000) == preset("text", 32)  # text neighbourhoods are not scaled


def test_training_goes_on_only_while_the_probe_still_rises():
    from hamdex.models.train import TrainResult, _still_improving

    def result(peak: int, stopped: str = "budget") -> TrainResult:
        rows = [{"epoch": e, "probe_map": 0.6 if e == peak else 0.5} for e in range(1, 11)]
        return TrainResult(None, rows, peak, 1.0, "cpu", stopped=stopped)

    assert _still_improving(result(9))
    assert not _still_improving(result(3))  # levelled off early: more of the same would not help
    assert not _still_improving(result(9, stopped="patience"))


def test_another_read_out_is_tried_only_for_collapsed_codes(digits, probe):
    """A healthy model that does not clearly beat ITQ gets no second draw from its other read-out (on TREC that
    draw cleared the margin on the probe and lost to ITQ by labels); a collapsed one does, since a read-out is what
    a collapse breaks."""
    _, _, x = digits
    itq = fit_itq_candidate(x, 16, "bernoulli", probe, CPU)
    healthy = assess("model", itq.model, x, probe, CPU)
    healthy.probe_map = itq.probe_map * 1.02  # not a clear win
    other = assess("model, itq read-out", itq.model, x, probe, CPU)
    other.probe_map = itq.probe_map * 1.3
    assert decide(healthy, itq, other).action == "itq fallback"
    broken = assess("model", _constant_model(x.shape[1], 16), x, probe, CPU)
    verdict = decide(broken, itq, other)
    assert verdict.action == "read-out switched" and verdict.chosen is other and verdict.collapsed
