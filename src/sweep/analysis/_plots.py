from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, PercentFormatter

from sweep.analysis._tables import (
    SUBJECT,
    _aggregate,
    _by,
    _groups,
    _is_none,
    _pairs,
    _varies,
    check_metric,
    check_objectives,
    check_one_analysis,
    complete,
    compression_ratio,
    dense_levels,
    layer_sparsity,
    pareto_front,
    setting_labels,
)
from sweep.errors import ConfigError

LABELS = {
    "acc_finetuned": "Test accuracy after finetuning",
    "acc_pruned": "Test accuracy right after pruning",
    "acc_recalibrated": "Test accuracy after BatchNorm recalibration",
    "acc_dense": "Dense test accuracy",
    "sparsity": "Sparsity (share of prunable weights removed)",
    "amount": "Requested amount",
    "latency_ms": "Latency (ms per batch)",
    "flops": "FLOPs per sample",
    "params_nonzero": "Non-zero parameters",
    "loss_finetuned": "Test loss after finetuning",
}
_FRACTIONS = {"acc_finetuned", "acc_pruned", "acc_recalibrated", "acc_dense", "sparsity", "amount"}
# Measured before finetuning: for a "none" row that is the dense baseline's own value again.
_BEFORE_FINETUNE = {"acc_pruned", "acc_recalibrated", "acc_dense"}
_MARKERS = "osD^v<>Ph*X"
_GREYS = ("0.3", "0.55", "0.1", "0.7")
_INSIDE = 6  # legend entries that fit inside the axes without covering curves
# plot_layer_sparsity: one row of bars per layer, the figure as tall as its rows (title, axis
# label and ticks around them), up to a height that still opens as one page
_LAYER_MARGIN_IN = 1.4
_LAYER_ROW_IN = 0.2  # 14 pt: a 9 pt label with room around it
_LAYER_MIN_IN, _LAYER_MAX_IN = 3.5, 36.0
_LABEL_PT = (6.0, 9.0)  # the label font, smallest to largest


def tradeoff(
    df: pd.DataFrame,
    y: str = "acc_finetuned",
    *,
    x: str = "sparsity",
    by: str | Sequence[str] | None = None,
    band: str = "std",
    compression: bool = False,
    dense: bool = True,
    title: str | None = None,
) -> Figure:
    """``y`` against sparsity (or amount), one curve per setting: mean across seeds, shaded band.

    A setting is a method with every config value that differs between trials (`varying`):
    two finetune budgets are two curves, labelled ``l1_unstructured (finetune.epochs=1)`` and
    ``l1_unstructured (finetune.epochs=3)``. Rows of method ``none`` are drawn as a dotted
    reference level, ``none (dense, finetuned)``, never as a curve.

    Args:
        df: Rows of `sweep.load_results`; only complete trials are drawn.
        y: Metric on the vertical axis.
        x: ``sparsity`` (achieved) or ``amount`` (requested).
        by: Column(s) naming a curve, naming column first; defaults to
            ``["method", *varying(df)]``.
        band: ``std`` or ``ci95`` across seeds.
        compression: Horizontal axis as compression ratio 1 / density on a log scale.
        dense: Draw the reference levels: the dense baseline's ``acc_dense`` as a dashed line
            (accuracy plots; one per model and dataset, and per pretraining when that differs)
            and the ``none`` rows as a dotted one.
        title: Defaults to "<y> vs <x>: <model> on <dataset>".

    Returns:
        The figure (never shown).

    Raises:
        ConfigError: ``y`` is not a numeric column or no complete trial measured it, ``x``
            not ``sparsity`` or ``amount``, or ``df`` has no complete trial.

    Example:
        >>> df = pd.DataFrame({"status": "complete", "method": "l1", "amount": [0.5, 0.9],
        ...                    "seed": 0, "sparsity": [0.5, 0.9], "acc_dense": 0.99,
        ...                    "acc_finetuned": [0.98, 0.9]})
        >>> [t.get_text() for t in tradeoff(df).axes[0].get_legend().get_texts()]
        ['l1', 'dense baseline (99.0%)']
    """
    if x not in ("sparsity", "amount"):
        raise ConfigError(f"x={x!r} is not an axis; accepted: sparsity, amount")
    check_metric(df, y, "y", (x, "amount"))
    by = _by(df, by)
    done = complete(df)
    done["_label"] = setting_labels(done, by)
    none = _is_none(done)
    points = _aggregate(done[~none], y, x=x, by=[*by, "_label"], band=band)
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    colors = method_colors(points["_label"].unique())
    for i, (name, curve) in enumerate(_settings(points, by)):
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
        band_xs, lo, hi = (_floats(v) for v in (xs, lo, hi))
        ax.fill_between(band_xs, lo, hi, color=colors[name], alpha=0.18, linewidth=0)
    if dense:
        _reference_levels(ax, done, y, by)
    if compression:
        _compression_axis(ax.xaxis, compression_ratio(points[x]))
        ax.set_xlabel("Compression ratio (1 / density, log scale)")
    else:
        ax.set_xlabel(LABELS.get(x, x))
        _percent(ax.xaxis, x, points[x])
    ax.set_ylabel(LABELS.get(y, y))
    _percent(ax.yaxis, y)
    ax.grid(alpha=0.3)
    spread = "±1 std" if band == "std" else "95% CI"
    names = ", ".join([by[0], *(c for c in by[1:] if _varies(done, c))])
    # only references (method none, the dense baseline): no curve, no mean to speak of
    _legend(
        ax,
        title=f"{names} (mean of {_seeds(points['n'])}, band {spread})" if len(points) else names,
    )
    against = "compression ratio" if compression else x
    ax.set_title(title or f"{LABELS.get(y, y).split(' (')[0]} vs {against}{_subject(done)}")
    return fig


