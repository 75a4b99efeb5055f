"""Default model and training settings per featurizer kind: what ``hamdex train`` and the demo use unless told
otherwise. Each value comes from a measurement in ``benchmarks/quality.py``; the line beside it says why it won.
Every variant tried, with its numbers, is in docs/presets.md; the results tables in docs/quality.md.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # kind: (ModelConfig overrides, TrainConfig overrides)
    "text": (
        # kl: the best of 0.01-1.0 with neighbour targets (1.0 collapses the codes); the itq read-out balances the
        # bits: label mAP at 32 bits on the same weights, 20 Newsgroups +10%, WebKB +10% (docs/robustness.md)
        {"kl_weight": 0.3, "readout": "itq"},
        {
            "neighbours": 10,  # reconstructing the neighbour mean is the largest single gain over a plain AE
            "contrastive_weight": 1.0,  # pulls neighbours' codes together; 0.5 and 3.0 did worse
            "temperature": 0.3,  # 0.2 did worse
            "epochs": 30,  # retrieval stops improving before the reconstruction does
            "min_steps": 1200,  # 30 epochs of 20 Newsgroups' 11k posts; small sets get as many steps
            "cluster_weight": 0.3,  # k-means pseudo-labels add coarse topic structure; 0.6 and 1.0 did worse
            "n_clusters": 100,  # about five per newsgroup; 50 and 200 did worse
            "patience": 30,  # the validation loss is reconstruction only; it rises early once the cluster term is on
            "neighbour_sim_power": 2.0,  # closer neighbours count more in the target
            "mutual_positives": True,  # mutual neighbours share the item's label more often
            "full_vocab_neighbours": True,  # BM25 over every word finds purer neighbours than the 10k-word input
            "subject_weight": 0.5,  # a post's subject names its thread's topic; the purest neighbours at 0.4-0.5
            # co-occurrence beside shared words (models.neighbours.with_lsa): purer neighbours on short and small
            # corpora; with the itq read-out, 32-bit label mAP / ITQ's: R8 0.86 -> 1.02, TREC 0.71 -> 0.91, WebKB 0.89
            # -> 1.03, 20 Newsgroups 1.97 -> 2.23 (docs/robustness.md)
            "lsa_neighbours": 50,
        },
    ),
    "pixels": (
        # with the itq read-out a lighter KL pays at 32 bits per member (narrower codes: NARROW_KL); itq balances and
        # decorrelates the bits that thresholding left unbalanced. Input dropout 0.3 (denoising): mAP at or above
        # the model without it on every width of Fashion-MNIST's 60,000 images (+0.003 to +0.007) and on all nine
        # small image cells of the robustness matrix (digits, Fashion-MNIST 1k and 5k x 16 / 32 / 64 bits: +0.01 to
        # +0.06 x ITQ); docs/presets.md
        {"kl_weight": 0.1, "readout": "itq", "input_dropout": 0.3},
        {
            "neighbours": 30,  # on all 60,000 images k=30 beat k=10; smaller sets get fewer (for_size)
            "neighbour_whiten": 400,  # neighbours by cosine in whitened dimensions agree more with the labels
            "contrastive_weight": 1.0,
            "lr": 1e-3,  # 5e-3 collapsed the codes on a small set
            "epochs": 20,
            # a floor in steps, so that small sets train enough (docs/presets.md, docs/robustness.md)
            "min_steps": 1500,
            "target_features": "scattering",  # shift-stable targets: bits stop spending themselves on positions
        },
    ),
    "dense": (
        # one wide hidden layer without dropout: the same recall in 1,000 steps as (512, 512) with dropout in 2,000
        {"hidden": (1024,), "dropout": 0.0},
        {
            "min_steps": 1000,
            # codes keep the vectors' neighbour order (models.objectives.similarity_distillation) by cosine in the
            # vectors as given, what a vector database ranks by; the checkpoint is chosen, and the model judged
            # against ITQ, by the held-out items' exact nearest neighbours (models.probe.neighbour_probe). MiniLM
            # embeddings of 20 Newsgroups, 64 bits, recall@10 of the float top 10 / label P@100: the earlier preset
            # (student temperature 0.3, lr 5e-3, batch 256, the cluster probe) 0.250 / 0.478, this one 0.351 / 0.384,
            # ITQ 0.322 / 0.345, float cosine - / 0.361 (docs/embeddings.md)
            "distill_weight": 30.0,
            # a sharper teacher than 0.05: at 64 bits recall@10 and the rerank's recall as high or higher on all four
            # corpora of benchmarks/embeddings.py, label P@100 higher on three
            "distill_temperature": 0.02,
            "distill_space": "input",
            "probe": "neighbours",
            "temperature": 0.1,  # the student's (no contrastive term here)
            "lr": 1e-3,
            "batch_size": 512,  # more of each item's neighbours in the batch the teacher ranks over
        },
    ),
}
PRESETS["sentence"] = PRESETS["dense"]  # sentence embeddings are dense vectors (models.sentence)


KL_REFERENCE_BITS = 32  # preset KL weights are tuned at this width
SCALED_KL = frozenset({"text"})  # kinds whose KL weight is scaled with the code width (see preset())
NARROW_KL = {"pixels": 0.3}  # kinds whose members narrower than KL_REFERENCE_BITS take this KL weight instead
# kinds whose longer codes are ensembles of members this wide (models.ensemble); see preset()
MEMBER_BITS = {"text": 32, "pixels": 32}
# kinds whose codes narrower than a member are read out of one member-wide model (ModelConfig.readout_from): PCA of
# its scores to the bits, then ITQ. Label mAP at 16 bits, a 16-bit model -> read from a 32-bit one (ITQ): Fashion-MNIST
# 5k 0.500 -> 0.558 (0.466), 1k 0.509 -> 0.528 (0.468); 20 Newsgroups 1k 0.230 (ITQ shipped) -> 0.316 (0.230);
# digits lost 0.794 -> 0.762 (0.611); docs/robustness.md
READ_NARROW = frozenset({"pixels", "text"})


def preset(
    kind: str,
    n_bits: int = KL_REFERENCE_BITS,
    members: int | None = None,
    n_items: int | None = None,
    read_narrow: bool = True,
) -> tuple[dict, dict]:
    """(model overrides, training overrides) for a featurizer kind at a code width; copies, safe to update.
    ``members`` overrides the kind's default ensemble size (the KL weight follows the bits per member);
    ``n_items``, the training set's size, scales what was tuned on a larger one (:func:`for_size`);
    ``read_narrow`` False: no ``readout_from`` for narrow codes (the user asked for another read-out or for none).

    Text and pixel codes longer than 32 bits are ensembles of 32-bit members (``ModelConfig.members``,
    models.ensemble): independent members beat one long model, and shorter members did not pay. Shorter text and
    pixel codes are read out of one 32-bit model (``ModelConfig.readout_from``, ``READ_NARROW``).

    The KL term sums over bits, so a fixed weight regularises long codes harder. For text the preset's weight is
    scaled by 32 / (bits per member) above 32 bits per member, keeping the total KL budget of the width it was
    tuned at; below 32 bits it is not raised. For pixels scaling did not help, so their weight is not scaled; with
    the itq read-out they take 0.1 for 32-bit members and 0.3 for narrower codes (``NARROW_KL``). The measurements
    are in docs/presets.md.
    """
    if kind not in PRESETS:
        raise ValueError(f"no preset for featurizer {kind!r}; choose one of {', '.join(PRESETS)}")
    model, train = dict(PRESETS[kind][0]), dict(PRESETS[kind][1])
    member_bits = MEMBER_BITS.get(kind)
    if members is not None:
        model["members"] = members
    elif member_bits and n_bits > member_bits and n_bits % member_bits == 0:
        model["members"] = n_bits // member_bits
    elif member_bits and n_bits < member_bits and kind in READ_NARROW and read_narrow:
        model["readout_from"] = member_bits
    member_width = model.get("readout_from") or n_bits // model.get("members", 1)
    if "kl_weight" in model and kind in SCALED_KL:
        model["kl_weight"] = model["kl_weight"] * KL_REFERENCE_BITS / max(member_width, KL_REFERENCE_BITS)
    if kind in NARROW_KL and member_width < KL_REFERENCE_BITS:
        model["kl_weight"] = NARROW_KL[kind]
    return model, for_size(kind, train, n_items)


def for_size(kind: str, train: dict, n_items: int | None) -> dict:
    """The pixel preset's neighbourhoods, tuned on 60,000 images, for ``n_items`` training images: k = n / 2,000
    neighbours within [10, 30] (k=30 is 1.5% of a class at 60,000 images, a third of one at 1,000) and at most
    n / 10 whitened dimensions (PCA whitening of 400 dimensions from 900 images mostly amplifies noise); measured in
    docs/presets.md and docs/robustness.md. The schedule's share of this is ``min_steps``."""
    if kind != "pixels" or n_items is None:
        return train
    train = dict(train)
    train["neighbours"] = min(train["neighbours"], max(10, n_items // 2000))
    train["neighbour_whiten"] = min(train["neighbour_whiten"], max(10, n_items // 10))
    return train


def resolve(kind: str, n_items: int | None, model: dict[str, Any], train: dict[str, Any]) -> tuple[dict, dict]:
    """The (model, train) overrides of a training run: the preset of ``kind`` for ``n_items`` items, under the
    user's settings. ``model`` holds n_bits and may hold members, bottleneck, input_dropout, hidden, kl_weight,
    readout, nested, readout_from; ``train`` any TrainConfig field. A None value is not given: the preset's stands."""
    given = {k: v for k, v in model.items() if v is not None}
    train = dict(train)
    # the preset's projection of narrow codes needs its itq read-out and no prefixes; readout_from 0 turns it off
    read_narrow = given.get("readout", "itq") == "itq" and not given.get("nested") and "readout_from" not in given
    members = given.pop("members", None)
    model_over, train_over = preset(kind, given["n_bits"], members, n_items=n_items, read_narrow=read_narrow)
    model_over.update(given)
    if train.get("epochs") is not None and train.get("min_steps") is None:
        train["min_steps"] = 0  # an explicit epoch count is what the user wants, however few steps it makes
    if train.get("neighbours") == 0:
        if train.get("contrastive_weight") is None:
            train["contrastive_weight"] = 0.0  # its positives are neighbours: no neighbours, no contrastive term
        # the cluster and teacher terms, and how neighbours are found, go with the kNN graph
        no_graph = {"cluster_weight": 0.0, "teacher_weight": 0.0, "neighbour_whiten": 0, "full_vocab_neighbours": False}
        train_over.update(no_graph, subject_weight=0.0, lsa_neighbours=0)
    train_over.update({k: v for k, v in train.items() if v is not None})
    return model_over, train_over
