"""Labels that judge without training (issue 18): when the training items carry a label, the safeguard compares the
model with ITQ by the held-out items' labels; the checkpoint is still chosen by the label-free probe, and the model
never sees them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hamdex.models import safeguard
from hamdex.models.safeguard import Candidate, clearly_wins, decide
from hamdex.models.train import TrainConfig, can_judge, fit_hasher
from hamdex.service.cli import app
from sklearn.datasets import load_digits
from typer.testing import CliRunner

HEALTHY = {"distinct_code_fraction": 0.5, "bit_balance": 0.0, "mean_abs_bit_correlation": 0.0}


def _candidate(name: str, aps: np.ndarray, kind: str = "labels") -> Candidate:
    return Candidate(name, None, float(aps.mean()), dict(HEALTHY), aps, kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "judges"),
    [
        (["a", "b"] * 10, True),
        (["a", "b", None, ""] * 10, True),  # unlabelled items do not count against it
        (["a"] * 20, False),  # one class
        ([str(i) for i in range(40)], False),  # ids, not classes
        ([str(i % 10) for i in range(40)], False),  # four items a class on average: too few to judge by
        ([None] * 20, False),
    ],
)
def test_which_labels_can_judge(labels, judges):
    assert can_judge(labels) is judges


def test_by_labels_a_small_win_beyond_noise_is_kept_and_a_tie_is_not():
    rng = np.random.default_rng(0)
    itq_aps = rng.uniform(0.2, 0.8, 400)
    itq = _candidate("itq", itq_aps)
    # 3% better on every query: far below the probe's 10% margin, far beyond the paired noise
    assert clearly_wins(_candidate("model", itq_aps * 1.03), itq)
    assert decide(_candidate("model", itq_aps * 1.03), itq).action == "kept"
    # the same mean gain with query-level noise ten times its size is not clear
    noisy = itq_aps * 1.03 + rng.normal(0, 0.3, 400)
    assert not clearly_wins(_candidate("model", noisy), itq)
    verdict = decide(_candidate("model", itq_aps), itq)  # level with ITQ
    assert verdict.action == "itq fallback"
    assert "label mAP of the held-out items" in verdict.warnings[0]
    assert verdict.report()["margin"] == "2 paired standard errors"


def test_by_clusters_the_margin_still_holds():
    itq_aps = np.random.default_rng(1).uniform(0.2, 0.8, 400)
    itq = _candidate("itq", itq_aps, "clusters")
    assert not clearly_wins(_candidate("model", itq_aps * 1.03, "clusters"), itq)
    assert clearly_wins(_candidate("model", itq_aps * (1 + safeguard.MARGIN + 0.01), "clusters"), itq)
    assert decide(_candidate("model", itq_aps, "clusters"), itq).report()["margin"] == safeguard.MARGIN


def test_collapsed_codes_never_win_by_labels():
    itq_aps = np.random.default_rng(2).uniform(0.2, 0.8, 400)
    model = _candidate("model", itq_aps * 1.2)
    model.health["distinct_code_fraction"] = 0.001
    assert not clearly_wins(model, _candidate("itq", itq_aps))


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images * 255 / 16).astype(np.uint8), [str(t) for t in d.target]


def test_judge_labels_judge_but_neither_choose_the_checkpoint_nor_train(digits):
    images, labels = digits
    cfg = TrainConfig(epochs=3, progress=False, safeguard=True, device="cpu")
    model = {"n_bits": 16, "hidden": (64,)}
    judged, judged_run = fit_hasher(images, "pixels", model, cfg, judge_labels=labels)
    report = judged.info["report"]
    assert report["safeguard"]["judged_by"] == "label mAP"
    assert report["safeguard"]["candidates"]["itq"]["probe_map"] > 0.3  # digits' classes, far above chance
    assert report["validation"]["signal"] == "probe mAP"  # the checkpoint: the label-free probe
    assert "labels" not in report  # nothing trained with them
    assert not getattr(judged.model.config, "label_names", None)
    plain, plain_run = fit_hasher(images, "pixels", model, cfg)
    assert plain.info["report"]["safeguard"]["judged_by"] == "probe mAP"
    # the same first round of training, validated alike (a second round may follow where the verdicts differ)
    first = [row.get("probe_map") for row in judged_run.history[:3]]
    assert first == [row.get("probe_map") for row in plain_run.history[:3]] and first[-1] is not None
    ids, _ = fit_hasher(images, "pixels", model, cfg, judge_labels=[str(i) for i in range(len(labels))])
    assert ids.info["report"]["safeguard"]["judged_by"] == "probe mAP"  # labels that are ids cannot judge
    with pytest.raises(ValueError, match="judge labels"):
        fit_hasher(images, "pixels", model, cfg, judge_labels=labels[:10])


@pytest.fixture
def texts_file(tmp_path):
    topics = {"space": "orbit rocket launch nasa shuttle", "cars": "engine wheel brake dealer sedan"}
    rows = [
        {"id": f"{t}-{i}", "text": f"{words} note {i}", "label": t} for t, words in topics.items() for i in range(300)
    ]
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.mark.parametrize(("extra", "judged_by"), [((), "label mAP"), (("--no-judge-by-labels",), "probe mAP")])
def test_cli_judges_by_the_items_labels_unless_told(texts_file, tmp_path, extra, judged_by):
    args = ["train", str(texts_file), "--out", str(tmp_path / "m"), "--bits", "16", "--hidden", "16"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--epochs", "2", *extra])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert ("600 items carry a label (2 classes)" in said) is (not extra)
    assert f"against ITQ on the same features ({judged_by} of held-out items)" in said
    meta = json.loads((tmp_path / "m" / "hamdex.json").read_text())
    assert meta["report"]["safeguard"]["judged_by"] == judged_by
    assert not meta["model_config"].get("label_names")
