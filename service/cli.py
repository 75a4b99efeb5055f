"""The ``hamdex`` command line: train, index, serve, search, eval.

Data arguments take a path in any format of models.data, or ``demo:train`` / ``demo:test`` for the bundled
20 Newsgroups corpus.
"""

from __future__ import annotations

import os

# OpenMP (FAISS, torch) threads spin-wait between parallel regions by default, burning the cores a server needs
# for requests; read once when the runtime loads, so set before anything imports FAISS or torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

import numpy as np
import typer
from hamdex.models import data
from hamdex.models.bottlenecks import BOTTLENECKS
from hamdex.service import cli_decode, cli_transfer
from hamdex.service.cli_info import info as info_cmd
from hamdex.service.cli_info import report_lines
from hamdex.service.cli_options import DEVICE_METAVAR, DeviceOpt, check_device
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from hamdex.service.bulk.job import Encoder, IndexSummary

app = typer.Typer(
    help="hamdex: semantic hashing retrieval.",
    # help text is plain: rich markup would eat "[env HAMDEX_MODEL_PATH]" and "pip install 'hamdex[milvus]'"
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold whole data sets
)
console = Console()

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Checkpoint directory.")]
CollectionOpt = Annotated[Path, typer.Option("--collection", "-c", help="Collection directory.")]
FEATURIZER_FOR_KIND = {"text": "text", "image": "pixels", "vector": "dense"}
FEATURIZERS = ("auto", "text", "pixels", "dense", "sentence")
BACKENDS = ("faiss", "milvus")
BASELINES = ("lsh", "lsh_centered", "pcah", "itq")  # hamdex.service.evaluate


# enumerated options are choices (the help lists them, a typo is refused); built from the lists they come from
Featurizer = Literal[FEATURIZERS]  # type: ignore[valid-type]
Bottleneck = Literal[BOTTLENECKS]  # type: ignore[valid-type]
Backend = Literal[BACKENDS]  # type: ignore[valid-type]
Readout = Literal["threshold", "itq"]
TargetFeatures = Literal["input", "scattering"]
ProbeKind = Literal["clusters", "neighbours"]


def _print_version(given: bool) -> None:
    if given:
        from hamdex import __version__

        typer.echo(f"hamdex {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # FAISS logs which SIMD build it loads ("Loading faiss with AVX2 support.") at INFO on every command
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if verbose else logging.WARNING)


ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        help="CSV without a header line: its column names, e.g. label (the other columns: the vector) or "
        "label,title,description (text)."
    ),
]


def _column_names(columns: str | None) -> list[str] | None:
    """--columns' comma-separated names of a header-less CSV's columns (models.data) -> a list."""
    return None if columns is None else [c.strip() for c in columns.split(",")]


def load_data(spec: str, limit: int | None = None, columns: str | None = None) -> data.Block:
    """A data argument -> one in-memory block (``demo:train`` / ``demo:test`` or a path); exits on bad data.
    ``columns``: as for :func:`_column_names`."""
    names = _column_names(columns)
    try:
        if spec.startswith("demo:"):
            block = data.load_demo_corpus(spec.split(":", 1)[1])
            return block if limit is None else block.head(limit)
        return data.read_all(spec, limit=limit, columns=names)
    except (data.DataFormatError, data.DataNotFoundError) as exc:
        raise _fail(str(exc)) from exc


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def _check_list(value: str, allowed: tuple[str, ...]) -> str:
    unknown = [v for v in value.split(",") if v and v not in allowed]
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return value


def _check_nested(value: str | None) -> str | None:
    """--nested: comma-separated integers (ModelConfig checks the widths themselves)."""
    if value is not None and not all(part.strip().isdigit() for part in value.split(",")):
        raise typer.BadParameter(f"comma-separated prefix widths in bits, e.g. 16,32; got {value!r}")
    return value


