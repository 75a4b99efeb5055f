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
  Reconstruction targets weighted by cosine similarity squared (``neighbour_sim_power`` 2; the item itself weighs
  1) with contrastive positives drawn from mutual neighbours only (``mutual_positives``), seeds 0 / 1: 32 bits
  0.553 / 0.543 -> 0.585 / 0.591, 64 bits 0.562 / 0.561 -> 0.594 / 0.604, 128 bits 0.564 / 0.560 -> 0.599 /
  0.599, 16 bits 0.530 -> 0.533 (seed 0). Alone at 32 bits, seed 0 / 1: similarity power 1 0.568 / 0.554, 2
  0.574 / 0.571, 4 0.591 / 0.572; mutual positives 0.559 / 0.558; power 4 with mutual positives 0.593 / 0.586
  (64 / 128 bits 0.602 / 0.604, seed 0 only). Tried and not kept: self-training (neighbours, positives or
  clusters refreshed from a first model's latent: 0.534-0.546, codes less distinct), clusters at 20 + 50 + 100 +
  200 (+0.005 / +0.001). Neighbour purity (share of the 10 with the item's label): TF-IDF 0.659, mutual 0.724.
  Neighbours found over every word in two or more training posts (56k words; ``full_vocab_neighbours``) instead of the
  input's 10k, seeds 0 / 1: 0.585 / 0.591 -> 0.610 / 0.607 with TF-IDF weights (purity 0.659 -> 0.680, mutual 0.724 ->
  0.736), -> 0.634 / 0.617 with BM25 weights (k1 1.2, b 0.75; purity 0.698, mutual 0.749), which the preset uses. Not
  kept, with the full vocabulary's TF-IDF (seed 0 against 0.610 unless said): 5 / 7 / 15 neighbours 0.606 / 0.619
  (seed 1: 0.604 against 0.607) / 0.605; similarity power 4 0.616 (seed 1: 0.609); cluster weight 0.6 0.585; 200
  clusters 0.607; temperature 0.2 0.577. Before it: KL weight 0.15 (0.590 / 0.587) or 0.075 (0.587) instead of 0.3,
  0.5 (0.573); 50 clusters at 16 bits (0.524 against 0.533); neighbours from a TF-IDF with bigrams (purity 0.632),
  from LSA (100-400 dims, 0.653-0.659) or from shared-neighbour similarity (0.637-0.668), all by purity alone.
  The posts' subject lines beside the body in the neighbour space (``subject_weight`` 0.5: the unit BM25 row plus
  0.5 x the unit TF-IDF row of the subject without "Re:"; models.neighbours.text_neighbour_space), purity 0.698 ->
  0.748, seed 0: P@100 at 32 bits 0.631 -> 0.664, 64 bits 0.650 -> 0.686, 128 bits 0.663 -> 0.700. By purity
  alone: weight 0.3 0.735, 0.4 0.748, 0.6 0.739, 0.7 0.728; the subject as one exact token 0.726; e-mail addresses
  as a third block (weight 0.25) 0.752, P@100 0.662 at 32 bits (not kept: no gain); subject words in two or more
  posts only 0.742. BM25 parameters barely matter (k1 0.8 / 2.0: 0.698 / 0.696; b 0.5 / 0.9: 0.696 / 0.699).