def plot_pareto(
    df: pd.DataFrame,
    objectives: Mapping[str, str] | None = None,
    *,
    by: str | Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Every complete trial as a point (two objectives as axes), the Pareto front outlined.

    Points are coloured per setting (as in `tradeoff`); ``none`` rows (dense, finetuned) are
    grey crosses. With several models or datasets each has its own front: a trial on one
    dataset never beats a trial on another.

    Args:
        df: Rows of `sweep.load_results`.
        objectives: Two columns -> ``max`` | ``min``, horizontal axis first; defaults to
            maximizing ``sparsity`` and ``acc_finetuned``.
        by: Column(s) naming a setting; defaults to ``["method", *varying(df)]``.
        title: Defaults to "Pareto front (<goals>): <model> on <dataset>".

    Returns:
        The figure (never shown).

    Example:
        >>> df = pd.DataFrame({"status": "complete", "method": "l1", "amount": [0.5, 0.9],
        ...                    "sparsity": [0.5, 0.9], "acc_finetuned": [0.98, 0.9]})
        >>> plot_pareto(df).axes[0].get_legend().get_texts()[-1].get_text()
        'Pareto front (2 trials)'
    """
    objectives = dict(objectives or {"sparsity": "max", "acc_finetuned": "max"})
    if len(objectives) != 2:
        raise ConfigError(
            f"objectives={objectives!r}: plot_pareto draws two; accepted: two columns -> "
            "max | min, the horizontal axis first"
        )
    check_objectives(df, objectives)
    for column in objectives:
        check_metric(df, column, "objective", ())
    (xcol, xdir), (ycol, _) = objectives.items()
    by = _by(df, by)
    done = complete(df)
    done["_label"] = setting_labels(done, by)
    none = _is_none(done)
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    colors = method_colors(done.loc[~none, "_label"].unique())
    for i, (name, group) in enumerate(_settings(done[~none], by)):
        ax.scatter(
            group[xcol],
            group[ycol],
            s=22,
            alpha=0.55,
            color=colors[name],
            marker=_MARKERS[i % len(_MARKERS)],
            label=name,
        )
    for i, (label, group) in enumerate(_settings(done[none], by)):
        grey = _GREYS[(i + 2) % len(_GREYS)]  # as the none levels of `tradeoff`
        ax.scatter(group[xcol], group[ycol], s=40, color=grey, marker="x", label=label)
    split = [c for c in SUBJECT if _varies(done, c)]
    for i, (key, part) in enumerate(_groups(done, split)):
        if part[list(objectives)].isna().all().any():
            continue  # a subject that never measured an objective has no front
        front = pareto_front(part, objectives).sort_values(xcol)
        which = f"; {_pairs(dict(zip(split, key, strict=True)), split)}" if split else ""
        ax.step(
            front[xcol],
            front[ycol],
            where="post" if xdir.startswith("min") else "pre",
            color=_GREYS[i % len(_GREYS)] if split else "black",
            linewidth=1.2,
            label=f"Pareto front ({len(front)} trials{which})",
        )
        ax.scatter(front[xcol], front[ycol], s=46, facecolors="none", edgecolors="black")
    ax.set_xlabel(LABELS.get(xcol, xcol))
    ax.set_ylabel(LABELS.get(ycol, ycol))
    _percent(ax.xaxis, xcol)
    _percent(ax.yaxis, ycol)
    ax.grid(alpha=0.3)
    _legend(ax)
    goals = ", ".join(f"{d} {c}" for c, d in objectives.items())
    ax.set_title(title or f"Pareto front ({goals}){_subject(done)}")
    return fig


def plot_layer_sparsity(
    layers: pd.DataFrame,
    results: pd.DataFrame,
    *,
    amount: float | None = None,
    by: str | Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Sparsity of each layer per setting at one requested ``amount`` (mean across seeds).

    One row of bars per layer, in model order from the top: the figure grows with the layer
    count (a label per layer stays readable at 100+ layers, up to a height of 36 inches).

    Shows where each method removes weights: global pruning spreads unevenly, layer-wise
    methods remove the same share everywhere in scope, structured ones spare the classifier.
    ``none`` rows (nothing pruned) are left out.

    Args:
        layers: `sweep.load_layers`.
        results: `sweep.load_results` of the same store.
        amount: The requested amount to show; defaults to the one closest to 0.5 that every
            setting ran.
        by: Column(s) naming a setting; defaults to ``["method", *varying(results)]``.
        title: Defaults to "Per-layer sparsity at amount <amount>: <model> on <dataset>".

    Returns:
        The figure (never shown).

    Raises:
        ConfigError: No complete pruned trial has per-layer rows, or none ran ``amount``
            (the message lists the amounts there are).

    Example:
        >>> results = pd.DataFrame({"status": "complete", "trial_key": ["a", "b"],
        ...                         "method": "l1", "amount": [0.5, 0.9], "seed": 0})
        >>> layers = pd.DataFrame({"trial_key": ["a", "b"], "layer": "fc", "numel": 10,
        ...                        "nonzero": [5, 1]})
        >>> fig = plot_layer_sparsity(layers, results)
        >>> fig.axes[0].get_title(), [float(p.get_width()) for p in fig.axes[0].patches]
        ('Per-layer sparsity at amount 0.5', [0.5])
    """
    by = _by(results, by)
    done = complete(results)
    done["_label"] = setting_labels(done, by)
    done = done[~_is_none(done)]
    table = layer_sparsity(layers, done, columns=[*by, "_label"])
    table = table.dropna(subset=["_label"])
    if table.empty:
        raise ConfigError(
            "layers and results share no complete pruned trial; accepted: sweep.load_layers() "
            "and sweep.load_results() of one store"
        )
    if amount is None:
        shared = set.intersection(*(set(g["amount"]) for _, g in table.groupby("_label")))
        amount = min(shared or set(table["amount"]), key=lambda a: abs(a - 0.5))
    chosen = table[np.isclose(table["amount"].astype(float), amount)]
    if chosen.empty:
        have = ", ".join(f"{a:g}" for a in sorted(set(table["amount"].astype(float))))
        raise ConfigError(
            f"amount={amount!r} has no complete pruned trial with per-layer rows; accepted: {have}"
        )
    order = list(dict.fromkeys(chosen["layer"]))
    means = chosen.groupby(["_label", "layer"])["sparsity"].mean().unstack("_label")
    means = means.reindex(index=order, columns=[label for label, _ in _settings(chosen, by)])
    row, fontsize, every = _layer_rows(len(order), len(means.columns))
    height = max(_LAYER_MIN_IN, _LAYER_MARGIN_IN + row * len(order))
    fig = Figure(figsize=(7.5, height), layout="constrained")
    ax = fig.subplots()
    colors = method_colors(means.columns)
    thickness = 0.8 / max(1, len(means.columns))
    ys = np.arange(len(order))
    for i, name in enumerate(means.columns):
        ax.barh(
            ys + (i - (len(means.columns) - 1) / 2) * thickness,
            means[name],
            thickness,
            color=colors[name],
            label=name,
        )
    ax.set_yticks(ys[::every], order[::every], fontsize=fontsize)
    ax.set_ylim(len(order) - 0.5, -0.5)  # the model's first layer on top
    ax.set_ylabel("Layer (model order)")
    ax.set_xlabel("Layer sparsity (share of weights zero)")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    names = ", ".join([by[0], *(c for c in by[1:] if _varies(done, c))])
    _legend(ax, title=names)
    ax.set_title(title or f"Per-layer sparsity at amount {amount:g}{_subject(done)}")
    return fig


def _layer_rows(layers: int, settings: int) -> tuple[float, float, int]:
    """Row height (inches) per layer, the label font size (pt), and every how many layers a
    label is drawn: each layer's while the rows fit under `_LAYER_MAX_IN` (or their labels at
    6 pt), else every k-th, each at 6 pt, none overlapping."""
    wanted = _LAYER_ROW_IN + 0.06 * max(0, settings - 2)  # grouped bars need room too
    row = min(wanted, (_LAYER_MAX_IN - _LAYER_MARGIN_IN) / max(1, layers))
    small, large = _LABEL_PT
    fontsize = min(large, max(small, row * 72 * 0.65))
    every = max(1, int(np.ceil(fontsize / 0.65 / (row * 72))))
    return row, fontsize, every


def plot_sensitivity(
    table: pd.DataFrame,
    tolerance: float | None = None,
    *,
    y: str = "acc_recalibrated",
    title: str | None = None,
) -> Figure:
    """Accuracy against the amount one layer is pruned by, one line per layer, the others dense.

    The table of a layer sensitivity analysis (`sweep.sensitivity.run` or
    `sweep.sensitivity.load`): which layers a network can afford to thin, and which it cannot.
    The dense baseline's accuracy is a dashed line; with ``tolerance``, the lowest accuracy
    still within it is a dotted one.

    Args:
        table: Rows of layer and amount (several seeds are averaged): ``layer``, ``amount``
            (the layer's), ``y``, ``acc_dense``; optionally ``status`` (only ``complete``
            rows are drawn), ``model``, ``dataset`` and ``method`` (named in the title).
            Layers keep their order in it.
        tolerance: Accuracy drop from dense still accepted; ``None`` draws no such line.
        y: The accuracy on the vertical axis (``acc_pruned``: before recalibration).
        title: Defaults to "Layer sensitivity (<method>, no finetuning): <model> on <dataset>".

    Returns:
        The figure (never shown).

    Example:
        >>> table = pd.DataFrame({"layer": ["fc1", "fc1", "fc2", "fc2"], "amount": [0.5, 0.9] * 2,
        ...                       "acc_recalibrated": [0.98, 0.6, 0.97, 0.9], "acc_dense": 0.99})
        >>> [t.get_text() for t in plot_sensitivity(table).axes[0].get_legend().get_texts()]
        ['fc1', 'fc2', 'dense baseline (99.0%)']
    """
    check_one_analysis(table)
    done = table[table["status"].isin(["complete"])] if "status" in table.columns else table
    layers = list(dict.fromkeys(table["layer"]))
    # several seeds (or reruns) of one layer and amount: their mean, as every curve here
    points = done.groupby(["layer", "amount"], sort=False)[y].mean().reset_index()
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(layers) <= 10 else "tab20"].colors
    for i, layer in enumerate(layers):
        curve = points[points["layer"] == layer].sort_values("amount")
        ax.plot(
            curve["amount"],
            curve[y],
            marker=_MARKERS[i % len(_MARKERS)],
            color=palette[i % len(palette)],
            label=layer,
            markersize=5,
        )
    dense = float(done["acc_dense"].mean()) if len(done) else float("nan")
    ax.axhline(
        dense, color=_GREYS[0], linestyle="--", linewidth=1, label=f"dense baseline ({dense:.1%})"
    )
    if tolerance is not None:
        ax.axhline(
            dense - tolerance,
            color=_GREYS[1],
            linestyle=":",
            linewidth=1.5,
            label=f"tolerance ({tolerance:.1%} below dense)",
        )
    ax.set_xlabel("Amount pruned from the one layer (the others dense)")
    ax.set_ylabel(LABELS.get(y, y))
    _percent(ax.xaxis, "amount")
    _percent(ax.yaxis, y)
    ax.grid(alpha=0.3)
    _legend(ax, title="layer")
    methods = ", ".join(sorted(map(str, done.get("method", pd.Series()).dropna().unique())))
    head = f"Layer sensitivity ({methods + ', ' if methods else ''}no finetuning)"
    ax.set_title(title or f"{head}{_subject(done)}")
    return fig