@app.command()
def train(
    data_spec: Annotated[str, typer.Argument(metavar="DATA", help="Training data (path or demo:train).")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")] = Path("var/model"),
    featurizer: Annotated[
        Featurizer,
        typer.Option(help="auto: from the data (text, images, vectors); sentence: texts by a neural encoder."),
    ] = "auto",
    encoder: Annotated[
        Path | None,
        typer.Option(help="--featurizer sentence: a local sentence-transformers directory (default all-MiniLM-L6-v2)."),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="--featurizer sentence: word pieces per text (default 128).")
    ] = None,
    image_shape: Annotated[
        str | None,
        typer.Option(help="Vector rows are flattened images of this shape, e.g. 28x28 (auto: square 0-255 rows)."),
    ] = None,
    bits: Annotated[int, typer.Option(help="Code length (multiple of 8).")] = 32,
    bottleneck: Annotated[
        Bottleneck,
        typer.Option(help="How the encoder's scores become bits (models.bottlenecks)."),
    ] = "bernoulli",
    kl_weight: Annotated[
        float | None, typer.Option(help="Weight of the bottleneck regulariser (default: the data type's preset).")
    ] = None,
    hidden: Annotated[
        str | None,
        typer.Option(help="Encoder hidden widths, comma-separated (default: the preset's; 512,512 where it has none)."),
    ] = None,
    members: Annotated[
        int | None,
        typer.Option(help="Independent autoencoders whose codes are concatenated (default: the preset's)."),
    ] = None,
    input_dropout: Annotated[
        float | None,
        typer.Option(
            help="Denoising: the share of input features dropped in training (default: the preset's: 0.3 for "
            "images, else 0)."
        ),
    ] = None,
    readout: Annotated[
        Readout | None,
        typer.Option(
            help="How scores become bits: threshold, or itq, a rotation fitted after training (default: the preset).",
        ),
    ] = None,
    readout_from: Annotated[
        int | None,
        typer.Option(
            help="Train this many bits and read the code's bits out of their scores by PCA and ITQ (default: the "
            "preset's: 32 for text and image codes under 32 bits; 0: off).",
        ),
    ] = None,
    nested: Annotated[
        str | None,
        typer.Option(
            callback=_check_nested,
            help="Nested codes: one model whose prefixes of these widths are codes too, e.g. 16,32 (docs/nested.md).",
        ),
    ] = None,
    neighbours: Annotated[
        int | None, typer.Option(help="Reconstruct each item's k nearest neighbours (default: the preset).")
    ] = None,
    contrastive_weight: Annotated[
        float | None, typer.Option(help="Weight of the neighbour-contrastive term (default: the preset).")
    ] = None,
    subject_weight: Annotated[
        float | None,
        typer.Option(help="Text: weight of the Subject: header beside the body when finding neighbours (0 = off)."),
    ] = None,
    target_features: Annotated[
        TargetFeatures | None,
        typer.Option(
            help="What the decoder reconstructs: input, or (images) scattering (default: the preset).",
        ),
    ] = None,
    adversarial_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Weight of an adversarial prior pushing the codes towards fair, independent bits (0: off)."
        ),
    ] = None,
    feature_matching_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Images: weight of VAE-GAN's feature matching, a discriminator's features of the reconstruction "
            "against the input's (0: off).",
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs (default: the preset, else 40).")] = None,
    min_steps: Annotated[
        int | None, typer.Option(help="Fewest optimizer steps, however few the items (default: the preset).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Items per step (default: the preset, else 256).")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate (default: the preset, else 5e-3).")] = None,
    seed: int = 0,
    device: DeviceOpt = "auto",
    limit: Annotated[int | None, typer.Option(help="Use only the first N items.")] = None,
    columns: ColumnsOpt = None,
    safeguard: Annotated[
        bool, typer.Option(help="Compare with ITQ on held-out items and fall back when the model does not win.")
    ] = True,
    strict: Annotated[
        bool, typer.Option(help="Exit 1 (after saving) when the training report warns, e.g. of an ITQ fallback.")
    ] = False,
    label_field: Annotated[
        str | None,
        typer.Option(help="Train with the labels in this field (e.g. label); items without one train unlabelled."),
    ] = None,
    label_fraction: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="--label-field: keep the labels of a seeded random share (benchmarks)."),
    ] = None,
    label_weight: Annotated[
        float | None, typer.Option(min=0.0, help="--label-field: weight of the supervised contrastive term (1.0).")
    ] = None,
    label_propagation: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="--label-field: share of the unlabelled items that take a class spread from labelled neighbours "
            "(default 0: off; docs/quality.md#labels).",
        ),
    ] = None,
    label_space: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="--label-field: length of the classes' block in the space where neighbours are found, relative to "
            "an item's own row (a classifier's probabilities; used where a check on hidden labelled items finds "
            "it helps; default 1.0, 0: off; docs/quality.md#labels).",
        ),
    ] = None,
    fisher_readout: Annotated[
        bool,
        typer.Option(
            "--fisher-readout",
            help="--label-field: read the bits out along the classes (Fisher directions, then ITQ) instead of the "
            "plain itq read-out (off: it won and lost by turns, docs/quality.md#labels).",
        ),
    ] = False,
    probe: Annotated[
        ProbeKind | None,
        typer.Option(
            help="What chooses the checkpoint and, without labels, judges the model against ITQ: clusters (the "
            "data's own topic clusters) or neighbours (each held-out item's exact nearest items: recall). Default: "
            "the preset's (neighbours for vectors and sentence models, clusters otherwise; docs/embeddings.md).",
        ),
    ] = None,
    judge_by_labels: Annotated[
        bool,
        typer.Option(
            help="When the items carry a label (and no --label-field trains with them), the held-out items' labels "
            "judge the model against ITQ; they neither train it nor choose its checkpoint (docs/robustness.md).",
        ),
    ] = True,
) -> None:
    """Train a hashing autoencoder and write a checkpoint; prints the training report (also kept in it)."""
    from hamdex.models import checkpoint, presets
    from hamdex.models.train import TrainConfig, fit_hasher

    block = _as_images(load_data(data_spec, limit, columns), featurizer, image_shape)
    kind = FEATURIZER_FOR_KIND[block.kind] if featurizer == "auto" else featurizer
    feat_options = _sentence_options(kind, block.kind, encoder, max_tokens, device)
    labels = _train_labels(block, label_field, label_fraction, seed)
    label_options = (label_weight, label_propagation, label_space)
    if (any(v is not None for v in label_options) or fisher_readout) and labels is None:
        raise _fail("--label-weight, --label-propagation, --label-space and --fisher-readout go with --label-field")
    judges = _judge_labels(block) if judge_by_labels and labels is None else None
    model_given = {
        "n_bits": bits,
        "members": members,
        "bottleneck": bottleneck,
        "input_dropout": input_dropout,
        "hidden": None if hidden is None else tuple(int(h) for h in hidden.split(",") if h),
        "kl_weight": kl_weight,
        "readout": readout,
        "nested": None if nested is None else tuple(int(w) for w in nested.split(",")),
        "readout_from": readout_from,
    }
    train_given = {
        "neighbours": neighbours,
        "contrastive_weight": contrastive_weight,
        "subject_weight": subject_weight,
        "target_features": target_features,
        "adversarial_weight": adversarial_weight,
        "feature_matching_weight": feature_matching_weight,
        "epochs": epochs,
        "min_steps": min_steps,
        "lr": lr,
        "batch_size": batch_size,
        "probe": probe,
    }
    if label_weight is not None:
        train_given["label_weight"] = label_weight
    if label_propagation is not None:
        train_given["label_propagation"] = label_propagation
    if label_space is not None:
        train_given["label_space"] = label_space
    if fisher_readout:
        train_given["fisher_readout"] = True
    try:
        model_over, train_over = presets.resolve(kind, len(block.ids), model_given, train_given)
        cfg = TrainConfig(seed=seed, device=device, safeguard=safeguard, **train_over)
        hasher, _ = fit_hasher(block.inputs, kind, model_over, cfg, feat_options, labels, judges)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    fp = checkpoint.save(out, hasher)
    report = hasher.info["report"]
    console.print(f"saved {out} (fingerprint {fp})")
    _print_report(report)
    if strict and report["safeguard"]["warnings"]:
        console.print("[red]--strict: exiting with status 1 because of the warning above[/red]")
        raise typer.Exit(1)


