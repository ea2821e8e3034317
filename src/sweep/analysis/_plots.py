from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from sweep.analysis._tables import (
    aggregate,
    compression_ratio,
    layer_sparsity,
    pareto_front,
)

LABELS = {
    "acc_finetuned": "Test accuracy after finetuning",
    "acc_pruned": "Test accuracy right after pruning",
    "acc_dense": "Dense test accuracy",
    "sparsity": "Sparsity (share of prunable weights removed)",
    "amount": "Requested amount",
    "latency_ms": "Latency (ms per batch)",
    "flops": "FLOPs per sample",
    "params_nonzero": "Non-zero parameters",
    "loss_finetuned": "Test loss after finetuning",
}
_FRACTIONS = {"acc_finetuned", "acc_pruned", "acc_dense", "sparsity", "amount"}
_MARKERS = "osD^v<>Ph*X"


def tradeoff(
    df: pd.DataFrame,
    y: str = "acc_finetuned",
    *,
    x: str = "sparsity",
    by: str = "method",
    band: str = "std",
    compression: bool = False,
    dense: bool = True,
    title: str | None = None,
) -> Figure:
    """``y`` against sparsity (or amount) per ``by``: mean across seeds with a shaded band.

    Args:
        df: Rows of `sweep.load_results`; only complete trials are drawn.
        y: Metric on the vertical axis.
        x: ``sparsity`` (achieved) or ``amount`` (requested).
        by: One curve per value of this column.
        band: ``std`` or ``ci95`` across seeds.
        compression: Horizontal axis as compression ratio 1 / density on a log scale.
        dense: Draw the dense baseline's ``acc_dense`` as a dashed line (accuracy plots).
        title: Defaults to "<y> vs <x>: <model> on <dataset>".

    Returns:
        The figure (never shown).
    """
    points = aggregate(df, y, x=x, by=by, band=band)
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    colors = method_colors(points[by].unique())
    for i, (name, curve) in enumerate(points.groupby(by, sort=True)):
        xs = compression_ratio(curve[x]) if compression else curve[x]
        ax.plot(
            xs,
            curve[y],
            marker=_MARKERS[i % len(_MARKERS)],
            color=colors[name],
            label=name,
            markersize=5,
        )
        lo, hi = curve[f"{y}_lo"], curve[f"{y}_hi"]
        if y in _FRACTIONS:  # a spread is no reason to draw accuracies above 100%
            lo, hi = lo.clip(0, 1), hi.clip(0, 1)
        ax.fill_between(xs, lo, hi, color=colors[name], alpha=0.18, linewidth=0)
    if dense and y.startswith("acc") and "acc_dense" in df.columns:
        level = df.loc[df["status"] == "complete", "acc_dense"].mean()
        ax.axhline(
            level, color="0.3", linestyle="--", linewidth=1, label=f"dense baseline ({level:.1%})"
        )
    if compression:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.set_xlabel("Compression ratio (1 / density, log scale)")
    else:
        ax.set_xlabel(LABELS.get(x, x))
        _percent(ax.xaxis, x)
    ax.set_ylabel(LABELS.get(y, y))
    _percent(ax.yaxis, y)
    ax.grid(alpha=0.3)
    seeds = int(points["n"].max()) if len(points) else 0
    spread = "±1 std" if band == "std" else "95% CI"
    ax.legend(
        title=f"{by} (mean of {seeds} seed{'s' * (seeds != 1)}, band {spread})",
        fontsize=8,
        title_fontsize=8,
    )
    against = "compression ratio" if compression else x
    ax.set_title(title or f"{LABELS.get(y, y).split(' (')[0]} vs {against}{_subject(df)}")
    return fig


