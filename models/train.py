"""Training: fit the featurizer, then the autoencoder with AdamW, a validation split and early stopping.

The schedule counts optimizer steps (``TrainConfig.min_steps``, ``warmup_steps``) so that a preset tuned on 60,000
items still trains enough on 4,500. With enough held-out items (``PROBE_MIN_ITEMS``) the checkpoint is chosen by a
label-free retrieval signal, the probe mAP of ``models.probe``, instead of the reconstruction loss; ``fit_hasher``
then compares the model with ITQ on the same items and acts when it does not clearly win (``models.safeguard``),
and writes a training report into the checkpoint's metadata (:func:`training_report`).

No CLI parsing here: ``service.cli`` builds the configs. Deterministic for a given seed on a given device.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from hamdex.models.adversarial import AdversarialPrior
from hamdex.models.autoencoder import ModelConfig, member_widths, score_bits
from hamdex.models.checkpoint import compute_fingerprint
from hamdex.models.ensemble import Model, build_model, parts
from hamdex.models.feature_matching import FeatureMatching, reconstructions
from hamdex.models.featurizers import Features, make_featurizer
from hamdex.models.hasher import Hasher, resolve_device, to_tensor
from hamdex.models.health import code_health
from hamdex.models.label_space import class_space
from hamdex.models.neighbours import (
    mutual_neighbours,
    nearest_neighbours,
    neighbour_targets,
    text_neighbour_space,
    whitened,
    with_lsa,
)
from hamdex.models.objectives import cluster_supcon, neighbour_infonce, similarity_distillation, teacher_bce
from hamdex.models.probe import (
    SIGNALS,
    Probe,
    build_probe,
    calibrate,
    encode_rows,
    label_probe,
    neighbour_probe,
    probe_score,
)
from hamdex.models.propagate import propagate_labels
from hamdex.models.readout import FISHER_MIN_PER_CLASS
from hamdex.models.safeguard import (
    Verdict,
    assess,
    clearly_wins,
    collapsed,
    decide,
    fit_itq_candidate,
    with_readout,
)
from hamdex.models.scattering import scattering_targets
from hamdex.models.teacher import cluster_labels, spectral_teacher_bits

from hamdex.progress import progress

LOG = logging.getLogger(__name__)


TARGET_FEATURES = ("input", "scattering")
DISTILL_SPACES = ("features", "input")
PROBES = ("clusters", "neighbours")
PROBE_MIN_ITEMS = 50  # held-out items needed to validate by the probe and to run the safeguard
JUDGE_MIN_PER_CLASS = 5  # labelled items a class on average for labels that only judge (fit_hasher's judge_labels)
PROPAGATION_NEIGHBOURS = 10  # k of the graph labels spread over when the preset trains without neighbours
# the decoder is given the class of at most this share of the training items each step, a random draw of the
# labelled ones: where it is given every item's class, reconstruction no longer needs the bits to hold it
# (docs/quality.md, Labels: all of Fashion-MNIST labelled lost to ITQ); up to 10% labelled nothing changes
CONDITIONED_SHARE = 0.1
EVAL_STEPS = 100  # at least this many optimizer steps between two probe validations (small sets: short epochs)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40  # upper bound, unless min_steps needs more; early stopping usually ends sooner
    # the schedule in optimizer steps, so that it transfers across data sizes: at least this many steps however
    # few the items (epochs are added), and no early stop before them; epochs alone starve small sets (issue 18)
    min_steps: int = 0
    warmup_steps: int = 0  # the learning rate rises linearly from 0 over these first steps
    batch_size: int = 256
    lr: float = 5e-3  # measured on 20 Newsgroups: converges in ~30 epochs where 1e-3 needs 100+
    weight_decay: float = 1e-4
    val_fraction: float = 0.1  # held out for early stopping
    # validations without improvement before stopping. A validation follows each epoch, or each group of epochs
    # of at least EVAL_STEPS steps; it scores the held-out items by the probe mAP (models.probe) when the caller
    # gives a probe (fit_hasher does from PROBE_MIN_ITEMS held-out items on), else by their loss
    patience: int = 4
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    neighbours: int = 0  # > 0: reconstruct the mean of each item and its k nearest neighbours (models.neighbours)
    # > 0: that mean weighs each neighbour by its cosine similarity to the item to this power (the item itself 1),
    # instead of uniformly (closer neighbours say more about the item); see models.neighbours.neighbour_targets
    # and docs/presets.md
    neighbour_sim_power: float = 0.0
    # draw the positives of the contrastive and cluster terms from the mutual kNN (i lists j and j lists i) only,
    # falling back to all k for items without one (they share the item's label more often); see
    # models.neighbours.mutual_neighbours and docs/presets.md
    mutual_positives: bool = False
    contrastive_weight: float = 0.0  # > 0 (needs neighbours): InfoNCE with a neighbour as positive (models.objectives)
    temperature: float = 0.3  # of the contrastive term
    # > 0: match each item's distribution of similarities to the batch by relaxed-code cosine to the one by input
    # cosine (models.objectives.similarity_distillation), teacher at distill_temperature, student at temperature
    distill_weight: float = 0.0
    distill_temperature: float = 0.05
    # where the distillation teacher takes its cosine: "features", the model's input features; or "input", the
    # vectors as given, before the dense featurizer's standardisation: cosine in the user's own space, what a vector
    # database ranks by (dense and sentence featurizers only)
    distill_space: str = "features"
    # the weight of the autoencoder's own loss (reconstruction and the bottleneck's regulariser) beside the other
    # terms. Only this loss trains the decoder, and Adam scales each parameter's step by its own gradients, so the
    # decoder learns about as fast at any weight > 0; below 1 the encoder follows the other terms more
    recon_weight: float = 1.0
    # > 0: pull the relaxed codes (tanh of the scores) towards +-1, mean (|code| - 1)^2, so that the codes the
    # pairwise terms shape are close to the bits that are searched (the quantization term of deep hashing)
    quantization_weight: float = 0.0
    # > 0: an adversarial prior on each member's codes (models.adversarial): a discriminator tells them from
    # independent fair bits and the encoder learns to fool it, for balanced, independent bits; see docs/quality.md
    adversarial_weight: float = 0.0
    # > 0, images only: VAE-GAN's feature-matching term (models.feature_matching): a discriminator tells targets
    # from reconstructions and the decoder matches its hidden features beside the pixel loss; see docs/quality.md
    feature_matching_weight: float = 0.0
    teacher_weight: float = 0.0  # > 0 (needs neighbours): BCE to spectral teacher bits (models.teacher)
    cluster_weight: float = 0.0  # > 0 (needs neighbours): supervised contrastive over k-means pseudo-labels
    n_clusters: int = 50  # of the pseudo-labels
    # with labels (fit_hasher's labels; issue 20): supervised contrastive over the true classes of a labelled
    # mini-batch of label_batch items drawn each step beside the batch (few labelled items still count each step)
    label_weight: float = 1.0
    label_batch: int = 128
    # with labels on part of the items: the classes spread over the training kNN graph (models.propagate), and up to
    # this share of the unlabelled training items, the most confident first, count as labelled in the label term.
    # Off: on 20 Newsgroups with 10% labels 0.5 gave P@100 0.699 against 0.715 without (docs/quality.md, Labels)
    label_propagation: float = 0.0
    # with labels: the neighbour space gains each item's class probabilities (a logistic regression on the labelled
    # training items; models.label_space) at this length relative to its own row, where a check on hidden labelled
    # items finds it helps, so the unlabelled items' neighbours, targets and clusters follow the classes too. 0 =
    # off; needs neighbours. With 10% of the labels, 32 bits, P@100 / mAP over the label term alone: 20 Newsgroups
    # +0.016-0.018 / +0.030-0.038 (two seeds), Fashion-MNIST 5k +0.015 / +0.036, digits +0.032 / +0.037, WebKB
    # +0.094 / +0.101 (docs/quality.md, Labels)
    label_space: float = 1.0
    # with labels: read the bits out along the classes (models.readout.fisher_projection, then ITQ) instead of the
    # plain itq read-out. Off: 20 Newsgroups at 32 bits, P@100 / mAP +0.012 / +0.019 with 10% of the labels but
    # -0.028 / -0.035 with all of them; Fashion-MNIST with 10%: +0.010 / -0.027 (docs/quality.md, Labels)
    fisher_readout: bool = False
    graph_neighbours: int = 0  # k of the teachers' kNN graph; 0 = ``neighbours``
    # > 0: find the neighbours (and the teachers' graph) by cosine in this many PCA-whitened dimensions of the
    # features instead of the features themselves (dense features only; models.neighbours.whitened). The decoder
    # still reconstructs the neighbours' own features. Whitened neighbours agree more with labels (docs/presets.md)
    neighbour_whiten: int = 0
    # text only: find the neighbours (and the teachers' graph) by BM25 cosine over every word in at least two
    # training texts (models.neighbours.full_vocabulary_bm25; 56k words on 20 Newsgroups) instead of the model's
    # 10k-word input, which finds purer neighbours. The decoder still reconstructs the input features; the
    # measurements are in docs/presets.md
    full_vocab_neighbours: bool = False
    # > 0 (needs full_vocab_neighbours): the subject line of mail/news-style texts joins the neighbour space at this
    # weight beside the body (models.neighbours.text_neighbour_space): a subject names its thread's topic in a few
    # chosen words; see docs/presets.md
    subject_weight: float = 0.0
    # > 0 (needs full_vocab_neighbours): the text neighbour space also holds each text's row of this many LSA
    # dimensions (truncated SVD of the TF-IDF input) at half the BM25 row's length (models.neighbours.with_lsa).
    # Co-occurring words count as shared: short or small corpora, where two texts on one topic rarely share their
    # rare words, find far purer neighbours; see docs/robustness.md
    lsa_neighbours: int = 0
    # the LSA rows' length beside the unit BM25 rows: 0.5 because the trained models agree (weight 1 was a little
    # better on the small corpora and cost 20 Newsgroups 0.03 of P@100; docs/robustness.md)
    lsa_weight: float = 0.5
    # what the decoder reconstructs (the mean over each item and its neighbours when neighbours > 0): "input", the
    # model's input features; or "scattering", for images only: the standardised square roots of their 2-D
    # scattering coefficients (models.scattering), with a gaussian reconstruction loss. The encoder reads the input
    # either way. Scattering coefficients barely move when an image shifts, so bits stop spending themselves on
    # exact positions; see docs/presets.md
    target_features: str = "input"
    max_seconds: float | None = None  # wall-clock budget; stops after the epoch that crosses it
    progress: bool = True  # a bar on a terminal, else a log line now and then (hamdex.progress)
    # fit_hasher's label-free signal, which chooses the checkpoint and (without the user's labels) judges the model
    # against ITQ: "clusters", the mAP of the held-out items' Hamming ranking by pseudo-classes of the features
    # (models.probe.build_probe); or "neighbours", by each held-out item's exact nearest training items in the input
    # space (models.probe.neighbour_probe; the vectors as given for dense and sentence inputs)
    probe: str = "clusters"
    # fit_hasher: compare the trained model with ITQ on the held-out items and act when it does not clearly win
    # (models.safeguard); needs PROBE_MIN_ITEMS held-out items, else the report says it was not checked. Off here
    # so that a caller gets the model it configured; ``hamdex train`` and the benchmarks turn it on
    safeguard: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if self.min_steps < 0 or self.warmup_steps < 0:
            raise ValueError("min_steps and warmup_steps must be >= 0")
        if not self.adversarial_weight >= 0 or math.isinf(self.adversarial_weight):
            raise ValueError(f"adversarial_weight must be a finite number >= 0 (0: off), got {self.adversarial_weight}")
        if not self.feature_matching_weight >= 0 or math.isinf(self.feature_matching_weight):
            raise ValueError(
                f"feature_matching_weight must be a finite number >= 0 (0: off), got {self.feature_matching_weight}"
            )
        if self.distill_weight < 0 or self.distill_temperature <= 0:
            raise ValueError("distill_weight must be >= 0, distill_temperature > 0")
        if self.distill_space not in DISTILL_SPACES:
            raise ValueError(f"unknown distill_space {self.distill_space!r}; choose one of {', '.join(DISTILL_SPACES)}")
        if self.probe not in PROBES:
            raise ValueError(f"unknown probe {self.probe!r}; choose one of {', '.join(PROBES)}")
        if not self.recon_weight >= 0 or math.isinf(self.recon_weight):
            raise ValueError(f"recon_weight must be a finite number >= 0, got {self.recon_weight}")
        if not self.quantization_weight >= 0 or math.isinf(self.quantization_weight):
            raise ValueError(f"quantization_weight must be a finite number >= 0, got {self.quantization_weight}")
        if self.neighbours < 0 or self.contrastive_weight < 0 or self.temperature <= 0:
            raise ValueError("neighbours and contrastive_weight must be >= 0, temperature > 0")
        if self.contrastive_weight and not self.neighbours:
            raise ValueError("contrastive_weight needs neighbours > 0 (the positives are neighbours)")
        if self.teacher_weight < 0 or self.cluster_weight < 0 or self.n_clusters < 2 or self.graph_neighbours < 0:
            raise ValueError("teacher_weight, cluster_weight, graph_neighbours must be >= 0, n_clusters >= 2")
        if self.neighbour_whiten < 0:
            raise ValueError("neighbour_whiten must be >= 0")
        if (self.neighbour_whiten or self.full_vocab_neighbours) and not self.neighbours:
            raise ValueError(
                "neighbour_whiten / full_vocab_neighbours needs neighbours > 0 (it changes how they are found)"
            )
        if self.neighbour_whiten and self.full_vocab_neighbours:
            raise ValueError("neighbour_whiten (dense features) and full_vocab_neighbours (text) exclude each other")
        if (self.teacher_weight or self.cluster_weight) and not self.neighbours:
            raise ValueError("teacher_weight and cluster_weight need neighbours > 0 (they use the kNN graph)")
        if self.neighbour_sim_power < 0:
            raise ValueError("neighbour_sim_power must be >= 0")
        if self.target_features not in TARGET_FEATURES:
            raise ValueError(
                f"unknown target_features {self.target_features!r}; choose one of {', '.join(TARGET_FEATURES)}"
            )
        if self.subject_weight < 0 or (self.subject_weight and not self.full_vocab_neighbours):
            raise ValueError("subject_weight must be >= 0, and > 0 needs full_vocab_neighbours (text neighbours)")
        if self.lsa_neighbours < 0 or (self.lsa_neighbours and not self.full_vocab_neighbours):
            raise ValueError("lsa_neighbours must be >= 0, and > 0 needs full_vocab_neighbours (text neighbours)")
        if self.lsa_weight <= 0:
            raise ValueError("lsa_weight must be > 0")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        if not 0 <= self.label_propagation <= 1:
            raise ValueError("label_propagation must be in [0, 1]")
        if self.label_space < 0:
            raise ValueError("label_space must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    model: Model
    # one row per epoch: epoch, steps (so far), train_loss, val_loss, seconds, and probe_map where validated by it
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    device: str
    steps: int = 0  # optimizer steps taken
    probe_map: float | None = None  # of the kept weights, when a probe chose them
    stopped: str = "budget"  # why training ended: "budget" (all epochs), "patience" (early stop) or "time"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    return perm[n_val:], perm[:n_val]


@dataclass(frozen=True)
class TrainData:
    x: Features  # (n, d) model inputs
    targets: Features | None = None  # (n, d) what the decoder reconstructs; x itself when None
    neighbours: np.ndarray | None = None  # int64 (n, k) positives of the contrastive and cluster terms
    teacher: np.ndarray | None = None  # bool (n, n_bits) target bits (models.teacher)
    clusters: np.ndarray | None = None  # int64 (n, members) pseudo-labels (models.teacher), one k-means per member
    labels: np.ndarray | None = None  # int64 (n,) true class indices, -1 unlabelled (fit_hasher's labels)
    # int64 (n,) the label term's classes: ``labels`` and the classes propagated to unlabelled items
    # (models.propagate), which the decoder is not given: a guessed class would let the bits leave it out
    label_targets: np.ndarray | None = None
    labelled_train: np.ndarray | None = None  # int64 training rows with a label term class (set by train)
    condition_rate: float = 1.0  # the chance that a labelled item's decoder is given its class in a step
    similarity: np.ndarray | None = None  # (n, d') rows whose cosine the distillation teacher uses; x when None


def _batch_loss(
    model: Model, data: TrainData, rows: np.ndarray, cfg: TrainConfig, device, rng, adversary=None, matcher=None
):
    batch = to_tensor(data.x[rows], device, sparse=True)  # (B, d)
    target = None if data.targets is None else to_tensor(data.targets[rows], device)  # (B, d)
    labels = None if data.labels is None else torch.from_numpy(data.labels[rows]).to(device)  # (B,) -1 unknown
    if labels is not None and data.condition_rate < 1:  # the decoder is not given this step's other classes
        given = torch.from_numpy(rng.random(len(rows)) < data.condition_rate).to(device)
        labels = torch.where(given, labels, torch.full_like(labels, -1))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
        out = model(batch, target) if labels is None else model(batch, target, labels)
        loss = cfg.recon_weight * out.loss
        if labels is not None and cfg.label_weight:
            loss = loss + cfg.label_weight * _label_loss(model, data, cfg, device, rng)
        if adversary is not None:  # the discriminators' loss and the encoder's against them
            loss = loss + cfg.adversarial_weight * adversary(model.scores(batch))
        if matcher is not None:  # the discriminator's loss and the decoder's feature matching against it
            real = batch if target is None else target  # (B, d) what the decoder reconstructs
            loss = loss + cfg.feature_matching_weight * matcher(reconstructions(model, out, labels), real)
        if cfg.teacher_weight:
            assert data.teacher is not None
            # bit probabilities; the gaussian latent is a mean, thresholded near 0 (its calibrated median)
            probs = torch.sigmoid(out.latent) if model.config.bottleneck == "gaussian" else out.latent
            loss = loss + cfg.teacher_weight * teacher_bce(probs, torch.from_numpy(data.teacher[rows]).to(device))
        if cfg.contrastive_weight or cfg.cluster_weight or cfg.distill_weight or cfg.quantization_weight:
            both_rows = rows
            if data.neighbours is not None:  # each row's partner: one of its neighbours
                pair_rows = data.neighbours[rows, rng.integers(0, data.neighbours.shape[1], len(rows))]
                both_rows = np.concatenate([rows, pair_rows])
            inputs = to_tensor(data.x[both_rows], device, sparse=True)  # (2B, d), or (B, d) without neighbours
            codes = model.relaxed_codes(inputs)  # (2B, n_bits)
            if cfg.quantization_weight:
                loss = loss + cfg.quantization_weight * ((codes.float().abs() - 1) ** 2).mean()
            if cfg.distill_weight:
                if data.similarity is not None:
                    dense = torch.from_numpy(data.similarity[both_rows]).to(device)  # (2B, d')
                else:
                    dense = inputs.to_dense() if inputs.layout == torch.sparse_csr else inputs
                loss = loss + cfg.distill_weight * similarity_distillation(
                    codes, dense, cfg.distill_temperature, cfg.temperature
                )
            # each member's bits get their own terms, as if it were trained alone
            for member, member_codes in enumerate(code_views(model.config, codes)):
                if cfg.contrastive_weight:
                    a, b = member_codes.chunk(2)  # (B, member bits) each
                    loss = loss + cfg.contrastive_weight * neighbour_infonce(a, b, cfg.temperature)
                if cfg.cluster_weight:
                    assert data.clusters is not None
                    labels = torch.from_numpy(data.clusters[both_rows, member]).to(device)
                    loss = loss + cfg.cluster_weight * cluster_supcon(member_codes, labels, cfg.temperature)
    return loss


def code_views(config: ModelConfig, codes: torch.Tensor) -> list[torch.Tensor]:
    """Each member's bits of codes (B, n_bits), in code order (the members of a nested code differ in width)."""
    return list(codes.split(member_widths(config), dim=1))