def _train_labels(block: data.Block, field: str | None, fraction: float | None, seed: int) -> list[str | None] | None:
    """``--label-field``: each item's label (None: unlabelled), the field read from the item's label or metadata;
    ``--label-fraction`` keeps a seeded share of them (models.train.encode_labels). Exits when they cannot train."""
    if field is None:
        if fraction is not None:
            raise _fail("--label-fraction goes with --label-field")
        return None
    from hamdex.models.train import encode_labels

    labels = _field_labels(block, field)
    if all(label is None or label == "" for label in labels):
        raise _fail(f"--label-field {field}: no item has a {field!r} field")
    try:
        codes, names = encode_labels(labels, 1.0 if fraction is None else fraction, seed)
    except ValueError as exc:
        raise _fail(f"--label-field {field}: {exc}") from exc
    return [names[c] if c >= 0 else None for c in codes]


def _field_labels(block: data.Block, field: str) -> list[str | None]:
    """Each item's label read from ``field``: the item's label, or one of its metadata fields (None: none)."""
    if field == "label":
        return list(block.labels)
    return [None if m.get(field) in (None, "") else str(m[field]) for m in block.metadata]


def _labelled_by(block: data.Block, field: str, spec: str) -> data.Block:
    """The block with each item's label read from ``field`` (the label, or a metadata field); exits, naming the
    file and the option, when an item has none (evaluation needs a label on every item)."""
    labels = _field_labels(block, field)
    missing = sum(label is None or label == "" for label in labels)
    if missing:
        others = sorted({key for m in block.metadata for key in m if key != field})[:8]
        raise _fail(
            escape(
                f"{spec}: {missing} of {len(labels)} items have no {field!r} field; evaluation needs a label on every "
                f"item (--label-field names the field; the items' other fields: {', '.join(others) or 'none'})"
            )
        )
    return data.Block(block.ids, block.inputs, labels, block.metadata, block.kind)