def method_colors(names: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per name (sorted), the same in every plot of a report.

    Args:
        names: Curve labels.

    Returns:
        Name -> RGB tuple of matplotlib's ``tab10``, repeating after ten names.

    Example:
        >>> method_colors(["ln", "l1"])["l1"]
        (0.12156862745098039, 0.4666666666666667, 0.7058823529411765)
    """
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(names))}


def _reference_levels(ax: Axes, done: pd.DataFrame, y: str, by: list[str]) -> None:
    """Dashed dense baseline per baseline (accuracy plots); dotted level per ``none`` setting."""
    if y.startswith("acc"):
        levels = dense_levels(done.drop(columns="_label"), by)  # _label is no config value
        for i, (keys, level) in enumerate(levels):
            which = f"; {_pairs(keys, list(keys))}" if keys else ""
            ax.axhline(
                level,
                color=_GREYS[i % len(_GREYS)],
                linestyle="--",
                linewidth=1,
                label=f"dense baseline ({level:.1%}{which})",
            )
    if y in _BEFORE_FINETUNE:
        return
    for i, (label, part) in enumerate(_settings(done[_is_none(done)], by)):
        ax.axhline(
            part[y].mean(),
            color=_GREYS[(i + 2) % len(_GREYS)],
            linestyle=":",
            linewidth=1.5,
            label=label,
        )


def _compression_axis(axis, ratios: pd.Series) -> None:
    """Log scale ticked at round ratios (1.5x, 2x, 3x, 5x, 10x...), so that a range of less
    than a decade reads 2x rather than matplotlib's minor 2 x 10^0."""
    axis.axes.set_xscale("log")
    lo, hi = (ratios.min(), ratios.max()) if len(ratios) else (1.0, 10.0)
    steps = [m * 10.0**e for e in range(0, 7) for m in (1, 1.5, 2, 3, 5)]
    axis.set_major_locator(FixedLocator([t for t in steps if lo / 1.05 <= t <= hi * 1.05]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    axis.set_minor_formatter(NullFormatter())


def _settings(df: pd.DataFrame, by: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """``(label, rows)`` per setting, in the order of the settings' values: 5 epochs before 20
    (label text would put "20" first)."""
    ordered = df.sort_values(by, kind="stable", na_position="last")
    return list(ordered.groupby("_label", sort=False))


def _legend(ax: Axes, title: str | None = None) -> None:
    """Inside the axes while it is short; below them, the figure grown to fit, once it would
    hide the curves (several settings, or several models, make long legends)."""
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) <= _INSIDE:
        ax.legend(title=title, fontsize=8, title_fontsize=8)
        return
    fig = ax.get_figure()
    fig.set_figheight(fig.get_figheight() + 0.16 * len(labels) + 0.3)
    fig.legend(
        handles, labels, title=title, fontsize=8, title_fontsize=8, loc="outside lower center"
    )


def _seeds(n: pd.Series) -> str:
    lo, hi = (int(n.min()), int(n.max())) if len(n) else (0, 0)
    count = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return f"{count} seed{'s' * (hi != 1)}"


def _percent(axis, column: str, values: pd.Series | None = None) -> None:
    """Ticks as percentages for a fraction; not where ``values`` hold a count (amount=100)."""
    if column in _FRACTIONS and (values is None or bool((values.dropna() <= 1).all())):
        axis.set_major_formatter(PercentFormatter(1.0))


def _subject(done: pd.DataFrame) -> str:
    """': small_cnn on digits'; ': lenet, small_cnn on digits' when a plot holds several."""
    parts = []
    for column in SUBJECT:
        if column in done.columns:
            names = sorted(map(str, done[column].dropna().unique()))
            if names:
                parts.append(", ".join(names))
    return f": {' on '.join(parts)}" if parts else ""


def _floats(values: Sequence[float] | pd.Series) -> np.ndarray:
    """``values`` as float64, a missing value as NaN: matplotlib before 3.8 cannot mask pandas'
    nullable arrays (``Float64``) in a band, and fails on them."""
    return pd.Series(values).to_numpy(dtype="float64", na_value=np.nan)