def _label_loss(model: Model, data: TrainData, cfg: TrainConfig, device, rng) -> torch.Tensor:
    """Supervised contrastive (Khosla et al. 2020) over the true classes of a labelled mini-batch, on each member's
    bits as the cluster term; drawn from the labelled training rows (``TrainData.labels`` restricted by train)."""
    pool = data.labelled_train  # int64 rows with a label, outside the held-out split
    assert data.label_targets is not None and pool is not None
    rows = np.sort(rng.choice(pool, min(cfg.label_batch, len(pool)), replace=False))
    labels = torch.from_numpy(data.label_targets[rows]).to(device)  # (L,)
    codes = model.relaxed_codes(to_tensor(data.x[rows], device, sparse=True))  # (L, n_bits)
    members = code_views(model.config, codes)
    return sum((cluster_supcon(c, labels, cfg.temperature) for c in members), codes.new_zeros(()))


def _epoch(
    model,
    opt,
    sched,
    data: TrainData,
    idx: np.ndarray,
    cfg: TrainConfig,
    device,
    rng,
    bar,
    adversary=None,
    matcher=None,
) -> float:
    model.train()
    order = rng.permutation(idx)
    total = 0.0
    for start in range(0, len(order), cfg.batch_size):
        rows = np.sort(order[start : start + cfg.batch_size])
        loss = _batch_loss(model, data, rows, cfg, device, rng, adversary, matcher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(rows)
        bar.update(len(rows))
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return total / max(len(order), 1)


@torch.no_grad()
def evaluate_loss(
    model: Model, x: Features, targets: Features | None, idx: np.ndarray, device, batch_size=1024
) -> float:
    """Mean loss on the given rows, with eval-mode (thresholded) bits."""
    model.eval()
    total = 0.0
    for start in range(0, len(idx), batch_size):
        rows = idx[start : start + batch_size]
        batch = to_tensor(x[rows], device, sparse=True)
        target = None if targets is None else to_tensor(targets[rows], device)
        total += model(batch, target).loss.item() * len(batch)
    return total / max(len(idx), 1)


def init_decoder_bias(model: Model, x: Features) -> None:
    """Multinomial decoders start from the corpus' word distribution, so the bits only need to explain how each
    document differs from it (a standard trick for softmax decoders over a vocabulary)."""
    if model.config.recon != "multinomial":
        return
    totals = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)  # (d,)
    probs = (totals + 1e-3) / (totals.sum() + 1e-3 * len(totals))
    with torch.no_grad():
        for part in parts(model):
            part.decoder[-1].bias.copy_(torch.from_numpy(np.log(probs)).float())


