"""``hamdex info MODEL``: a checkpoint's model card (registered by service.cli), read from its metadata alone
(models.checkpoint.read_meta: no weights loaded, no torch) unless ``--verify`` recomputes the fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from hamdex.models import checkpoint

SECTIONS = ("model_config", "featurizer", "train_config", "report", "versions")


def info(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Checkpoint directory.")] = Path("var/model"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the card as one JSON object.")] = False,
    verify: Annotated[
        bool, typer.Option(help="Load the weights and check them against the stored fingerprint (needs torch).")
    ] = False,
) -> None:
    """Print a checkpoint's model card: config, featurizer, training report (validation, code health, safeguard),
    library versions and fingerprint."""
    try:
        meta = checkpoint.read_meta(model)
        if verify:
            checkpoint.load(model, "cpu")  # CheckpointError when the fingerprint does not match
    except checkpoint.CheckpointError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    card = model_card(model, meta)
    if verify:
        card["verified"] = True
    typer.echo(json.dumps(card, indent=2) if json_out else render(card))


def model_card(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata as a card: the featurizer's fitted arrays and vocabularies become their lengths."""
    featurizer = meta.get("featurizer", {})
    params = featurizer.get("params", {})
    card: dict[str, Any] = {
        "path": str(path),
        "fingerprint": meta["fingerprint"],
        "format_version": meta["format_version"],
        "created_at": meta.get("created_at"),
        "model_config": meta.get("model_config", {}),
        "featurizer": {
            "kind": featurizer.get("kind"),
            "params": {k: v for k, v in params.items() if not isinstance(v, list | dict)},
            "sizes": {k: len(v) for k, v in params.items() if isinstance(v, list | dict)},
        },
        "train_config": meta.get("train_config", {}),
        "report": meta.get("report"),
        "versions": meta.get("versions", {}),
    }
    return card


def render(card: dict[str, Any]) -> str:
    config, report = card["model_config"], card["report"]
    lines = [
        f"model {card['path']}",
        f"  fingerprint {card['fingerprint']}, format {card['format_version']}, created {card['created_at']}",
        f"  {config.get('n_bits')} bits, {config.get('bottleneck')} bottleneck, {config.get('readout')} readout, "
        f"{config.get('members')} member(s), {card['featurizer']['kind']} featurizer ({config.get('input_dim')} "
        "features)",
    ]
    if config.get("readout_from"):
        lines.append(f"  read out of {config['readout_from']} trained bits by PCA and ITQ")
    if config.get("nested"):
        lines.append(f"  nested codes: prefixes of {', '.join(str(w) for w in config['nested'])} bits are codes too")
    params = card["featurizer"]["params"]
    if "weights_sha256" in params:  # sentence: the encoder the features come from (models.sentence)
        lines.append(
            f"  encoder {params['encoder']} (version {params['encoder_version']}, weights sha256 "
            f"{params['weights_sha256'][:12]}, {params['max_tokens']} tokens)"
        )
    if report:
        lines += ["", *report_lines(report)]
    lines += ["", "model config", *_fields(config)]
    featurizer = card["featurizer"]
    lines += ["", f"featurizer {featurizer['kind']}", *_fields(featurizer["params"])]
    lines += [f"  {k}: {n:,} entries" for k, n in featurizer["sizes"].items()]
    if card["train_config"]:
        lines += ["", "train config", *_fields(card["train_config"])]
    lines += ["", "versions", "  " + ", ".join(f"{k} {v}" for k, v in card["versions"].items())]
    return "\n".join(lines)


def report_lines(report: dict[str, Any]) -> list[str]:
    """The training report (models.train.training_report) as service.cli prints it after training."""
    validation, health, guard = report["validation"], report["code_health"], report["safeguard"]
    value = validation["val_loss"] if validation["signal"] == "loss" else validation["probe_map"]
    lines = [
        "training report",
        f"  {report['steps']:,} steps ({report['epochs']} epochs, best {report['best_epoch']}) in "
        f"{report['seconds']:.1f}s on {report['device']}; {report['items']:,} items, {report['held_out']:,} held out"
        + (f"; stopped: {report['stopped']}" if report.get("stopped") else ""),
        f"  validation ({validation['signal']}): {value:.4f}",
        f"  code health: distinct codes {health['distinct_code_fraction']:.1%}, bit balance {health['bit_balance']:.3f}"
        f" (0 = balanced), mean |bit correlation| {health['mean_abs_bit_correlation']:.3f}",
    ]
    if "labels" in report:
        lines.append(f"  labels: {labels_line(report['labels'])}")
    candidates = guard.get("candidates", {})
    if "itq" in candidates:
        scores = ", ".join(f"{name} {c['probe_map']:.4f}" for name, c in candidates.items())
        judged_by = guard.get("judged_by", validation["signal"])  # checkpoints before 2026-12-07: the signal alone
        lines.append(f"  against ITQ on the same features ({judged_by} of held-out items): {scores}")
    lines.append(f"  safeguard: {guard['action']}" + (f" ({guard['reason']})" if guard.get("reason") else ""))
    lines += [f"  WARNING: {w}" for w in guard.get("warnings", [])]
    return lines


def _fields(values: dict[str, Any]) -> list[str]:
    return [f"  {k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]


def labels_line(labels: dict[str, Any]) -> str:
    """The labels part of a training report: how many items were labelled, how many took a class spread from
    labelled neighbours (models.propagate; reports before it have no count), how many classes, whether neighbours
    were found with the classes (models.label_space) and whether the bits were read out along the classes
    (``--fisher-readout``: models.train._fisher_readout)."""
    spread = f" (+{labels['propagated']:,} propagated)" if labels.get("propagated") else ""
    line = f"{labels['labelled']:,} labelled items{spread}, {labels['classes']} classes"
    if (labels.get("label_space") or {}).get("used"):
        line += "; neighbours found with the classes (a classifier's probabilities)"
    if labels.get("readout", {}).get("fisher"):
        line += "; read out along the classes (Fisher)"
    return line