pixels (Fashion-MNIST, 32 bits, 20,000 training images as database, 1,000 class-balanced queries, mAP, 15 epochs;
ITQ 0.471 in the same runs): the plain bernoulli default 0.476 (lr 1e-3: 0.481; a 512-unit decoder 0.458; gaussian
0.452); neighbour targets + contrastive term 0.504, with KL 0.3 0.516 (contrastive weight 3: 0.511, 20: 0.512,
100: 0.483; input dropout 0.2: 0.514; gaussian 0.477). With lr 5e-3 on 3,000 images the bernoulli model collapsed
to 0.1% distinct codes, hence lr 1e-3.
  Neighbours found by cosine in PCA-whitened dimensions (``neighbour_whiten``) instead of raw pixels, 20,000
  images, k=10, seed 0 / 1: 0.521 / 0.512 -> 200 dims 0.551 / 0.548 (100 dims 0.536 / 0.531, 300 0.550, 400
  0.549, all 784 0.546; k=10 neighbour purity 0.790 raw, 0.803 at 200 dims). On all 60,000 images (ITQ 0.453 /
  0.479 / 0.488 at 16 / 32 / 64 bits) k=10 neighbours are three times closer than on 20,000 and k=30 does better:
  at 32 bits the default 0.522, whitened 200 dims k=10 0.532, k=30 0.547; 400 dims k=10 0.543, k=30 0.554 (200
  dims k=10 plus cluster pseudo-labels, weight 1.0 over 50 clusters: 0.543). 400 dims k=30 at 16 / 32 / 64 bits:
  0.536 / 0.554 / 0.555 (1.18 / 1.16 / 1.14 x ITQ; the default 0.504 / 0.520 / 0.524; 200 dims k=30 0.535 /
  0.547 / 0.547), seed 0, about 145 s of training each on one core plus ~45 s for the neighbours.
  Later, at 32 bits on all 60,000 (seed 0, against 0.554), none kept, all within seed noise: similarity-weighted
  targets (power 2) with mutual-neighbour positives as in text 0.559; the same with k=60 0.559, with the cluster
  term (weight 1.0, 50 clusters) 0.556, with batches of 1,024 (lr 2e-3) 0.556; neighbours found in whitened pixels
  plus whitened HOG features (k=10 purity 0.811 against 0.803 on 20,000 images) 0.545; a convolutional encoder
  (5x5 convolutions of 16 and 32 channels at stride 2, then 512 units) 0.555 in 316 s against the MLP's 150 s;
  neighbours re-ranked by a two-step diffusion on the k=30 graph (top 30 of S + a S^2, S the normalised affinity,
  a = 1 or 3) 0.543 / 0.545. The encoder is not the limit (what it is asked to reconstruct turned out to be).
  What moved it: the decoder reconstructs the neighbour means of standardised scattering coefficients instead of
  pixels (``target_features`` "scattering", models/scattering.py; 81 maps of 7 x 7, square-rooted, Gaussian loss),
  neighbours and positives still from whitened pixels: 32 bits, seeds 0 / 1 / 2, 0.583 / 0.563 / 0.570 against
  0.554 / 0.559 (seeds 0 / 1) for pixel targets; 16 bits 0.552 against 0.536. The targets' scale matters (the
  standardised coefficients times 0.2 / 0.5 / 1 / 2: 0.538 / 0.566 / 0.583 / 0.564), so they stay at unit variance.
  Full run (benchmarks/quality.py, one core): mAP at 16 / 32 / 64 bits 0.558 / 0.578 / 0.583 = 1.23 / 1.21 / 1.19 x
  ITQ (was 0.536 / 0.554 / 0.567), training 313 / 297 / 456 s including ~110 s for the coefficients.
  Not kept with scattering targets (seed 0): similarity power 2 with mutual positives 0.567 at 32 bits; J=3
  (217 maps of 4 x 4) 0.572, its coefficients taking 415 s for 60,000 images; one 64-bit model instead of two
  32-bit members 0.582 against 0.583; the standardised pixels beside the coefficients in the targets, weight 1 /
  0.5, 0.580 / 0.565.
  The itq read-out (models.readout: bits = signs of a rotation of the centred logits, fitted by ITQ on the training
  set after training, instead of logit > 0) on the same trained models, seed 0, KL 0.3, mean of four rotation
  seeds: 16 / 32 / 64 bits 0.558 / 0.578 / 0.583 -> 0.574 / 0.587 / 0.606. One rotation seed varies by about
  +-0.01 (0.583-0.601 over twelve at 32 bits), and neither its quantization loss nor how close it keeps the
  training neighbours predicts which is best (eight seeds each), so one seeded rotation it is. With the read-out,
  KL weight 0.1: 32 bits 0.603, 64 bits (two members) 0.613; 0.03 at 32 bits 0.590; at 16 bits 0.1 / 0.2 give
  0.563 / 0.561 against 0.574 at 0.3, so codes under 32 bits keep 0.3 (``NARROW_KL``). End to end with the
  model's own rotation at 32 bits, seeds 0 / 1: 0.597 / 0.593 on raw logits, 0.604 / 0.6005 with the soft clip
  below (threshold read-out of the same models 0.575).
  Not kept (32 bits): 32-bit codes read by PCA then ITQ from two 32-bit members' 64 logits 0.600, and 64-bit codes
  from two 64-bit members 0.605; two 16-bit members at 32 bits (KL 0.3) 0.596; a decorrelation penalty on the
  relaxed codes (weight 10, KL 0.3) 0.588; contrastive weight 2.0 / 0.5 0.574 / 0.587; 30 epochs 0.598;
  whitening the logits fully or half before the rotation 0.577 / 0.597; the rotation fitted on neighbour-averaged
  logits 0.604 (against 0.603); starting it at identity or at the principal axes 0.595 / 0.598; targets averaged
  over 15 / 60 whitened-pixel neighbours instead of 30 (positives still from 30) 0.582 / 0.591.
  The rotation's input: logits reach |40| where the median is 5, and those few decided it. Four rotation seeds
  each, 16 / 32 bits: raw logits 0.567 / 0.600; clipped at 8 / 12 / 16: 0.584 / 0.580 / 0.568 and 0.599 / 0.605 /
  0.604; tanh(logit / 2) / (logit / 4) / (logit / 8): 0.581 / 0.588 / 0.598 and 0.590 / 0.596 / 0.603, so
  tanh(logit / 8) (models.readout.SCORE_SCALE); at 64 bits (KL 0.1) 0.617 against 0.613.
  Full run (benchmarks/quality.py, one core): mAP at 16 / 32 / 64 bits 0.592 / 0.604 / 0.616 = 1.31 / 1.26 / 1.26 x
  ITQ, training 305 / 309 / 441 s (docs/bench/quality-fashion-2026-11-26-itq.json).
  Tried in the same session and not kept (32 bits, seed 0 against 0.554): neighbours found in scattering space,
  whose labels agree far more often (k=10: 0.862 against 0.823), 0.543 (with similarity power 2 and mutual
  positives 0.540; PCA-whitened scattering, 0.866, 0.546; their union with the pixel neighbours 0.542); pixel
  neighbours' targets with scattering-space positives 0.559, the reverse 0.537, so the targets, not the positives,
  carry the gain; an encoder reading the scattering coefficients instead of pixels 0.548 (0.535 with scattering
  neighbours) in 372 s; neighbours from a 10-dimensional UMAP of the pixels (umap-learn, whose own float mAP is
  0.587 but its codes' 0.536) 0.523, its bits as a teacher 0.549; random shifts of up to 2 pixels on the
  contrastive inputs 0.557 (with flips 0.546); four positives per anchor 0.557; 40 epochs 0.549; temperature 0.5
  / 1.0 0.556 / 0.544. Coates-Ng patch features (k-means of 6 x 6 patches) scored no better than pixels by float
  mAP (0.486 against 0.480), so were not trained on.
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
            "min_steps": 1200,  # 30 epochs of 20 Newsgroups' 11k posts; small sets get as many steps
            "cluster_weight": 0.3,
            "n_clusters": 100,
            "patience": 30,  # the validation loss is reconstruction only; it rises early once the cluster term is on
            "neighbour_sim_power": 2.0,
            "mutual_positives": True,
            "full_vocab_neighbours": True,
            "subject_weight": 0.5,
        },
    ),
    "pixels": (
        {"kl_weight": 0.1, "readout": "itq"},
        {
            "neighbours": 30,
            "neighbour_whiten": 400,
            "contrastive_weight": 1.0,
            "lr": 1e-3,
            "epochs": 20,
            # 20 epochs of 60k images are ~4,200 steps; 4,500 images took ~1,500 steps to reach the probe mAP's
            # plateau (20 epochs = 320 steps had collapsed codes; docs/robustness.md)
            "min_steps": 1500,
            "target_features": "scattering",
        },
    ),
    "dense": ({}, {"min_steps": 1000}),
}