def train(
    model_config: ModelConfig,
    cfg: TrainConfig,
    x: Features,
    targets: Features | None = None,
    neighbours: np.ndarray | None = None,
    teacher: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    probe: Probe | None = None,
    init: dict[str, torch.Tensor] | None = None,
    labels: np.ndarray | None = None,
    label_targets: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
) -> TrainResult:
    """Train on features (n, d); keeps the weights of the best validation: the highest probe mAP of the held-out
    items with a ``probe`` (models.probe), else the lowest validation loss (without the contrastive term).

    ``targets`` (n, d), when given, is what the decoder reconstructs for each row instead of the row itself;
    ``neighbours`` (n, k) gives the positives of the contrastive term; ``teacher`` (n, n_bits) and ``clusters``
    (n, members) the targets of the teacher and cluster terms (see :func:`training_data`). ``init``: a state dict
    to go on from instead of a fresh model. ``labels`` int64 (n,) class indices, -1 unlabelled, for a model
    config with ``label_names``: the decoder's condition and the targets of the label term; ``label_targets``
    (n,), when given, the label term's targets instead (labels and propagated classes: models.propagate).
    ``similarity`` (n, d'): rows whose cosine the distillation teacher uses instead of ``x``'s.
    """
    if clusters is not None:
        clusters = clusters.reshape(len(clusters), -1)  # (n,) is one member's labels
        members = len(member_widths(model_config))
        if clusters.shape[1] != members:
            raise ValueError(f"clusters has {clusters.shape[1]} label columns for {members} members")
    if similarity is not None and similarity.shape[0] != x.shape[0]:
        raise ValueError(f"similarity has {similarity.shape[0]} rows for {x.shape[0]} items")
    data = TrainData(x, targets, neighbours, teacher, clusters, similarity=similarity)
    train_idx, val_idx = split(x.shape[0], cfg.val_fraction, cfg.seed)
    if labels is not None:
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must be one class index per item, got shape {labels.shape} for {x.shape[0]}")
        term_labels = labels if label_targets is None else label_targets
        pool = _labelled_rows(term_labels, train_idx, model_config)
        rate = condition_rate(labels[train_idx])
        data = dataclasses.replace(
            data, labels=labels, label_targets=term_labels, labelled_train=pool, condition_rate=rate
        )
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model = build_model(model_config)
    if init is None:
        init_decoder_bias(model, x if targets is None else targets)
    else:
        model.load_state_dict(init)
    model.to(device)
    # training-only weights beside the model (models.adversarial): the checkpoint and fingerprint never see them
    adversary = None
    if cfg.adversarial_weight:
        adversary = AdversarialPrior(score_bits(model_config), widths=member_widths(model_config)).to(device)
    matcher = None
    if cfg.feature_matching_weight:
        dim = model_config.output_dim or model_config.input_dim
        matcher = FeatureMatching(dim, model_config.recon, seed=cfg.seed).to(device)
    params = [*model.parameters(), *(p for m in (adversary, matcher) if m is not None for p in m.parameters())]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    warmup = max(cfg.warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    rng = np.random.default_rng(cfg.seed + 1)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / cfg.batch_size))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    every = max(1, math.ceil(EVAL_STEPS / steps_per_epoch)) if probe is not None else 1  # epochs per validation
    history: list[dict[str, float]] = []
    best, best_state, best_epoch, stale, stopped, kept = -math.inf, None, 0, 0, "budget", None
    best_loss, loss_stale = math.inf, 0
    t0 = time.perf_counter()
    LOG.info(
        "training %s on %d items (%d val) on %s: up to %d epochs of %d steps, validated by the %s every %d",
        model_config.bottleneck,
        len(train_idx),
        len(val_idx),
        device,
        epochs,
        steps_per_epoch,
        "probe mAP" if probe is not None else "loss",
        every,
    )
    for epoch in range(1, epochs + 1):
        with progress(total=len(train_idx), desc=f"epoch {epoch}", enabled=cfg.progress) as bar:
            train_loss = _epoch(model, opt, sched, data, train_idx, cfg, device, rng, bar, adversary, matcher)
            val_loss = evaluate_loss(model, x, targets, val_idx, device) if len(val_idx) else train_loss
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
        row = {"epoch": epoch, "steps": epoch * steps_per_epoch, "train_loss": train_loss, "val_loss": val_loss}
        if epoch % every and epoch != epochs:
            history.append({**row, "seconds": time.perf_counter() - t0})
            continue
        loss_improved = val_loss < best_loss - 1e-4 * abs(best_loss if math.isfinite(best_loss) else 1.0)
        best_loss, loss_stale = (val_loss, 0) if loss_improved else (best_loss, loss_stale + 1)
        if probe is not None:
            score, stderr, _ = probe_score(model, x, probe, device, cfg.seed)
            row["probe_map"] = score
            improved = score > best + 1e-3
            best = max(best, score)
            # the latest validation within noise of the best is kept: when the probe levels off, longer training
            # wins the tie (measured in docs/presets.md)
            keep = score >= best - 2 * stderr
        else:
            improved = keep = loss_improved
        history.append({**row, "seconds": time.perf_counter() - t0})
        LOG.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in history[-1].items() if k != "epoch"))
        if keep:
            best_state, best_epoch, kept = copy.deepcopy(model.state_dict()), epoch, row.get("probe_map")
        stale = 0 if improved else stale + 1
        if cfg.max_seconds and time.perf_counter() - t0 > cfg.max_seconds:
            stopped = "time"
            break
        # the probe alone does not stop training while the loss still falls, so the tuned presets run as tuned
        # (measured in docs/presets.md)
        if min(stale, loss_stale) >= cfg.patience and epoch * steps_per_epoch >= cfg.min_steps:
            stopped = "patience"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    calibrate(model, x, device, cfg.seed)
    seconds = time.perf_counter() - t0
    steps = len(history) * steps_per_epoch
    LOG.info("trained %d epochs (%d steps) in %.1fs, best epoch %d", len(history), steps, seconds, best_epoch)
    return TrainResult(model, history, best_epoch, seconds, str(device), steps, kept, stopped)


