"""The retrieval-quality harness behind ``benchmarks/quality.py`` (issue 3): every hamdex bottleneck beside the
classic baselines, trained and scored in one process on the same data, features and queries.

Protocols (../shared/notes/benchmarks.md):

- ``20ng``: 20 Newsgroups "bydate"; TF-IDF over 10k words (featurizer ``text``); the train split is the database
  and the training set, test posts are the queries (all 7,532), relevant = same newsgroup. Headline metric
  precision@100, as in VDSH, NASH, AMMI and SNUH.
- ``fashion-mnist``: the 60k training images are the database and the training set (featurizer ``pixels``);
  1,000 class-balanced test images (seed 0) are the queries; relevant = same class. Headline metric mAP over the
  whole ranking, plus precision@1000.

Methods: ``hamdex`` is the project default for the featurizer kind (``models.presets`` over ``ModelConfig``);
every other bottleneck of ``models.bottlenecks.BOTTLENECKS`` runs as ``hamdex_<name>`` with the same preset; the
variants of ``OBJECTIVE_VARIANTS`` (``hamdex_adversarial``, ``hamdex_denoising``, ``hamdex_feature_matching``, the
last on images only) run on the preset only when ``methods`` names them; ``lsh``, ``lsh_centered``, ``pcah`` and
``itq`` are fitted on the default model's own input features; and ``float_cosine`` is exact cosine nearest
neighbours on those features, the reference any code is measured against.

Metrics per method (all in [0, 1] except ``train_seconds``): ``p@100`` (ties broken by a fixed-seed order),
``p@100_tie_aware``, ``map``, ``p_r2`` (precision within Hamming radius 2), and the code health of the database
codes (``bit_balance``, ``mean_abs_bit_correlation``, ``distinct_code_fraction``); ``train_seconds`` is the fit
time (featurizer, neighbour targets and training for the models; 0 for the training-free ``lsh`` and
``float_cosine``). ``float_cosine`` has precision only: mAP, radius precision and code health do not apply to
float vectors, and its ranking has no Hamming ties, so those keys are omitted rather than filled with NaN.

Quick mode (CI) keeps the models and objectives and shrinks the data: a seeded subset of the training set and
queries, fewer epochs, and batches of 64 so that the small training set still gets ~40 optimizer steps an epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from hamdex.evaluation.baselines import make_baseline
from hamdex.evaluation.metrics import (
    DistanceHistograms,
    code_health,
    float_precision_at_k,
    hamming_distance_histograms,
    mean_average_precision,
    precision_at_k,
    precision_at_k_tie_aware,
    precision_at_ks,
    precision_within_radius,
)
from hamdex.models import data
from hamdex.models.autoencoder import ModelConfig
from hamdex.models.bottlenecks import BOTTLENECKS
from hamdex.models.featurizers import Features
from hamdex.models.hasher import Hasher
from hamdex.models.presets import preset
from hamdex.models.train import TrainConfig, fit_hasher

from hamdex.progress import progress as progress_bar

LOG = logging.getLogger(__name__)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
K = 100  # the k of the headline precision@k
CURVE_KS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)  # precision@k plot
BASELINES = ("lsh", "lsh_centered", "pcah", "itq")
TRAINING_FREE = ("lsh",)  # random hyperplanes see no data; lsh_centered at least fits a mean
SCORE_KEYS = (
    "p@100",
    "p@100_tie_aware",
    "map",
    "p_r2",
    "bit_balance",
    "mean_abs_bit_correlation",
    "distinct_code_fraction",
)  # every hashing method reports these, plus train_seconds (and a dataset's extra precision@k)

# Published precision@100 on 20 Newsgroups, unsupervised, as listed in ../shared/notes/benchmarks.md (which says the
# NASH/LSH rows are as recalled from the paper). Their split is VDSH's 11,016 / 3,668, ours the bydate 11,314 / 7,532.
PUBLISHED_20NG: dict[str, tuple[dict[int, float], str]] = {
    "LSH": ({16: 0.0597, 32: 0.0666, 64: 0.0770, 128: 0.0949}, "NASH paper, Table 1"),
    "NASH": ({16: 0.5108, 32: 0.5671, 64: 0.5071, 128: 0.4664}, "Shen et al., ACL 2018, Table 1"),
    "NASH-DN": ({16: 0.5310, 32: 0.6225, 64: 0.5377, 128: 0.4945}, "Shen et al., ACL 2018, Table 1"),
    "AMMI": ({16: 0.5518, 32: 0.5956, 64: 0.6398, 128: 0.6618}, "Stratos & Wiseman 2020 (karlstratos/ammi)"),
    "SNUH": ({16: 0.5459, 32: 0.6249, 64: 0.6513, 128: 0.6751}, "re-run in mindspore-ai/models research/nlp/snuh"),
}

Metrics = dict[str, float]
Results = dict[str, dict[int, dict[str, Metrics]]]  # {dataset: {bits: {method: {metric: value}}}}


class Split(NamedTuple):
    """A benchmark's database (= training set) and queries, labels as numpy arrays."""

    db_inputs: list[str] | np.ndarray
    db_labels: np.ndarray
    q_inputs: list[str] | np.ndarray
    q_labels: np.ndarray