def _judge_labels(block: data.Block) -> list[str | None] | None:
    """The items' labels, to judge the model by (fit_hasher's judge_labels), saying so; None when they have none
    or cannot judge (models.train.can_judge)."""
    from hamdex.models.train import can_judge

    if not can_judge(block.labels):
        return None
    known = [label for label in block.labels if label is not None and label != ""]
    console.print(
        f"[yellow]note:[/yellow] {len(known)} items carry a label ({len(set(known))} classes): the held-out items' "
        "labels judge the model against ITQ and never train it (--label-field label trains with them; "
        "--no-judge-by-labels judges by the data's own clusters)"
    )
    return list(block.labels)


def _sentence_options(kind: str, data_kind: str, encoder: Path | None, max_tokens: int | None, device: str) -> dict:
    """The sentence featurizer's options (models.sentence); an error for them with another featurizer, or for
    sentence with data that is not text."""
    if kind != "sentence":
        given = [name for name, value in (("--encoder", encoder), ("--max-tokens", max_tokens)) if value is not None]
        if given:
            raise _fail(f"{' and '.join(given)} go with --featurizer sentence, not {kind}")
        return {}
    if data_kind != "text":
        raise _fail(f"--featurizer sentence embeds texts; this data holds {data_kind} items")
    options = {"encoder": encoder, "max_tokens": max_tokens, "device": device}
    return {k: v for k, v in options.items() if v is not None}


def _as_images(block: data.Block, featurizer: str, image_shape: str | None) -> data.Block:
    """Vector rows as images for the pixels featurizer: reshaped to ``--image-shape``, or with ``--featurizer auto``
    (or pixels) to the square shape they look like (models.featurizers.infer_image_shape), saying so."""
    if block.kind != "vector":
        if image_shape is not None:
            raise _fail(f"--image-shape reshapes vector rows; this data holds {block.kind} items")
        return block
    if image_shape is None and featurizer not in ("auto", "pixels"):
        return block
    from hamdex.models.featurizers import infer_image_shape

    width = block.inputs.shape[1]
    if image_shape is None:
        shape = infer_image_shape(block.inputs)
        if shape is None:
            return block
        console.print(
            f"[yellow]note:[/yellow] the {width} values of each row look like {shape[0]}x{shape[1]} grayscale images "
            "(integers 0-255), so they train the pixels featurizer as images; --featurizer dense trains them as plain "
            "vectors, --image-shape HxW gives another shape"
        )
    else:
        shape = _parse_shape(image_shape)
        if shape[0] * shape[1] != width:
            raise _fail(f"--image-shape {image_shape} holds {shape[0] * shape[1]} values, the rows have {width}")
    values = block.inputs
    if values.min() < 0 or values.max() > 255 or not np.array_equal(values, np.round(values)):
        raise _fail("images need integer pixel values in 0-255; these rows are vectors (--featurizer dense)")
    images = values.reshape(len(values), *shape).astype(np.uint8)  # (n, h, w)
    return data.Block(block.ids, images, block.labels, block.metadata, "image")


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise _fail(f"--image-shape must look like 28x28 (height x width), got {text!r}") from None
    if height < 1 or width < 1:
        raise _fail(f"--image-shape sides must be positive, got {text!r}")
    return height, width


def _print_report(report: dict) -> None:
    """The training report (models.train.training_report) as ``hamdex info`` shows it; its warnings in red."""
    lines = [line.removeprefix("  ") for line in report_lines(report)[1:]]  # without the "training report" heading
    for line in [f"trained {lines[0]}", *lines[1:]]:
        if line.startswith("WARNING: "):
            console.print(f"[bold red]WARNING:[/bold red] {escape(line.removeprefix('WARNING: '))}")
        else:
            console.print(escape(line))


