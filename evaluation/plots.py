"""PNG plots of retrieval quality for ``benchmarks/quality.py``: precision against code length, precision against k,
and Hamming-distance histograms of relevant and irrelevant pairs (the diagnostic of Salakhutdinov & Hinton 2009
and VDSH: good codes put relevant pairs at small distances and irrelevant ones near ``n_bits / 2``).

Figures are built with the object-oriented API on the Agg canvas, never through ``pyplot``, so plotting changes
no global matplotlib state and needs no display. Every function writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from hamdex.evaluation.metrics import DistanceHistograms
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# The headline metric of each benchmark (../shared/notes/benchmarks.md); anything else plots precision@100.
HEADLINE_METRIC = {"20ng": "p@100", "fashion-mnist": "map"}
METRIC_LABELS = {"p@100": "precision@100", "p@100_tie_aware": "precision@100 (tie-aware)", "map": "mAP"}
FLOAT_REFERENCE = "float_cosine"
DPI = 120


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _style(method: str) -> dict[str, object]:
    """The project's models solid and bold, classic baselines thin, the float reference dashed black."""
    if method == FLOAT_REFERENCE:
        return {"color": "black", "linestyle": "--", "linewidth": 1.2}
    if method == "hamdex":
        return {"linewidth": 2.6, "marker": "o"}
    if method.startswith("hamdex"):
        return {"linewidth": 1.8, "marker": "o"}
    return {"linewidth": 1.0, "linestyle": ":", "marker": "s", "markersize": 4}


def plot_precision_vs_bits(
    results: Mapping[str, Mapping], dataset: str, path: str | Path, metric: str | None = None
) -> Path:
    """One line per method: ``metric`` (default: precision@100, mAP for fashion-mnist) against code length.

    ``results`` is the harness's ``{dataset: {bits: {method: {metric: value}}}}`` (bits as int or, read back
    from JSON, as str). Methods without the metric (e.g. ``float_cosine`` has no mAP) are left out.
    """
    metric = metric or HEADLINE_METRIC.get(dataset, "p@100")
    by_bits = sorted((int(bits), rows) for bits, rows in results[dataset].items())
    methods = list(dict.fromkeys(m for _, rows in by_bits for m in rows))
    fig, ax = _figure()
    for method in methods:
        points = [(bits, rows[method][metric]) for bits, rows in by_bits if metric in rows.get(method, {})]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        if method == FLOAT_REFERENCE:  # the same at every width: a reference line across the plot
            ax.axhline(ys[0], label=f"{method} (float, no bits)", **_style(method))
        else:
            ax.plot(xs, ys, label=method, **_style(method))
    ax.set_xscale("log", base=2)
    ax.set_xticks([bits for bits, _ in by_bits], labels=[str(bits) for bits, _ in by_bits])
    ax.set_xlabel("code length (bits)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{dataset}: {METRIC_LABELS.get(metric, metric)} against code length")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_precision_vs_k(curves: Mapping[str, Mapping[int, float]], path: str | Path, title: str | None = None) -> Path:
    """One line per method: precision@k against k (log scale), ``curves = {method: {k: precision}}`` as given by
    :func:`evaluation.precision_at_ks`."""
    fig, ax = _figure()
    for method, curve in curves.items():
        ks = sorted(int(k) for k in curve)
        ax.plot(ks, [curve[k] for k in ks], label=method, **_style(method))
    ax.set_xscale("log")
    ax.set_xlabel("k (items retrieved)")
    ax.set_ylabel("precision@k")
    ax.set_title(title or "precision@k against k")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_distance_histograms(
    hists: DistanceHistograms, n_bits: int, path: str | Path, title: str | None = None
) -> Path:
    """Share of relevant and of irrelevant query-database pairs at each Hamming distance 0..n_bits."""
    distances = np.arange(n_bits + 1)
    fig, ax = _figure()
    ax.bar(distances, hists.irrelevant, width=1.0, alpha=0.5, color="tab:gray", label="irrelevant pairs")
    ax.bar(distances, hists.relevant, width=1.0, alpha=0.6, color="tab:blue", label="relevant pairs (same label)")
    ax.set_xlim(-0.5, n_bits + 0.5)
    ax.set_xlabel("Hamming distance")
    ax.set_ylabel("share of pairs")
    ax.set_title(title or f"Hamming distances of relevant vs irrelevant pairs, {n_bits} bits")
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_ratio_bars(ratios: Mapping[str, float], path: str | Path, title: str, goal: float | None = None) -> Path:
    """One horizontal bar per cell: a method's score over a baseline's (1.0 = level), green where it reaches
    ``goal``, red below 1.0, grey in between; dashed lines at 1.0 and at the goal."""
    cells = list(ratios)
    values = np.array([ratios[c] for c in cells], dtype=float)
    colours = ["tab:green" if goal and v >= goal else "tab:red" if v < 1.0 else "tab:gray" for v in values]
    fig = Figure(figsize=(6.4, 1.2 + 0.22 * len(cells)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh(np.arange(len(cells)), values, color=colours)
    ax.set_yticks(np.arange(len(cells)), labels=cells, fontsize="small")
    ax.invert_yaxis()  # first cell on top, as in the table
    for x in (1.0, goal) if goal else (1.0,):
        ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
    ax.set_xlabel("ratio")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)