def condition_rate(labels: np.ndarray) -> float:
    """The chance that a labelled training item's decoder is given its class in a step: 1 up to CONDITIONED_SHARE
    of the items (``labels`` int64, -1 unlabelled) labelled, less beyond, so that about that share is."""
    labelled = np.count_nonzero(labels >= 0)
    return min(1.0, CONDITIONED_SHARE * len(labels) / max(labelled, 1))


def _labelled_rows(labels: np.ndarray, train_idx: np.ndarray, model_config: ModelConfig) -> np.ndarray:
    """The labelled training rows, after checking ``labels`` against the model's classes."""
    if not model_config.n_classes or labels.max() >= model_config.n_classes or labels.min() < -1:
        raise ValueError(f"labels must be class indices below {model_config.n_classes} (-1 unlabelled)")
    rows = train_idx[labels[train_idx] >= 0]
    if not len(rows):
        raise ValueError("no labelled item is left outside the held-out split; label more items")
    return rows


def encode_labels(labels: Sequence[str | None], fraction: float = 1.0, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Item labels (None or "" unlabelled) -> int64 class indices (n,), -1 unlabelled, and the sorted class names.
    ``fraction`` < 1 keeps the labels of a seeded random share of the labelled items (benchmarks: few labels)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the label fraction must be in (0, 1], got {fraction}")
    known = np.array([label is not None and label != "" for label in labels], dtype=bool)
    if fraction < 1:
        rows = np.flatnonzero(known)
        keep = np.random.default_rng(seed).choice(rows, max(1, round(fraction * len(rows))), replace=False)
        known = np.zeros_like(known)
        known[keep] = True
    names = sorted({str(labels[i]) for i in np.flatnonzero(known)})
    if len(names) < 2:
        raise ValueError(f"training with labels needs at least two classes among the labelled items, got {len(names)}")
    index = {name: i for i, name in enumerate(names)}
    codes = np.array([index[str(lab)] if k else -1 for lab, k in zip(labels, known, strict=True)], dtype=np.int64)
    return codes, names


def fit_hasher(
    inputs: Sequence[Any] | np.ndarray,
    featurizer_kind: str,
    model_overrides: dict[str, Any] | None = None,
    cfg: TrainConfig | None = None,
    featurizer_options: dict[str, Any] | None = None,
    labels: Sequence[str | None] | None = None,
    judge_labels: Sequence[str | None] | None = None,
) -> tuple[Hasher, TrainResult]:
    """Raw training inputs -> a trained Hasher (featurizer fitted on the same inputs).

    ``labels`` (one per input, None or "" unlabelled): train with them (issue 20): a decoder conditioned on the
    class and a supervised contrastive term (``TrainConfig.label_weight``); see :func:`encode_labels`.
    Where 50 or more held-out items have a label, the safeguard compares the model with ITQ by those labels
    (``models.probe.label_probe``), and training with them also chooses its checkpoint by them.
    ``judge_labels`` (the same form, ignored when ``labels`` are given): the user's classes that only judge, never
    train: the safeguard's comparison is by them, the checkpoint is still chosen by the label-free probe (choosing
    it by 300 held-out labels gained nothing on 20 Newsgroups 3k: docs/robustness.md).

    The reconstruction loss follows the featurizer unless ``model_overrides`` names one. ``featurizer_options`` go
    to the featurizer's constructor (models.featurizers.make_featurizer), e.g. the sentence encoder's path.
    """
    cfg = cfg or TrainConfig()
    if cfg.full_vocab_neighbours and featurizer_kind != "text":
        raise ValueError(f"full_vocab_neighbours needs text inputs, not {featurizer_kind}")
    if cfg.target_features == "scattering" and featurizer_kind != "pixels":
        raise ValueError(f"target_features 'scattering' needs images (the pixels featurizer), not {featurizer_kind}")
    if cfg.distill_weight and cfg.distill_space == "input" and featurizer_kind not in ("dense", "sentence"):
        raise ValueError(f"distill_space 'input' needs dense or sentence vectors, not {featurizer_kind}")
    if cfg.feature_matching_weight and featurizer_kind != "pixels":
        raise ValueError(f"feature_matching_weight needs images (the pixels featurizer), not {featurizer_kind}")
    featurizer = make_featurizer(featurizer_kind, **(featurizer_options or {})).fit(inputs)
    x = featurizer.transform(inputs)
    overrides = {"recon": featurizer.recon, **(model_overrides or {})}
    label_codes, label_names = (None, []) if labels is None else encode_labels(labels)
    if label_codes is not None:
        if len(label_codes) != x.shape[0]:
            raise ValueError(f"{len(label_codes)} labels for {x.shape[0]} items")
        overrides["label_names"] = tuple(label_names)
    model_config = ModelConfig(input_dim=featurizer.dim, **overrides)
    train_idx, val_idx = split(x.shape[0], cfg.val_fraction, cfg.seed)
    space = neighbour_space(inputs, x, cfg)
    label_space = None  # what the report says of the classes in the neighbour space (models.label_space)
    if label_codes is not None and cfg.label_space and cfg.neighbours:
        space = similarity_space(x, cfg) if space is None else space
        space, label_space = class_space(space, label_codes, train_idx, cfg.label_space, cfg.seed, x)
    image_shape = getattr(featurizer, "shape", None) if featurizer_kind == "pixels" else None
    data = training_data(x, cfg, score_bits(model_config), len(member_widths(model_config)), space, image_shape)
    if cfg.target_features == "scattering":  # standardised coefficients: a gaussian decoder of their width
        assert data.targets is not None
        model_config = dataclasses.replace(model_config, output_dim=data.targets.shape[1], recon="gaussian")
    given = input_rows(featurizer, x)  # the vectors as the user gave them, where the featurizer standardised them
    probe = None
    if len(val_idx) >= PROBE_MIN_ITEMS:
        if cfg.probe == "neighbours":
            probe = neighbour_probe(given if given is not None else x, val_idx, train_idx, cfg.seed)
        else:
            # with the classes in the neighbour space, the probe's clusters are found there too: it then measures
            # what training aims at (a label-free probe of x marks a model down for following the classes)
            with_classes = label_space is not None and label_space["used"]
            probe = build_probe(space if with_classes else x, val_idx, train_idx, cfg.seed)
    judge = probe  # what the safeguard compares the model and ITQ by
    judges = label_codes if label_codes is not None else _judges(judge_labels, x.shape[0])
    by_labels = None if judges is None else label_probe(judges, val_idx, train_idx, cfg.seed)
    if by_labels is not None:  # the user's classes, where enough held-out items have one, judge instead
        judge = by_labels
        probe = by_labels if label_codes is not None else probe  # training with labels: the checkpoint too
    train_labels = label_codes
    if label_codes is not None and cfg.label_propagation and (label_codes < 0).any():
        graph = data.neighbours if data.neighbours is not None else nearest_neighbours(x, PROPAGATION_NEIGHBOURS)
        train_labels = propagate_labels(label_codes, graph, train_idx, cfg.label_propagation, cfg.seed)
    data = dataclasses.replace(
        data, labels=label_codes, label_targets=train_labels, similarity=_distill_rows(given, cfg)
    )
    result = train(model_config, cfg, *_train_args(data), probe=probe, **_train_kwargs(data))
    readout_labels, fisher = _fisher_readout(result.model, data, cfg)
    model, verdict = result.model, None
    if cfg.safeguard and judge is not None:
        result, verdict = _safeguard(model_config, cfg, data, probe, judge, result, featurizer.recon, readout_labels)
        model = verdict.chosen.model
    report = training_report(result, x, len(val_idx), verdict, cfg, probe.kind if probe is not None else None)
    if label_codes is not None:
        report["labels"] = {
            "labelled": int((label_codes >= 0).sum()),
            "propagated": int((train_labels >= 0).sum() - (label_codes >= 0).sum()),
            "classes": len(label_names),
            "label_space": label_space,  # None: not tried (off, or a preset without neighbours)
        }
        if fisher is not None:
            report["labels"]["readout"] = fisher
    info = {"train_config": cfg.to_dict(), "train": _summary(result, x.shape[0]), "report": report}
    fp = compute_fingerprint(model, featurizer)
    return Hasher(model, featurizer, fp, torch.device(result.device), info), result


def can_judge(labels: Sequence[str | None]) -> bool:
    """Whether labels can judge a model (fit_hasher's judge_labels): two classes or more, and labels that repeat
    (``JUDGE_MIN_PER_CLASS`` labelled items a class on average; ids or free text are not classes)."""
    known = [str(label) for label in labels if label is not None and label != ""]
    classes = len(set(known))
    return classes >= 2 and len(known) >= JUDGE_MIN_PER_CLASS * classes


def _judges(labels: Sequence[str | None] | None, n: int) -> np.ndarray | None:
    """``fit_hasher``'s judge_labels as class indices (n,), -1 unlabelled; None when they cannot judge."""
    if labels is None:
        return None
    if len(labels) != n:
        raise ValueError(f"{len(labels)} judge labels for {n} items")
    return encode_labels(labels)[0] if can_judge(labels) else None


def _train_args(data: TrainData) -> tuple:
    return data.x, data.targets, data.neighbours, data.teacher, data.clusters


def _train_kwargs(data: TrainData) -> dict[str, Any]:
    return {"labels": data.labels, "label_targets": data.label_targets, "similarity": data.similarity}


def input_rows(featurizer: Any, x: Features) -> np.ndarray | None:
    """float32 (n, d): the vectors as given, undoing the dense (or sentence) featurizer's standardisation of ``x``;
    None for featurizers that do not standardise (text, pixels)."""
    mean, std = getattr(featurizer, "mean", None), getattr(featurizer, "std", None)
    if mean is None or std is None or sp.issparse(x):
        return None
    return (np.asarray(x, dtype=np.float32) * std + mean).astype(np.float32)


def _distill_rows(given: np.ndarray | None, cfg: TrainConfig) -> np.ndarray | None:
    """The rows whose cosine the distillation teacher uses (``TrainConfig.distill_space``): None for the features."""
    if not cfg.distill_weight or cfg.distill_space == "features":
        return None
    if given is None:
        raise ValueError("distill_space 'input' needs dense or sentence vectors")
    return given


def _fisher_readout(model: Model, data: TrainData, cfg: TrainConfig) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """``TrainConfig.fisher_readout`` for a model trained with labels: its itq read-out refitted along the classes
    on all items (models.probe.calibrate). Returns the labels the read-out is fitted with from now on (None: the
    plain read-out) and what the report says (None without labels or a read-out)."""
    if data.labels is None or model.readout is None:
        return None, None
    if not cfg.fisher_readout:
        return None, {"fisher": False}
    calibrate(model, data.x, device=resolve_device(cfg.device), seed=cfg.seed, labels=data.labels)
    fitted = bool(model.readout.fisher_fitted)
    if not fitted:
        LOG.warning(
            "the Fisher read-out needs %d labelled items a class on average: the plain itq read-out stays",
            FISHER_MIN_PER_CLASS,
        )
    return (data.labels if fitted else None), {"fisher": fitted}


def _safeguard(
    model_config: ModelConfig,
    cfg: TrainConfig,
    data: TrainData,
    probe: Probe | None,
    judge: Probe,
    result: TrainResult,
    recon: str,
    readout_labels: np.ndarray | None = None,
) -> tuple[TrainResult, Verdict]:
    """Compare with ITQ on the held-out items by ``judge`` (models.safeguard). When the model does not clearly win
    and was still improving when its steps ran out, train on once from its weights (validated by ``probe``, as the
    first round); then try its other read-out, then ITQ. ``readout_labels``: the labels the model's read-out is
    fitted with (:func:`_fisher_readout`), None for the plain one."""
    x, device = data.x, resolve_device(cfg.device)
    itq = fit_itq_candidate(x, model_config.n_bits, recon, judge, device, cfg.seed)
    model = assess("model", result.model, x, judge, device, cfg.seed, readout_labels)
    if itq is not None and not clearly_wins(model, itq) and _still_improving(result):
        LOG.warning(
            "the model does not clearly beat ITQ yet (%s %.3f against %.3f): training on",
            judge.signal,
            model.probe_map,
            itq.probe_map,
        )
        more = train(
            model_config,
            cfg,
            *_train_args(data),
            probe=probe,
            init=result.model.state_dict(),
            **_train_kwargs(data),
        )
        result = _joined(result, more)
        model = assess("model", result.model, x, judge, device, cfg.seed, readout_labels)
    alternative = None
    # another read-out can repair a collapse (models.safeguard.decide); a projecting read-out has no threshold twin
    if itq is not None and collapsed(model, itq) and not model_config.readout_from:
        other = "threshold" if model_config.readout == "itq" else "itq"
        alternative = assess(
            f"model, {other} read-out",
            with_readout(model.model, other, x, device, cfg.seed, readout_labels),
            x,
            judge,
            device,
            cfg.seed,
            readout_labels,
        )
    verdict = decide(model, itq, alternative)
    for warning in verdict.warnings:
        LOG.warning(warning)
    return result, verdict


def _still_improving(result: TrainResult) -> bool:
    """Training ran out of steps (not patience) with the probe's best in its second half. On R8 at 16 bits the probe
    peaked at epoch 25 of 60: a second round of 1,200 steps took 280 s and moved nothing."""
    scores = [(row["probe_map"], row["epoch"]) for row in result.history if "probe_map" in row]
    return result.stopped == "budget" and bool(scores) and max(scores)[1] > len(result.history) / 2


def _joined(first: TrainResult, more: TrainResult) -> TrainResult:
    """A second round of training after the first: its weights when it validated better, one history."""
    epochs, steps, seconds = len(first.history), first.steps, first.seconds
    history = first.history + [
        {**row, "epoch": row["epoch"] + epochs, "steps": row["steps"] + steps, "seconds": row["seconds"] + seconds}
        for row in more.history
    ]
    better = (more.probe_map or 0.0) > (first.probe_map or 0.0)
    model, best_epoch = (more.model, more.best_epoch + epochs) if better else (first.model, first.best_epoch)
    probe_map = more.probe_map if better else first.probe_map
    return TrainResult(
        model, history, best_epoch, seconds + more.seconds, first.device, steps + more.steps, probe_map, more.stopped
    )


def training_report(
    result: TrainResult,
    x: Features,
    held_out: int,
    verdict: Verdict | None,
    cfg: TrainConfig,
    probe_kind: str | None = None,
) -> dict[str, Any]:
    """What ``hamdex train`` prints at the end and the checkpoint keeps (``/info`` shows it): the schedule, the
    validation signal (``probe_kind`` "labels": the probe ranked by the user's classes, models.probe.label_probe),
    the shipped model's code health, the ITQ comparison and what the safeguard did."""
    if verdict is not None:
        health = verdict.chosen.health
        safeguard = verdict.report()
    else:
        model = result.model
        health = code_health(encode_rows(model, x, np.arange(x.shape[0]), resolve_device(cfg.device)))
        reason = "turned off" if not cfg.safeguard else f"under {PROBE_MIN_ITEMS} held-out items"
        safeguard = {"action": "unchecked", "reason": reason, "ok": True, "warnings": []}
    best = result.history[result.best_epoch - 1] if result.best_epoch else result.history[-1]
    return {
        "items": x.shape[0],
        "held_out": held_out,
        "steps": result.steps,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 2),
        "device": result.device,
        "stopped": result.stopped,
        "validation": {
            "signal": "loss" if result.probe_map is None else SIGNALS[probe_kind or "clusters"],
            "probe_map": None if result.probe_map is None else round(result.probe_map, 4),
            "val_loss": round(best["val_loss"], 4),
        },
        "code_health": {k: round(v, 4) for k, v in health.items()},
        "safeguard": safeguard,
    }