KL_REFERENCE_BITS = 32  # preset KL weights are tuned at this width
SCALED_KL = frozenset({"text"})  # kinds whose KL weight is scaled with the code width (see preset())
NARROW_KL = {"pixels": 0.3}  # kinds whose members narrower than KL_REFERENCE_BITS take this KL weight instead
# kinds whose longer codes are ensembles of members this wide (models.ensemble); see preset()
MEMBER_BITS = {"text": 32, "pixels": 32}


def preset(
    kind: str, n_bits: int = KL_REFERENCE_BITS, members: int | None = None, n_items: int | None = None
) -> tuple[dict, dict]:
    """(model overrides, training overrides) for a featurizer kind at a code width; copies, safe to update.
    ``members`` overrides the kind's default ensemble size (the KL weight follows the bits per member);
    ``n_items``, the training set's size, scales what was tuned on a larger one (:func:`for_size`).

    Text and pixel codes longer than 32 bits are ensembles of 32-bit members (``ModelConfig.members``,
    models.ensemble), seed 0: 20 Newsgroups P@100 at 64 bits 0.594 (one model) -> 0.616 (two members), at 128
    bits 0.599 -> 0.626 (four); Fashion-MNIST mAP at 64 bits 0.555 -> 0.567 (two; four 16-bit members 0.553).
    Shorter members lost or tied: 20 Newsgroups at 32 bits, two 16-bit models side by side 0.577 against one
    32-bit model's 0.585; Fashion-MNIST at 32 bits 0.560 against 0.554 (within seed noise, so not kept). Training
    time grows with the members: 208 s against 115 s for one model at 64 bits, 380 s against 140 s at 128 (one core).

    The KL term sums over bits, so a fixed weight regularises long codes harder. For text the preset's weight is
    scaled by 32 / (bits per member) above 32 bits per member, keeping the total KL budget of the width it was
    tuned at. Measured on 20 Newsgroups at 128 bits with one model: weight 0.3 gives P@100 0.518 (below 64 bits'
    0.544), the scaled 0.075 gives 0.548. Below 32 bits it is not raised: at 16 bits the scaled 0.6 gave 0.533 /
    0.542 (seeds 0 / 1), 0.3 gives 0.555 / 0.551. For pixels the scaling did not help (Fashion-MNIST mAP at 16 /
    64 bits: 0.504 / 0.524 unscaled, 0.498 / 0.519 scaled, where 64 bits fell below 32 bits' 0.520), so their
    weight is not scaled. With the itq read-out, pixels take 0.1 for 32-bit members and 0.3 for narrower codes
    (``NARROW_KL``; measured at 16 bits: 0.1 / 0.2 / 0.3 give 0.563 / 0.561 / 0.574).
    """
    if kind not in PRESETS:
        raise ValueError(f"no preset for featurizer {kind!r}; choose one of {', '.join(PRESETS)}")
    model, train = dict(PRESETS[kind][0]), dict(PRESETS[kind][1])
    member_bits = MEMBER_BITS.get(kind)
    if members is not None:
        model["members"] = members
    elif member_bits and n_bits > member_bits and n_bits % member_bits == 0:
        model["members"] = n_bits // member_bits
    member_width = n_bits // model.get("members", 1)
    if "kl_weight" in model and kind in SCALED_KL:
        model["kl_weight"] = model["kl_weight"] * KL_REFERENCE_BITS / max(member_width, KL_REFERENCE_BITS)
    if kind in NARROW_KL and member_width < KL_REFERENCE_BITS:
        model["kl_weight"] = NARROW_KL[kind]
    return model, for_size(kind, train, n_items)