@app.command("index")
def index_cmd(
    data_spec: Annotated[str, typer.Argument(metavar="DATA", help="Items to index (path or demo:train).")],
    model: ModelOpt = Path("var/model"),
    collection: Annotated[
        str | None,
        typer.Option("--collection", "-c", help="Collection directory [var/collection]; with --server: its name."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Items per encode/insert block.")] = 4096,
    limit: Annotated[int | None, typer.Option(help="Index only the first N items.")] = None,
    strict: Annotated[bool, typer.Option(help="Abort on the first bad row instead of skipping it.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write the summary (skipped rows by reason) as JSON.")] = None,
    restart: Annotated[bool, typer.Option(help="Start over instead of resuming or skipping a finished job.")] = False,
    device: DeviceOpt = "auto",
    server: Annotated[
        str | None, typer.Option(help="Send the items to a running server instead, e.g. http://127.0.0.1:8000")
    ] = None,
    name: Annotated[str | None, typer.Option(help="With --server: the collection (as --collection).")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="HAMDEX_API_KEY", help="With --server: a key with the write scope.")
    ] = None,
    ray: Annotated[
        bool, typer.Option("--ray", help="Encode on Ray: a local instance, or the cluster of --ray-address.")
    ] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="The Ray cluster to encode on (implies --ray), e.g. auto, ray://head:10001")
    ] = None,
    ray_actors: Annotated[
        int | None, typer.Option(help="With --ray: encoder actors (default: one per GPU, else one per CPU).")
    ] = None,
    backend: Annotated[
        Backend,
        typer.Option(help="A new collection's backend (milvus: pip install 'hamdex[milvus]')."),
    ] = "faiss",
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    columns: ColumnsOpt = None,
) -> None:
    """Bulk-index a file or folder into a collection (created when missing), or into a server's (--server).

    Bad rows are skipped and reported (--strict: abort). An interrupted run, rerun with the same arguments,
    resumes after the last committed block; a finished one does nothing unless --restart. With --ray the
    encoding runs on a Ray cluster and the codes are written here. Exits 2 when every row was skipped."""
    from hamdex.index.errors import CollectionError
    from hamdex.service.bulk import client as bulk_client
    from hamdex.service.bulk import job as bulk

    from hamdex.client import HamdexError

    ray = ray or ray_address is not None
    if ray and server:
        raise _fail("--ray and --server do not combine: the server encodes what it is sent")
    job = IndexJob(batch_size, limit, strict, restart, _column_names(columns))
    try:
        if server:
            if name is not None and collection is not None and name != collection:
                raise _fail(f"--name {name} and --collection {collection} name two collections")
            summary = _index_remote(data_spec, server, name or collection or "default", api_key, job)
        else:
            encoder = _ray_encoder(model, ray_address, device, ray_actors, batch_size) if ray else None
            path = Path(collection or "var/collection")
            summary = _index_local(data_spec, model, path, device, job, encoder, backend)
    except bulk.BadRowError as exc:
        raise _fail(escape(f"bad row ({exc.error_type}): {exc}; nothing of its block was written (--strict)")) from exc
    except (bulk_client.RemoteError, HamdexError) as exc:
        raise _fail(escape(f"the server refused: {exc}")) from exc
    except (data.DataFormatError, data.DataNotFoundError, CollectionError) as exc:
        raise _fail(escape(str(exc))) from exc
    except _ray_job_errors() as exc:
        raise _fail(escape(f"Ray: {exc}")) from exc
    if json_out:
        typer.echo(json.dumps(summary.to_json()))
    else:
        _print_summary(summary)
    if report:
        report.write_text(json.dumps(summary.to_json(), indent=2))
    # an empty collection would be served as if the job had worked (issue 22)
    if summary.already_done and summary.collection_count == 0:
        raise _fail("this job finished before, yet the collection is empty (were all its rows skipped?); --restart")
    if summary.items == 0 and summary.skipped and not summary.resumed_from and not summary.already_done:
        raise _fail(f"every row was skipped ({summary.skipped}); nothing was indexed")


class IndexJob(NamedTuple):
    """What ``hamdex index`` does with a file, wherever it is indexed (service.bulk.job.index_file's options)."""

    batch_size: int
    limit: int | None
    strict: bool
    restart: bool
    columns: list[str] | None  # a header-less CSV's column names