def neighbour_space(inputs: Sequence[Any] | np.ndarray, x: Features, cfg: TrainConfig) -> Features | None:
    """Where a text preset finds its neighbours: BM25 over the full vocabulary (with subject lines), and LSA rows of
    the features ``x`` beside it (``cfg.full_vocab_neighbours``, ``subject_weight``, ``lsa_neighbours``); None for
    the features themselves (:func:`training_data` whitens them with ``neighbour_whiten``)."""
    if not cfg.full_vocab_neighbours:
        return None
    space = text_neighbour_space(inputs, cfg.subject_weight)
    if cfg.lsa_neighbours:
        space = with_lsa(space, x, cfg.lsa_neighbours, weight=cfg.lsa_weight, seed=cfg.seed)
    return space


def training_data(
    x: Features,
    cfg: TrainConfig,
    n_bits: int,
    members: int = 1,
    space: Features | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> TrainData:
    """What the configured objectives need besides the features: neighbours, reconstruction targets, teacher bits
    and cluster pseudo-labels (one k-means per ensemble member, seeds ``seed``, ``seed + 1``, ...), all from the
    training items alone. ``space`` (n, d'): other features of the same items to find neighbours in (default:
    ``x``, PCA-whitened with ``neighbour_whiten``). ``image_shape``: what each row of pixels ``x`` is, for
    ``target_features="scattering"``."""
    recon = x  # what the targets are means of
    if cfg.target_features == "scattering":
        if image_shape is None or sp.issparse(x):
            raise ValueError("target_features 'scattering' needs dense pixel rows and their image shape")
        recon = scattering_targets(np.asarray(x), image_shape, progress=cfg.progress)
    if not cfg.neighbours:
        return TrainData(x, None if recon is x else recon)
    space = similarity_space(x, cfg) if space is None else space
    if space.shape[0] != x.shape[0]:
        raise ValueError(f"the neighbour space has {space.shape[0]} rows for {x.shape[0]} items")
    neighbours = nearest_neighbours(space, cfg.neighbours)
    teacher = clusters = None
    if cfg.teacher_weight or cfg.cluster_weight:
        k = cfg.graph_neighbours or cfg.neighbours
        graph = neighbours if k == cfg.neighbours else nearest_neighbours(space, k)
        if cfg.teacher_weight:
            teacher = spectral_teacher_bits(space, graph, n_bits, cfg.seed)
        if cfg.cluster_weight:
            clusters = np.stack(
                [cluster_labels(space, graph, cfg.n_clusters, seed=cfg.seed + m) for m in range(members)], axis=1
            )
    targets = neighbour_targets(recon, neighbours, cfg.neighbour_sim_power)
    positives = mutual_neighbours(neighbours) if cfg.mutual_positives else neighbours
    return TrainData(x, targets, positives, teacher, clusters)


def similarity_space(x: Features, cfg: TrainConfig) -> Features:
    """Where neighbours are found without another space: ``x``, PCA-whitened with ``cfg.neighbour_whiten``."""
    return whitened(x, cfg.neighbour_whiten) if cfg.neighbour_whiten else x


def _summary(result: TrainResult, n: int) -> dict[str, Any]:
    last = result.history[result.best_epoch - 1] if result.best_epoch else result.history[-1]
    return {
        "items": n,
        "steps": result.steps,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "val_loss": last["val_loss"],
        "seconds": round(result.seconds, 2),
        "device": result.device,
    }