@dataclass(frozen=True)
class Scale:
    """How much of a benchmark to run; None means all (data) or the preset's value (training)."""

    n_train: int | None = None  # database = training items, a seeded random subset
    n_queries: int | None = None  # queries, a seeded subset (class-balanced where the dataset says so)
    epochs: int | None = None
    batch_size: int | None = None

    def train_overrides(self) -> dict[str, int]:
        return {k: v for k, v in (("epochs", self.epochs), ("batch_size", self.batch_size)) if v is not None}


@dataclass(frozen=True)
class Dataset:
    name: str
    featurizer: str  # featurizer kind, also the preset
    load: Callable[[Scale, int], Split]  # (scale, seed) -> split
    default_bits: tuple[int, ...]
    full: Scale
    quick: Scale
    extra_ks: tuple[int, ...] = ()  # precision@k reported besides p@100


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def random_subset(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted int64 indices of a seeded random subset of size n (all when n is None or >= n_total)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def class_balanced(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of n items, n // n_classes drawn at random from each class (all items when n is None)."""
    if n is None:
        return np.arange(len(labels))
    classes = np.unique(labels)
    per_class, rng = n // len(classes), np.random.default_rng(seed)
    picks = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(f"class {label!r} has {len(members)} items, fewer than the {per_class} asked for")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def _take(block: data.Block, idx: np.ndarray) -> tuple[list[str] | np.ndarray, np.ndarray]:
    inputs = block.inputs[idx] if isinstance(block.inputs, np.ndarray) else [block.inputs[i] for i in idx]
    return inputs, np.asarray(block.labels, dtype=object)[idx].astype(str)


def load_20ng(scale: Scale, seed: int = 0) -> Split:
    train, test = data.load_demo_corpus("train"), data.load_demo_corpus("test")
    db = _take(train, random_subset(len(train), scale.n_train, seed))
    queries = _take(test, random_subset(len(test), scale.n_queries, seed))
    return Split(*db, *queries)


def load_fashion_mnist(scale: Scale, seed: int = 0, root: Path = FASHION_DIR) -> Split:
    train = data.read_all(root / "train-images-idx3-ubyte.gz")
    test = data.read_all(root / "t10k-images-idx3-ubyte.gz")
    db = _take(train, random_subset(len(train), scale.n_train, seed))
    queries = _take(test, class_balanced(np.asarray(test.labels), scale.n_queries, seed))
    return Split(*db, *queries)


DATASETS: dict[str, Dataset] = {
    "20ng": Dataset(
        "20ng",
        "text",
        load_20ng,
        default_bits=(16, 32, 64, 128),
        full=Scale(),
        quick=Scale(n_train=3000, n_queries=300, epochs=10, batch_size=64),
    ),
    "fashion-mnist": Dataset(
        "fashion-mnist",
        "pixels",
        load_fashion_mnist,
        default_bits=(16, 32, 64),  # the widths of the published image-hashing tables
        full=Scale(n_queries=1000),
        quick=Scale(n_train=3000, n_queries=200, epochs=10, batch_size=64),
        extra_ks=(1000,),
    ),
}


# ----------------------------------------------------------------------------------------------------
# Methods and their metrics
# ----------------------------------------------------------------------------------------------------


# methods that add model or training options to the default model's preset, run only when asked for by name
OBJECTIVE_VARIANTS: dict[str, dict[str, float]] = {
    "hamdex_adversarial": {"adversarial_weight": 1.0},  # the adversarial prior on the codes (models.adversarial)
    "hamdex_denoising": {"input_dropout": 0.3},  # a denoising AE, as benchmarks/denoise.py's dae
    # VAE-GAN's feature-matching reconstruction term (models.feature_matching), images only; 0.01: the best weight
    # on Fashion-MNIST 5k (0.1 cost retrieval; docs/quality.md)
    "hamdex_feature_matching": {"feature_matching_weight": 0.01},
}
IMAGE_VARIANTS = frozenset({"hamdex_feature_matching"})  # skipped on the other featurizers' data sets


def objective_variants(featurizer: str) -> list[str]:
    """The names of ``OBJECTIVE_VARIANTS`` that apply to a featurizer's data (``IMAGE_VARIANTS``: pixels only)."""
    return [name for name in OBJECTIVE_VARIANTS if featurizer == "pixels" or name not in IMAGE_VARIANTS]


def model_variants(featurizer: str) -> dict[str, str]:
    """{method name: bottleneck}: the default first as ``hamdex``, then ``hamdex_<name>`` for every other one."""
    model_over, _ = preset(featurizer)
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    default = model_over.get("bottleneck", defaults["bottleneck"])
    others = {f"hamdex_{name}": name for name in BOTTLENECKS if name != default}
    return {"hamdex": default, **others}


def train_model(
    inputs: list[str] | np.ndarray,
    featurizer: str,
    bottleneck: str,
    n_bits: int,
    scale: Scale,
    seed: int = 0,
    train_options: dict | None = None,
) -> tuple[Hasher, float]:
    """The preset model for ``featurizer`` with this bottleneck and width (and ``train_options`` over the preset's
    settings: ModelConfig's names to the model, the others to training); returns it and its fit seconds."""
    model_over, train_over = preset(featurizer, n_bits, n_items=len(inputs))
    model_over.update(bottleneck=bottleneck, n_bits=n_bits)
    train_over.update(scale.train_overrides())
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    for key, value in (train_options or {}).items():
        (model_over if key in model_keys else train_over)[key] = value
    if scale.epochs is not None:  # a scale's epoch count is the budget (quick mode), as --epochs is for the CLI
        train_over["min_steps"] = 0
    cfg = TrainConfig(progress=False, seed=seed, safeguard=True, **train_over)  # as hamdex train
    start = time.perf_counter()
    hasher, result = fit_hasher(inputs, featurizer, model_over, cfg)
    seconds = time.perf_counter() - start
    LOG.info(
        "%s %d bits: trained on %d items in %.1fs (%d epochs, best %d, %s)",
        bottleneck,
        n_bits,
        len(inputs),
        seconds,
        len(result.history),
        result.best_epoch,
        result.device,
    )
    return hasher, seconds


def code_metrics(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    extra_ks: Sequence[int] = (),
    k: int = K,
) -> Metrics:
    """Every score of one hashing method's packed codes (SCORE_KEYS, plus ``p@<k>`` for each extra k)."""
    scores = {
        f"p@{k}": precision_at_k(q_codes, db_codes, q_labels, db_labels, k=k),
        f"p@{k}_tie_aware": precision_at_k_tie_aware(q_codes, db_codes, q_labels, db_labels, k=k),
        "map": mean_average_precision(q_codes, db_codes, q_labels, db_labels),
        "p_r2": precision_within_radius(q_codes, db_codes, q_labels, db_labels, radius=2),
        **code_health(db_codes),
    }
    for extra in extra_ks:
        scores[f"p@{extra}"] = precision_at_k(q_codes, db_codes, q_labels, db_labels, k=extra)
    return scores


def float_metrics(
    q_feats: Features, db_feats: Features, q_labels: np.ndarray, db_labels: np.ndarray, extra_ks: Sequence[int] = ()
) -> Metrics:
    """Exact cosine precision@k on the features: the reference row (precision only, see the module doc)."""
    scores = {"p@100": float_precision_at_k(q_feats, db_feats, q_labels, db_labels, k=K)}
    for extra in extra_ks:
        scores[f"p@{extra}"] = float_precision_at_k(q_feats, db_feats, q_labels, db_labels, k=extra)
    return {**scores, "train_seconds": 0.0}


class _Codes(NamedTuple):
    q: np.ndarray  # uint8 (n_q, n_bits // 8)
    db: np.ndarray  # uint8 (n_db, n_bits // 8)
    train_seconds: float


def baseline_codes(name: str, n_bits: int, q_feats: Features, db_feats: Features) -> _Codes:
    start = time.perf_counter()
    method = make_baseline(name, n_bits).fit(db_feats)
    seconds = 0.0 if name in TRAINING_FREE else time.perf_counter() - start
    return _Codes(method.encode(q_feats), method.encode(db_feats), seconds)


# ----------------------------------------------------------------------------------------------------
# One dataset, all widths
# ----------------------------------------------------------------------------------------------------


@dataclass
class DatasetRun:
    """What one dataset's run produces: the scores, and the plot data at one width."""

    results: dict[int, dict[str, Metrics]]
    curve_bits: int
    curves: dict[str, dict[int, float]]  # {method: {k: precision@k}} at curve_bits
    histograms: DistanceHistograms | None  # the default model's, at curve_bits


def run_dataset(
    dataset: Dataset,
    bits: Sequence[int],
    quick: bool = False,
    methods: Iterable[str] | None = None,
    progress: bool = True,
    seed: int = 0,
) -> DatasetRun:
    """Train and score every method at every width. ``methods`` limits the hamdex variants run (the baselines and
    the float reference always run); the default model ``hamdex`` is always trained, as the baselines use its
    features."""
    scale = dataset.quick if quick else dataset.full
    split = dataset.load(scale, seed)
    LOG.info("%s: %d database items, %d queries", dataset.name, len(split.db_labels), len(split.q_labels))
    variants = model_variants(dataset.featurizer)
    if methods is not None:
        wanted = set(methods) | {"hamdex"}
        objectives = {name: variants["hamdex"] for name in objective_variants(dataset.featurizer) if name in wanted}
        variants = {name: b for name, b in variants.items() if name in wanted} | objectives
    curve_bits = 32 if 32 in bits else bits[0]
    out = DatasetRun({}, curve_bits, {}, None)
    floats: Metrics | None = None
    steps = len(bits) * (len(variants) + len(BASELINES) + 1)
    with progress_bar(total=steps, desc=dataset.name, unit="method", enabled=progress) as bar:
        for n_bits in bits:
            rows: dict[str, Metrics] = {}
            q_feats: Features | None = None
            db_feats: Features | None = None
            for name, bottleneck in variants.items():
                bar.set_postfix_str(f"{n_bits} bits {name}")
                options = OBJECTIVE_VARIANTS.get(name)
                hasher, seconds = train_model(
                    split.db_inputs, dataset.featurizer, bottleneck, n_bits, scale, seed, options
                )
                q_x, db_x = hasher.features(split.q_inputs), hasher.features(split.db_inputs)
                if name == "hamdex":
                    q_feats, db_feats = q_x, db_x  # what the baselines and the float reference see
                codes = _Codes(hasher.encode_features(q_x).codes, hasher.encode_features(db_x).codes, seconds)
                rows[name] = _score(name, codes, split, dataset, n_bits, out)
                bar.update()
            assert q_feats is not None and db_feats is not None  # "hamdex" always runs, and first
            for name in BASELINES:
                bar.set_postfix_str(f"{n_bits} bits {name}")
                rows[name] = _score(name, baseline_codes(name, n_bits, q_feats, db_feats), split, dataset, n_bits, out)
                bar.update()
            if floats is None:  # does not depend on the width
                floats = float_metrics(q_feats, db_feats, split.q_labels, split.db_labels, dataset.extra_ks)
            rows["float_cosine"] = dict(floats)
            bar.update()
            out.results[n_bits] = rows
            LOG.info("%s %d bits: %s", dataset.name, n_bits, _summary(rows))
    return out


def _score(name: str, codes: _Codes, split: Split, dataset: Dataset, n_bits: int, out: DatasetRun) -> Metrics:
    """The method's metrics; at the plot width also its precision@k curve (and the default model's histograms)."""
    scores = code_metrics(codes.q, codes.db, split.q_labels, split.db_labels, dataset.extra_ks)
    if n_bits == out.curve_bits:
        ks = [k for k in CURVE_KS if k <= len(codes.db)]
        out.curves[name] = precision_at_ks(codes.q, codes.db, split.q_labels, split.db_labels, ks=ks)
        if name == "hamdex":
            out.histograms = hamming_distance_histograms(codes.q, codes.db, split.q_labels, split.db_labels, n_bits)
    return {**scores, "train_seconds": codes.train_seconds}


def run_benchmarks(
    names: Sequence[str],
    bits: Sequence[int] | None,
    quick: bool,
    plots_dir: Path | None,
    progress: bool = True,
    methods: Iterable[str] | None = None,
) -> Results:
    """Every named dataset at ``bits`` (None: 32 in quick mode, else the dataset's default widths), with plots."""
    results: Results = {}
    for name in names:
        dataset = DATASETS[name]
        widths = list(bits) if bits else ([32] if quick else list(dataset.default_bits))
        run = run_dataset(dataset, widths, quick=quick, methods=methods, progress=progress)
        results[name] = run.results
        if plots_dir is not None:
            for path in write_plots(name, run, plots_dir):
                LOG.info("wrote %s", path)
    return results


def _summary(rows: dict[str, Metrics]) -> str:
    return ", ".join(f"{name} {m['p@100']:.3f}" for name, m in rows.items())


def write_plots(dataset: str, run: DatasetRun, plots_dir: Path) -> list[Path]:
    """The three PNGs of one dataset's run; imported lazily so the harness works without a display stack."""
    from hamdex.evaluation import plots

    b = run.curve_bits
    paths = [
        plots.plot_precision_vs_bits({dataset: run.results}, dataset, plots_dir / f"{dataset}_precision_vs_bits.png"),
        plots.plot_precision_vs_k(
            run.curves, plots_dir / f"{dataset}_precision_vs_k_{b}bits.png", f"{dataset}: precision@k at {b} bits"
        ),
    ]
    if run.histograms is not None:
        path = plots_dir / f"{dataset}_hamming_{b}bits.png"
        title = f"{dataset}: hamdex Hamming distances at {b} bits"
        paths.append(plots.plot_distance_histograms(run.histograms, b, path, title))
    return paths


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------

TABLE_COLUMNS = (
    ("p@100", "P@100"),
    ("p@100_tie_aware", "P@100 tie-aware"),
    ("map", "mAP"),
    ("p_r2", "P(r<=2)"),
    ("distinct_code_fraction", "distinct codes"),
    ("train_seconds", "train s"),
)


def format_table(results: Results) -> str:
    """One markdown table per dataset; a dash where a metric does not apply (e.g. float_cosine's mAP)."""
    parts = []
    for dataset, by_bits in results.items():
        extra = sorted({key for rows in by_bits.values() for m in rows.values() for key in m} - _known_keys())
        columns = [*TABLE_COLUMNS[:3], *((key, key.upper()) for key in extra), *TABLE_COLUMNS[3:]]
        lines = [
            f"### {dataset}",
            "",
            "| bits | method | " + " | ".join(title for _, title in columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for n_bits, rows in by_bits.items():
            for method, m in rows.items():
                cells = [_cell(key, m.get(key)) for key, _ in columns]
                lines.append(f"| {n_bits} | {method} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _known_keys() -> set[str]:
    return {*SCORE_KEYS, "train_seconds"}


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if key == "train_seconds" else f"{value:.4f}"


def format_published(by_bits: dict[int, dict[str, Metrics]], quick: bool = False) -> str:
    """20NG precision@100 of this run's hamdex, ITQ and LSH beside the published table (widths of this run)."""
    widths = [b for b in by_bits if b in next(iter(PUBLISHED_20NG.values()))[0]]
    if not widths:
        return ""
    note = " (quick mode: a subset, not comparable)" if quick else ""
    lines = [
        f"### 20ng precision@100: published (VDSH split) beside this run (bydate split){note}",
        "",
        "| method | " + " | ".join(str(b) for b in widths) + " | source |",
        "|---|" + "---|" * (len(widths) + 1),
    ]
    for method, (values, source) in PUBLISHED_20NG.items():
        lines.append(f"| {method} | " + " | ".join(f"{values[b]:.4f}" for b in widths) + f" | {source} |")
    for method in ("hamdex", "itq", "lsh"):
        cells = [f"{by_bits[b][method]['p@100']:.4f}" for b in widths]
        lines.append(f"| {method} (this run) | " + " | ".join(cells) + " | benchmarks/quality.py |")
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    """``{dataset: {bits: {method: {metric: value}}}}``; every value finite (json would write NaN otherwise)."""
    for dataset, by_bits in results.items():
        for n_bits, rows in by_bits.items():
            for method, m in rows.items():
                bad = [k for k, v in m.items() if not math.isfinite(v)]
                if bad:
                    raise ValueError(f"{dataset} {n_bits} bits {method}: non-finite {', '.join(bad)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
