"""models.presets.resolve: the preset under the user's settings, as ``hamdex train`` applies them."""

from __future__ import annotations

import pytest
from hamdex.models.presets import preset, resolve

UNSET_TRAIN = dict.fromkeys(["neighbours", "contrastive_weight", "subject_weight", "epochs", "min_steps", "lr"])


@pytest.mark.parametrize("kind", ["text", "pixels", "dense"])
def test_nothing_given_is_the_preset(kind: str) -> None:
    model, train = resolve(kind, 1000, {"n_bits": 64, "members": None, "kl_weight": None}, UNSET_TRAIN)
    want_model, want_train = preset(kind, 64, None, n_items=1000)
    assert model == {**want_model, "n_bits": 64} and train == want_train


def test_given_settings_win() -> None:
    model, train = resolve("pixels", 1000, {"n_bits": 32, "members": 1, "readout": "threshold"}, {"lr": 0.1})
    assert model["members"] == 1 and model["readout"] == "threshold" and train["lr"] == 0.1


def test_an_epoch_count_drops_the_step_floor_unless_one_is_given() -> None:
    assert resolve("text", 100, {"n_bits": 32}, {"epochs": 2})[1]["min_steps"] == 0
    assert resolve("text", 100, {"n_bits": 32}, {"epochs": 2, "min_steps": 50})[1]["min_steps"] == 50


def test_no_neighbours_turns_off_what_goes_with_the_graph() -> None:
    _, train = resolve("text", 100, {"n_bits": 32}, {"neighbours": 0})
    assert train["contrastive_weight"] == train["cluster_weight"] == train["subject_weight"] == 0.0
    assert train["neighbour_whiten"] == 0 and train["full_vocab_neighbours"] is False and train["lsa_neighbours"] == 0
    from hamdex.models.train import TrainConfig

    TrainConfig(**train)  # a valid configuration: nothing left that needs the graph
    _, train = resolve("text", 100, {"n_bits": 32}, {"neighbours": 0, "contrastive_weight": 0.5, "subject_weight": 1})
    assert train["contrastive_weight"] == 0.5 and train["subject_weight"] == 1