def _index_local(
    spec: str,
    model: Path,
    collection: Path,
    device: str,
    job: IndexJob,
    encoder: Encoder | None = None,
    backend: str = "faiss",
) -> IndexSummary:
    """The job in this process; ``encoder`` (--ray) replaces its encode stage. An existing collection keeps its
    backend; a new one gets ``backend``."""
    from hamdex.index import open_or_create_collection
    from hamdex.models import checkpoint
    from hamdex.service.bulk import job as bulk

    hasher = checkpoint.load(model, "cpu" if encoder else device)  # with --ray: for its fingerprint and width
    with open_or_create_collection(collection, hasher.n_bits, hasher.fingerprint, backend=backend) as coll:
        if spec.startswith("demo:"):
            block = load_data(spec, job.limit)
            blocks = bulk.split_block(block, job.batch_size)
            return bulk.index_blocks(blocks, hasher, coll, total=len(block.ids), strict=job.strict, encoder=encoder)
        return bulk.index_file(spec, hasher, coll, **job._asdict(), encoder=encoder)


def _ray_encoder(model: Path, address: str | None, device: str, actors: int | None, batch_size: int) -> Encoder:
    """The encode stage on Ray (``service.bulk.ray``), or exit with what to install when Ray is missing."""
    from hamdex.models import checkpoint

    try:
        from hamdex.service.bulk import ray as ray_job
    except ImportError as exc:
        if not (exc.name or "").startswith("ray"):
            raise
        raise _fail(escape("--ray needs Ray, which is not installed: pip install 'hamdex[ray]'")) from exc
    fingerprint = checkpoint.read_meta(model)["fingerprint"]
    return ray_job.RayEncoder(model, fingerprint, address=address, device=device, actors=actors, batch_size=batch_size)


def _ray_job_errors() -> tuple[type[Exception], ...]:
    """The --ray job's errors once service.bulk.ray was imported (an ``except`` clause evaluates this only when
    something was raised)."""
    module = sys.modules.get("hamdex.service.bulk.ray")
    return (module.RayJobError, ConnectionError) if module else ()


def _index_remote(spec: str, server: str, name: str, api_key: str | None, job: IndexJob) -> IndexSummary:
    """A file or folder through hamdex.Client (resumable, retried); the demo corpus as one unkeyed upload."""
    from hamdex.service.bulk import client as bulk_client
    from hamdex.service.bulk import job as bulk

    from hamdex.client import Client

    if spec.startswith("demo:"):
        block = load_data(spec, job.limit)
        blocks = bulk.split_block(block, job.batch_size)
        with bulk_client.BulkClient(server, name, api_key) as client:
            return bulk_client.index_blocks(blocks, client, total=len(block.ids), strict=job.strict)
    with Client(server, api_key=api_key, collection=name) as client:
        return client.bulk_upload(spec, progress=True, **job._asdict())


def _print_summary(summary: IndexSummary) -> None:
    if summary.already_done:
        console.print(
            f"this job already finished ({summary.resumed_from} items); nothing to do (--restart to index again); "
            f"collection holds {summary.collection_count}"
        )
    else:
        if summary.resumed_from:
            console.print(f"resumed after {summary.resumed_from} items done by an earlier run")
        console.print(
            f"indexed {summary.items} items in {summary.seconds:.1f}s ({summary.items_per_s:,.0f} items/s); "
            f"skipped {summary.skipped}; collection holds {summary.collection_count}"
            + ("" if summary.peak_rss_bytes is None else f"; peak memory {summary.peak_rss_bytes / 2**20:,.0f} MiB")
        )
    if summary.skipped:
        table = Table(title=f"{summary.skipped} rows skipped")
        for col in ("reason", "rows", "first examples"):
            table.add_column(col)
        for reason, count in summary.reasons.most_common():
            examples = "\n".join(escape(_example(e)) for e in summary.examples.get(reason, []))
            table.add_row(reason, str(count), examples)
        console.print(table)


def _example(example: dict) -> str:
    where = "" if example.get("row") is None else f"row {example['row']}"
    if example.get("id") is not None:
        where += f" (id {example['id']})"
    return f"{where}: {example['message']}" if where else example["message"]