def plot_pareto(
    df: pd.DataFrame,
    objectives: Mapping[str, str] | None = None,
    *,
    by: str = "method",
    title: str | None = None,
) -> Figure:
    """Every complete trial as a point (two objectives as axes), the Pareto front outlined."""
    objectives = dict(objectives or {"sparsity": "max", "acc_finetuned": "max"})
    if len(objectives) != 2:
        raise ValueError(f"plot_pareto draws two objectives; got {list(objectives)}")
    (xcol, xdir), (ycol, _) = objectives.items()
    done = df[df["status"] == "complete"] if "status" in df.columns else df
    front = pareto_front(done, objectives).sort_values(xcol)
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    colors = method_colors(done[by].unique())
    for i, (name, group) in enumerate(done.groupby(by, sort=True)):
        ax.scatter(
            group[xcol],
            group[ycol],
            s=22,
            alpha=0.55,
            color=colors[name],
            marker=_MARKERS[i % len(_MARKERS)],
            label=name,
        )
    ax.step(
        front[xcol],
        front[ycol],
        where="post" if xdir.startswith("min") else "pre",
        color="black",
        linewidth=1.2,
        label=f"Pareto front ({len(front)} trials)",
    )
    ax.scatter(front[xcol], front[ycol], s=46, facecolors="none", edgecolors="black")
    ax.set_xlabel(LABELS.get(xcol, xcol))
    ax.set_ylabel(LABELS.get(ycol, ycol))
    _percent(ax.xaxis, xcol)
    _percent(ax.yaxis, ycol)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    goals = ", ".join(f"{d} {c}" for c, d in objectives.items())
    ax.set_title(title or f"Pareto front ({goals}){_subject(df)}")
    return fig


def plot_layer_sparsity(
    layers: pd.DataFrame,
    results: pd.DataFrame,
    *,
    amount: float | None = None,
    by: str = "method",
    title: str | None = None,
) -> Figure:
    """Sparsity of each layer per ``by`` at one requested ``amount`` (mean across seeds).

    Shows where each method removes weights: global pruning spreads unevenly, layer-wise
    methods remove the same share everywhere in scope, structured ones spare the classifier.
    ``amount`` defaults to the one closest to 0.5 that every method ran.
    """
    table = layer_sparsity(layers, results[results["status"] == "complete"])
    table = table.dropna(subset=[by])
    if amount is None:
        shared = set.intersection(*(set(g["amount"]) for _, g in table.groupby(by)))
        amount = min(shared or set(table["amount"]), key=lambda a: abs(a - 0.5))
    chosen = table[np.isclose(table["amount"], amount)]
    order = list(dict.fromkeys(chosen["layer"]))
    means = chosen.groupby([by, "layer"])["sparsity"].mean().unstack(by).reindex(order)
    fig = Figure(figsize=(max(6.0, 0.9 * len(order) + 3), 4.5), layout="constrained")
    ax = fig.subplots()
    colors = method_colors(means.columns)
    width = 0.8 / max(1, len(means.columns))
    xs = np.arange(len(order))
    for i, name in enumerate(means.columns):
        ax.bar(
            xs + (i - (len(means.columns) - 1) / 2) * width,
            means[name],
            width,
            color=colors[name],
            label=name,
        )
    ax.set_xticks(xs, order, rotation=30, ha="right")
    ax.set_xlabel("Layer (model order)")
    ax.set_ylabel("Layer sparsity (share of weights zero)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title=by, title_fontsize=8)
    ax.set_title(title or f"Per-layer sparsity at amount {amount:g}{_subject(results)}")
    return fig


def method_colors(names: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per name (sorted), the same in every plot of a report."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(names))}


def _percent(axis, column: str) -> None:
    if column in _FRACTIONS:
        axis.set_major_formatter(PercentFormatter(1.0))


def _subject(df: pd.DataFrame) -> str:
    parts = []
    for column in ("model", "dataset"):
        if column in df.columns and df[column].nunique() == 1:
            parts.append(str(df[column].iloc[0]))
    return f": {' on '.join(parts)}" if parts else ""
