"""Default model and training settings per featurizer kind: what ``hamdex train`` and the demo use unless told
otherwise. Each value comes from a measurement in ``benchmarks/quality.py`` (see the README's quality section).

text (20 Newsgroups, 32 bits, precision@100 over all 7,532 test queries, one run each):
  bernoulli + neighbour targets k=10: kl_weight 0.01 -> 0.513, 0.1 -> 0.518, 0.3 -> 0.526, 1.0 -> 0.375 (collapse);
  without neighbour targets 0.485; the sign bottleneck with them 0.478; k=20 0.487; 60 epochs instead of 30 0.501
  (the reconstruction keeps improving after retrieval stops), so text trains for a fixed 30 epochs at most;
  adding the neighbour-contrastive term (models/objectives.py) at weight 1.0, temperature 0.3: 0.547, and 0.539
  with the sparse first layer, 113 s of training on one core (weight 0.5:
  0.543; weight 3.0 at temperature 0.2: 0.501);
  adding cluster pseudo-labels (supervised contrastive over 100 k-means clusters of the kNN graph's spectral
  embedding, weight 0.3, models/teacher.py), P@100 at 16 / 32 / 64 / 128 bits, seed 0: 0.508 -> 0.530,
  0.539 -> 0.553, 0.550 -> 0.562, 0.548 -> 0.564 (seeds 1 and 2 gain +0.021 / +0.009, +0.001 / +0.015, +0.019 at
  the same widths; at 32 bits the mean gain is +0.008). It needs patience 30: with 4 the 128-bit run stopped at
  epoch 7 (0.546). 50 clusters at weight 1.0 collapsed the codes (0.508); spectral teacher bits as BCE targets
  (weight 1.0) gave 0.551 at 32 bits but 0.538 at 64, so they stay off.

pixels (Fashion-MNIST, 32 bits, 20,000 training images as database, 1,000 class-balanced queries, mAP, 15 epochs;
ITQ 0.471 in the same runs): the plain bernoulli default 0.476 (lr 1e-3: 0.481; a 512-unit decoder 0.458; gaussian
0.452); neighbour targets + contrastive term 0.504, with KL 0.3 0.516 (contrastive weight 3: 0.511, 20: 0.512,
100: 0.483; input dropout 0.2: 0.514; gaussian 0.477). With lr 5e-3 on 3,000 images the bernoulli model collapsed
to 0.1% distinct codes, hence lr 1e-3.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # kind: (ModelConfig overrides, TrainConfig overrides)
    "text": (
        {"kl_weight": 0.3},
        {
            "neighbours": 10,
            "contrastive_weight": 1.0,
            "temperature": 0.3,
            "epochs": 30,
            "cluster_weight": 0.3,
            "n_clusters": 100,
            "patience": 30,  # the validation loss is reconstruction only; it rises early once the cluster term is on
        },
    ),
    "pixels": ({"kl_weight": 0.3}, {"neighbours": 10, "contrastive_weight": 1.0, "lr": 1e-3, "epochs": 20}),
    "dense": ({}, {}),
}


KL_REFERENCE_BITS = 32  # preset KL weights are tuned at this width
SCALED_KL = frozenset({"text"})  # kinds whose KL weight is scaled with the code width (see preset())


def preset(kind: str, n_bits: int = KL_REFERENCE_BITS) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model overrides, training overrides) for a featurizer kind at a code width; copies, safe to update.

    The KL term sums over bits, so a fixed weight regularises long codes harder. For text the preset's weight is
    scaled by 32 / n_bits, keeping the total KL budget of the width it was tuned at. Measured on 20 Newsgroups at
    128 bits: weight 0.3 gives P@100 0.518 (below 64 bits' 0.544), the scaled 0.075 gives 0.548. For pixels the
    scaling did not help (Fashion-MNIST mAP at 16 / 64 bits: 0.504 / 0.524 unscaled, 0.498 / 0.519 scaled, where
    64 bits fell below 32 bits' 0.520), so their weight stays fixed.
    """
    if kind not in PRESETS:
        raise ValueError(f"no preset for featurizer {kind!r}; choose one of {', '.join(PRESETS)}")
    model, train = dict(PRESETS[kind][0]), dict(PRESETS[kind][1])
    if "kl_weight" in model and kind in SCALED_KL:
        model["kl_weight"] = model["kl_weight"] * KL_REFERENCE_BITS / n_bits
    return model, train