@app.command()
def serve(
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Checkpoint [env HAMDEX_MODEL_PATH].")] = None,
    collection: Annotated[
        Path | None, typer.Option("--collection", "-c", help="Collection [env HAMDEX_COLLECTION_PATH].")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address [env HAMDEX_HOST, default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env HAMDEX_PORT, default 8000].")] = None,
    device: Annotated[
        str | None,
        typer.Option(callback=check_device, metavar=DEVICE_METAVAR, help="Device [env HAMDEX_DEVICE]."),
    ] = None,
    demo: Annotated[bool, typer.Option(help="Build the 20 Newsgroups demo model and collection if missing.")] = False,
    encode_only: Annotated[
        bool | None, typer.Option("--encode-only", help="Serve the model, no collection [env HAMDEX_ENCODE_ONLY].")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes, one model copy each; above 1 needs --encode-only.")
    ] = 1,
) -> None:
    """Serve the REST API. Options override the HAMDEX_* environment variables."""
    import uvicorn
    from hamdex.service.app import create_app
    from hamdex.service.auth import ApiKeys, KeyConfigError
    from hamdex.service.demo import ensure_demo
    from hamdex.service.logs import configure
    from hamdex.service.settings import Settings

    given = {"model_path": model, "collection_path": collection, "host": host, "port": port, "device": device}
    given["encode_only"] = encode_only
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    if workers > 1 and not settings.encode_only:
        raise _fail(
            f"--workers {workers} needs --encode-only: every worker process would open the collections, and a "
            "collection has one writer (its LOCK file), so all but one would fail; serve collections with one worker"
        )
    configure(settings.log_level, settings.json_logs)
    try:
        keys = ApiKeys.parse(settings.api_keys, settings.api_keys_file)
    except KeyConfigError as exc:
        raise _fail(str(exc)) from exc
    if not keys.enabled and not _is_loopback(settings.host) and not settings.allow_unauthenticated:
        raise _fail(
            f"refusing to serve on {settings.host} without API keys: set HAMDEX_API_KEYS or HAMDEX_API_KEYS_FILE, "
            "or HAMDEX_ALLOW_UNAUTHENTICATED=true to serve an open API on the network"
        )
    if demo:
        try:
            ensure_demo(settings.model_path, settings.collection_path, device=settings.device)
        except data.DataNotFoundError as exc:
            raise _fail(str(exc)) from exc
    if workers > 1:  # each worker builds its app from the environment: the options travel there
        os.environ.update({f"HAMDEX_{k.upper()}": str(v) for k, v in given.items() if v is not None})
    uvicorn.run(
        "hamdex.service.app:create_app" if workers > 1 else create_app(settings),
        factory=workers > 1,
        workers=workers,
        # uvicorn kills a worker that misses a 5 s ping: a starting one (torch's import) on busy cores does
        timeout_worker_healthcheck=60,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        loop=settings.event_loop,
        http=settings.http_parser,
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def search(
    query: Annotated[list[str], typer.Argument(help="Query texts (or item ids with --by-id, codes with --by-code).")],
    k: int = 10,
    radius: Annotated[int | None, typer.Option(help="Only hits within this Hamming distance.")] = None,
    by_id: Annotated[bool, typer.Option("--by-id", help="Queries are ids of stored items.")] = False,
    by_code: Annotated[bool, typer.Option("--by-code", help="Queries are hex or base64 codes.")] = False,
    url: Annotated[str | None, typer.Option(help="Query a running server instead, e.g. http://127.0.0.1:8000")] = None,
    model: ModelOpt = Path("var/model"),
    collection: Annotated[
        str | None,
        typer.Option("--collection", "-c", help="Collection directory [var/collection]; with --url: its name."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="HAMDEX_API_KEY", help="With --url: a key with the read scope.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the hits as JSON: a list per query.")] = False,
    rerank: Annotated[
        int | None, typer.Option(help="Rescore the Hamming top N; hits gain a score (docs/rerank.md).")
    ] = None,
    pool: Annotated[
        int | None, typer.Option(help="With --rerank: order the Hamming top P by per-bit scores first.")
    ] = None,
) -> None:
    """Find Hamming neighbours in a collection or on a running server."""
    if pool is not None and rerank is None:
        raise _fail("--pool needs --rerank (the candidates rescored by cosine)")
    field = "id" if by_id else "code" if by_code else "input"
    options = {"k": k, "radius": radius, "rerank": rerank, "pool": pool}
    if url:
        results = _search_remote(url, collection or "default", api_key, field, query, options)
    else:
        body = {"queries": [{field: q} for q in query], "k": k, "radius": radius}
        if rerank is not None:
            body["rerank"] = {"candidates": rerank, **({} if pool is None else {"pool": pool})}
        results = _search_local(model, Path(collection or "var/collection"), body)
    if json_out:
        typer.echo(json.dumps(results))
        return
    columns = ("id", "distance", *(("score",) if rerank is not None else ()), "metadata")
    for q, hits in zip(query, results, strict=True):
        table = Table(title=f"query: {q[:60]}")
        for col in columns:
            table.add_column(col)
        for hit in hits:
            score = () if rerank is None else (f"{hit['score']:.4f}" if hit.get("score") is not None else "-",)
            table.add_row(hit["id"], str(hit["distance"]), *score, json.dumps(hit.get("metadata"))[:80])
        console.print(table)


def _search_remote(url: str, name: str, api_key: str | None, field: str, queries: list[str], options: dict) -> list:
    from hamdex.client import Client, HamdexError

    source = {{"id": "ids", "code": "codes"}.get(field, "inputs"): queries}
    try:
        with Client(url, api_key=api_key, collection=name) as client:
            results = client.search(**source, **options)
    except HamdexError as exc:
        raise _fail(escape(str(exc))) from exc
    return [[hit.model_dump() for hit in hits] for hits in results]


def _search_local(model: Path, collection: Path, body: dict) -> list[list[dict]]:
    """Search the collection on disk through the app in-process, so the semantics equal the server's."""
    from fastapi.testclient import TestClient
    from hamdex.service.app import create_app, wait_ready
    from hamdex.service.settings import Settings

    with TestClient(create_app(Settings(model_path=model, collection_path=collection))) as client:
        wait_ready(client.app)  # the collection loads in the background
        return _post_search(client, body)


def _post_search(client, body: dict) -> list[list[dict]]:
    resp = client.post("/v1/search", json=body)
    if resp.status_code != 200:
        raise _fail(f"{resp.status_code} {resp.text}")
    return resp.json()["results"]


@app.command("eval")
def eval_cmd(
    model: ModelOpt = Path("var/model"),
    database: Annotated[str, typer.Option(help="Database items with labels (path or demo:train).")] = "demo:train",
    queries: Annotated[str, typer.Option(help="Query items with labels (path or demo:test).")] = "demo:test",
    k: int = 100,
    baselines: Annotated[
        str,
        typer.Option(callback=lambda v: _check_list(v, BASELINES), help=f"Comma-separated: {', '.join(BASELINES)}."),
    ] = "lsh,itq",
    max_queries: Annotated[int | None, typer.Option(help="Use only the first N queries.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the numbers to this file.")] = None,
    device: DeviceOpt = "auto",
    columns: ColumnsOpt = None,
    label_field: Annotated[
        str, typer.Option(help="The field or column that holds each item's label, e.g. 'Class Index'.")
    ] = "label",
) -> None:
    """Precision@k and mAP of the model beside baselines computed in the same run."""
    from hamdex.models import checkpoint
    from hamdex.service.evaluate import evaluate_hasher

    hasher = checkpoint.load(model, device)
    db, qs = load_data(database, columns=columns), load_data(queries, max_queries, columns)
    db, qs = _labelled_by(db, label_field, database), _labelled_by(qs, label_field, queries)
    rows = evaluate_hasher(hasher, db, qs, k=k, baselines=[b for b in baselines.split(",") if b])
    table = Table(title=f"{len(qs.ids)} queries, {len(db.ids)} database items, {hasher.n_bits} bits")
    columns = ("method", f"P@{k}", f"P@{k} tie-aware", "mAP", "P(r<=2)", "distinct", "bit bal.", "bit corr.")
    for col in (*columns, "seconds"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for name, m in rows.items():
        table.add_row(
            name,
            f"{m[f'p@{k}']:.4f}",
            f"{m[f'p@{k}_tie_aware']:.4f}",
            f"{m['map']:.4f}",
            f"{m['p_r2']:.4f}",
            f"{m['distinct_code_fraction']:.1%}",
            f"{m['bit_balance']:.3f}",
            f"{m['mean_abs_bit_correlation']:.3f}",
            f"{m['seconds']:.1f}",
        )
    console.print(table)
    console.print(
        "code health of the database codes: distinct = share of distinct codes; bit bal. = mean |share of 1s - 0.5|"
        " x 2 (0: balanced, 1: constant bits); bit corr. = mean |correlation| of bit pairs"
    )
    if json_out:
        json_out.write_text(json.dumps({"k": k, "n_bits": hasher.n_bits, "methods": rows}, indent=2))


app.command("info")(info_cmd)  # the model card (service.cli_info)
# the decoder's commands live beside this module (service.cli_decode)
app.command("reconstruct")(cli_decode.reconstruct)
app.command("generate")(cli_decode.generate_cmd)
# a collection's data in and out, and backups brought back (service.cli_transfer)
app.command("export")(cli_transfer.export_cmd)
app.command("import")(cli_transfer.import_cmd)
app.command("restore")(cli_transfer.restore_cmd)


if __name__ == "__main__":
    app()