def for_size(kind: str, train: dict, n_items: int | None) -> dict:
    """The pixel preset's neighbourhoods, tuned on 60,000 images, for ``n_items`` training images: k = n / 2,000
    neighbours within [10, 30] (k=30 is 1.5% of a class at 60,000 images, a third of one at 1,000) and at most
    n / 10 whitened dimensions (PCA whitening of 400 dimensions from 900 images mostly amplifies noise). Fashion-MNIST
    at 32 bits, mAP against ITQ's: 1,000 images 1.04 x with k=30 and 400 dimensions, 1.11 x with k=10 and 100;
    5,000 images 1.18 x with k=30, 1.20 x with k=10 (issue 18, docs/robustness.md). The schedule's share of this
    is ``min_steps``."""
    if kind != "pixels" or n_items is None:
        return train
    train = dict(train)
    train["neighbours"] = min(train["neighbours"], max(10, n_items // 2000))
    train["neighbour_whiten"] = min(train["neighbour_whiten"], max(10, n_items // 10))
    return train


def resolve(kind: str, n_items: int | None, model: dict[str, Any], train: dict[str, Any]) -> tuple[dict, dict]:
    """The (model, train) overrides of a training run: the preset of ``kind`` for ``n_items`` items, under the
    user's settings. ``model`` holds n_bits and may hold members, bottleneck, input_dropout, hidden, kl_weight,
    readout; ``train`` any TrainConfig field. A None value is not given: the preset's stands."""
    given = {k: v for k, v in model.items() if v is not None}
    train = dict(train)
    model_over, train_over = preset(kind, given["n_bits"], given.pop("members", None), n_items=n_items)
    model_over.update(given)
    if train.get("epochs") is not None and train.get("min_steps") is None:
        train["min_steps"] = 0  # an explicit epoch count is what the user wants, however few steps it makes
    if train.get("neighbours") == 0:
        if train.get("contrastive_weight") is None:
            train["contrastive_weight"] = 0.0  # its positives are neighbours: no neighbours, no contrastive term
        # the cluster and teacher terms, and how neighbours are found, go with the kNN graph
        no_graph = {"cluster_weight": 0.0, "teacher_weight": 0.0, "neighbour_whiten": 0, "full_vocab_neighbours": False}
        train_over.update(no_graph, subject_weight=0.0)
    train_over.update({k: v for k, v in train.items() if v is not None})
    return model_over, train_over
