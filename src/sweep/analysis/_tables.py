from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sweep.errors import ConfigError
from sweep.hashing import HOW_NOT_WHAT
from sweep.store import METRIC_COLUMNS

# What the rows of method "none" are: the dense baseline, finetuned like every other trial.
NONE_NOTE = "dense, finetuned"
_DIRECTIONS = {"max": 1.0, "maximize": 1.0, "min": -1.0, "minimize": -1.0}

# What a trial was run on: the report has one section per pair, and no line averages across them.
SUBJECT = ("model", "dataset")
# The ``tag`` of the rows ``python -m sweep.sensitivity`` writes: one layer pruned at a time and
# never finetuned, measurements of the baseline rather than trials of a trade-off.
SENSITIVITY_TAG = "sensitivity"
# Columns that record how, where or when a trial ran, or what came out, not what was run.
_BOOKKEEPING = frozenset(
    {
        "method",  # names the curve
        "amount",  # the horizontal grouping
        "seed",  # what a curve averages over
        "trial_key",
        "baseline_key",
        "baseline_trained",
        "progress",
        "skip_completed",
        "channels_last",
        "fuse",  # how many trials finetuned together: how fast, not what
        "started_at",
        "error",
        "status",
    }
)
# store.path, optuna.study, version.torch; latency.* say how latency was measured, not the model;
# distributed.* how a trial's ranks were started (as in hashing.NOT_IN_KEY)
_BOOKKEEPING_GROUPS = ("store.", "optuna.", "version.", "latency.", "distributed.")
# Files known by their content where the trial key holds a digest of it: the same bytes under
# another path are the same trial (column -> the column of its digest)
_BY_CONTENT = {
    "dataset.root": "dataset.fingerprint",
    "model.checkpoint": "model.checkpoint_sha256",
    "rewind_weights": "rewind_weights_sha256",
}
# loader settings: how fast the batches come, never which (left out of trial keys too)
_HOW_NOT_WHAT = frozenset(f"{group}.{key}" for group, key in HOW_NOT_WHAT)
# Metric names a later version may add before METRIC_COLUMNS lists them (top level only:
# config values from groups always carry a dot).
_METRIC_NAME = re.compile(r"^(acc|loss|time|params|flops|latency|speedup|size_bytes)(_|$)|_m?s$")


def varying(df: pd.DataFrame) -> list[str]:
    """The config columns whose value differs among complete trials: what splits a curve.

    Found from the data, so a key a later version adds splits curves without a code change.
    Left out: ``method`` (it names the curve), ``amount`` (the horizontal axis), ``seed`` (what
    a curve averages over), bookkeeping (``store.*``, ``optuna.*``, ``version.*``,
    ``latency.*``, ``distributed.*``, ``progress``, ``trial_key``, timing...), loader settings
    (``dataset.num_workers``...), the paths of files known by their content (``dataset.root``
    with a fingerprint, ``model.checkpoint`` and ``rewind_weights`` with their SHA-256: the
    trial key holds the content, not the path), and every metric. A key of the
    ``method``, ``schedule``, ``model`` or ``dataset`` group (``method.n``, ``model.width``) is
    left out when each name has one value of it: it then says nothing the name does not.
    ``device`` counts by its type (``cuda:0`` and ``cuda:1`` are one setting, as in the trial
    key).

    Args:
        df: Rows of `sweep.load_results`.

    Returns:
        Column names in the DataFrame's order (``model``, ``dataset`` first).

    Example:
        >>> df = pd.DataFrame({"status": "complete", "method": "l1", "amount": 0.5,
        ...                    "seed": [0, 0], "finetune.epochs": [1, 3],
        ...                    "store.path": ["a", "b"], "acc_finetuned": [0.9, 0.95]})
        >>> varying(df)
        ['finetune.epochs']
    """
    done = complete(df)
    out = []
    for column in done.columns:
        if _is_bookkeeping(column) or not _varies(done, column):
            continue
        if column in _BY_CONTENT and _known_by_content(done, column):
            continue
        group = column.split(".")[0]
        if "." in column and group in ("method", "schedule", *SUBJECT) and group in done.columns:
            per_name = done.groupby(group, dropna=False)[column].nunique(dropna=False)
            if per_name.max() <= 1:
                continue
        out.append(column)
    return out


def setting_label(values: Mapping[str, Any], keys: Sequence[str], note: str | None = None) -> str:
    """A legend or table label: the first key's value, then ``key=value`` for the other keys.

    Args:
        values: A row (dict or Series) holding ``keys``.
        keys: The naming column first (``method``), then the keys to show.
        note: Text put first inside the parentheses (``dense, finetuned``).

    Returns:
        ``"l1_unstructured (finetune.epochs=1)"``; missing values read ``-``, booleans as in a
        Hydra override (``compact=true``).

    Example:
        >>> setting_label({"method": "l1_unstructured", "finetune.epochs": 1},
        ...               ["method", "finetune.epochs"])
        'l1_unstructured (finetune.epochs=1)'
        >>> setting_label({"method": "none", "compact": True}, ["method", "compact"], "dense")
        'none (dense; compact=true)'
    """
    inside = "; ".join(part for part in (note, _pairs(values, keys[1:])) if part)
    name = _text(values[keys[0]])
    return f"{name} ({inside})" if inside else name


def setting_labels(df: pd.DataFrame, by: str | Sequence[str] | None = None) -> pd.Series:
    """The `setting_label` of every row, showing only the ``by`` keys that vary among the rows.

    A key of the naming column's own group (``method.pruning_method`` for ``method``) is shown
    only for names whose rows differ in it: ``global_unstructured (method.pruning_method=l1)``
    beside a plain ``l1_unstructured``. Rows of method ``none`` read
    ``none (dense, finetuned)``.

    Args:
        df: Rows holding the ``by`` columns (complete trials, or a table of settings).
        by: Naming column first; defaults to ``["method", *varying(df)]``.

    Returns:
        A string Series aligned with ``df``; two settings never share a label.

    Example:
        >>> df = pd.DataFrame({"method": ["l1", "l1", "none"], "compact": [True, False, False]})
        >>> setting_labels(df, ["method", "compact"]).tolist()
        ['l1 (compact=true)', 'l1 (compact=false)', 'none (dense, finetuned; compact=false)']
    """
    by = _by(df, by)
    name = by[0]
    shown = [c for c in by[1:] if _varies(df, c)]
    own = {
        c: df.groupby(name, dropna=False)[c].transform(lambda s: s.nunique(dropna=False)) > 1
        for c in shown
        if c.startswith(f"{name}.")
    }
    none = _is_none(df) if name == "method" else pd.Series(False, index=df.index)
    labels = [
        setting_label(
            row,
            [name, *(c for c in shown if c not in own or own[c].loc[i])],
            NONE_NOTE if none.loc[i] else None,
        )
        for i, row in zip(df.index, df[[name, *shown]].to_dict("records"), strict=True)
    ]
    return pd.Series(labels, index=df.index, dtype=object)


def aggregate(
    df: pd.DataFrame,
    y: str = "acc_finetuned",
    *,
    x: str = "sparsity",
    by: str | Sequence[str] | None = None,
    band: str = "std",
) -> pd.DataFrame:
    """Mean of ``y`` (and ``x``) across seeds for each setting and requested amount, with a band.

    Only complete trials count. Trials are grouped by what was asked (``by`` and ``amount``), so
    seeds of one setting form one point even when their achieved sparsities differ slightly,
    and trials that differ in any config value (`varying`) never share a point. Rows of method
    ``none`` (dense, finetuned) form one point per setting at amount 0, whatever amount they
    carry.

    Args:
        df: Rows of `sweep.load_results`.
        y: The metric to average (``acc_finetuned``, ``latency_ms``...).
        x: The column for the horizontal axis (``sparsity`` or ``amount``).
        by: Column(s) naming a curve; defaults to ``["method", *varying(df)]``. A narrower
            ``by`` (``"method"``) averages over whatever else differs: the caller's choice.
        band: ``std`` (one standard deviation) or ``ci95`` (normal 95% interval of the mean);
            the band of an accuracy or sparsity is clipped to [0, 1].

    Returns:
        One row per curve point: ``by`` columns, ``amount``, ``x``, ``y``, ``y_lo``, ``y_hi``,
        ``n`` (seeds), sorted by ``by`` then ``x``.

    Example:
        >>> df = pd.DataFrame({"status": "complete", "method": "l1", "amount": [0.5, 0.5],
        ...                    "sparsity": [0.5, 0.5], "acc_finetuned": [0.875, 0.625]})
        >>> aggregate(df)[["method", "sparsity", "acc_finetuned", "n"]].to_dict("records")
        [{'method': 'l1', 'sparsity': 0.5, 'acc_finetuned': 0.75, 'n': 2}]
    """
    if x not in ("sparsity", "amount"):
        raise ConfigError(f"x={x!r} is not an axis; accepted: sparsity, amount")
    check_metric(df, y, "y", (x, "amount"))
    return _aggregate(df, y, x=x, by=by, band=band)


def _aggregate(df: pd.DataFrame, y: str, *, x: str, by: Any, band: str) -> pd.DataFrame:
    """`aggregate`, its arguments checked by the caller (`tradeoff`: its rows may be none)."""
    if band not in ("std", "ci95"):
        raise ConfigError(f"band={band!r}; accepted: std | ci95")
    by = _by(df, by)
    keys = list(dict.fromkeys([*by, "amount"]))
    done = complete(df)
    means = {x: (x, "mean")} if x not in keys else {}  # a key comes back with reset_index
    out = done.groupby(keys, dropna=False, sort=True).agg(
        **means, **{y: (y, "mean"), "_sd": (y, "std"), "n": (y, "count")}
    )
    out["_sd"] = out["_sd"].astype(float).fillna(0.0)  # one seed: no spread
    half = out["_sd"] if band == "std" else 1.96 * out["_sd"] / np.sqrt(out["n"])
    out[f"{y}_lo"], out[f"{y}_hi"] = out[y] - half, out[y] + half
    if y == "sparsity" or y.startswith("acc_"):  # a fraction: its band too stays in [0, 1]
        out[f"{y}_lo"], out[f"{y}_hi"] = out[f"{y}_lo"].clip(0, 1), out[f"{y}_hi"].clip(0, 1)
    out = out.drop(columns="_sd").reset_index()
    return out.sort_values([*by, x], kind="stable").reset_index(drop=True)


def pareto_front(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The rows no other row beats: at least as good in every objective and better in one.

    Only complete trials count, as in `complete`: rows of a layer sensitivity analysis are left
    out, and a trial stored twice counts once. Rows with a missing objective value are left
    out; rows with identical objective values are all kept (none dominates the other).

    Args:
        df: Rows of `sweep.load_results` (a frame with no ``status`` counts as all complete).
        objectives: Column -> ``max`` or ``min`` (``maximize``/``minimize`` also accepted).

    Returns:
        The non-dominated rows, in their original order and with their original index.

    Example:
        >>> df = pd.DataFrame({"acc": [0.9, 0.8, 0.7], "sparsity": [0.5, 0.9, 0.4]})
        >>> pareto_front(df, {"acc": "max", "sparsity": "max"}).index.tolist()
        [0, 1]
    """
    check_objectives(df, objectives)
    for column in objectives:
        if len(df) and df[column].isna().all():
            raise ConfigError(
                f"objective {column!r} has no value in any of the {len(df)} rows; accepted: a "
                f"column the trials measured{_MEASURED_WHEN.get(column, '')}"
            )
    rows = _complete_rows(df).dropna(subset=list(objectives))
    # negate minimised objectives so that larger is better everywhere
    values = np.column_stack(
        [rows[c].to_numpy(float) * _DIRECTIONS[d] for c, d in objectives.items()]
    )
    ge = (values[:, None, :] >= values[None, :, :]).all(axis=2)
    gt = (values[:, None, :] > values[None, :, :]).any(axis=2)
    dominated = (ge & gt).any(axis=0)  # some row j >= i everywhere and > somewhere
    return rows[~dominated]


def highest_sparsity_within(
    df: pd.DataFrame,
    tolerance: float = 0.01,
    *,
    metric: str = "acc_finetuned",
    by: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per setting, the highest mean sparsity whose mean ``metric`` stays within ``tolerance``
    of the dense baseline (``acc_dense``, averaged over the same trials).

    Rows of method ``none`` are the dense reference, not a setting to choose: left out.

    Args:
        df: Rows of `sweep.load_results`.
        tolerance: Largest accepted drop from dense (0.01: one point of accuracy).
        metric: The accuracy to compare with ``acc_dense``.
        by: Column(s) naming a setting; defaults to ``["method", *varying(df)]``.

    Returns:
        One row per setting: ``by`` columns, ``amount``, ``sparsity``, ``metric``,
        ``acc_dense``, ``drop`` (dense minus metric), ``compression`` (1 / density) and ``n``;
        NaN (and ``n`` 0) where no amount stays within the tolerance.

    Example:
        >>> df = pd.DataFrame({"status": "complete", "method": "l1", "amount": [0.5, 0.9],
        ...                    "seed": 0, "sparsity": [0.5, 0.9], "acc_dense": 0.99,
        ...                    "acc_finetuned": [0.985, 0.9]})
        >>> highest_sparsity_within(df)[["method", "sparsity", "n"]].to_dict("records")
        [{'method': 'l1', 'sparsity': 0.5, 'n': 1}]
    """
    tolerance = check_tolerance(tolerance)
    check_metric(df, metric, "metric", ("amount", "sparsity", "acc_dense"))
    by = _by(df, by)
    done = complete(df)
    done = done[~_is_none(done)]
    points = (
        done.groupby([*by, "amount"], dropna=False, sort=True)
        .agg(
            sparsity=("sparsity", "mean"),
            **{metric: (metric, "mean")},
            acc_dense=("acc_dense", "mean"),
            n=(metric, "count"),
        )
        .reset_index()
    )
    points["drop"] = points["acc_dense"] - points[metric]
    rows = []
    for name, group in points.groupby(by, dropna=False, sort=True):
        ok = group[group["drop"] <= tolerance + 1e-9]  # "within 1%" includes 0.99 - 0.98
        best = ok.loc[ok["sparsity"].idxmax()] if len(ok) else None
        rows.append(
            {
                **dict(zip(by, name, strict=True)),
                "amount": best["amount"] if best is not None else np.nan,
                "sparsity": best["sparsity"] if best is not None else np.nan,
                metric: best[metric] if best is not None else np.nan,
                "acc_dense": best["acc_dense"] if best is not None else group["acc_dense"].mean(),
                "drop": best["drop"] if best is not None else np.nan,
                "compression": compression_ratio(best["sparsity"]) if best is not None else np.nan,
                "n": int(best["n"]) if best is not None else 0,
            }
        )
    return pd.DataFrame(
        rows, columns=[*by, "amount", "sparsity", metric, "acc_dense", "drop", "compression", "n"]
    )


def compression_ratio(sparsity: float | np.ndarray | pd.Series):
    """1 / density, as the pruning literature reports it: sparsity 0.9 -> 10x.

    Example:
        >>> compression_ratio(0.9)
        10.000000000000002
        >>> compression_ratio(1.0)  # nothing left
        inf
    """
    density = 1.0 - sparsity
    if isinstance(density, int | float):
        return math.inf if density == 0 else 1.0 / density
    return 1.0 / density


def layer_sparsity(
    layers: pd.DataFrame,
    results: pd.DataFrame | None = None,
    *,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-layer sparsity (1 - nonzero / numel) of each trial, joined with its setting.

    Args:
        layers: `sweep.load_layers`.
        results: `sweep.load_results`, to add ``method``, ``amount``, ``seed`` and ``columns``.
        columns: More columns of ``results`` to add; defaults to ``varying(results)``.

    Returns:
        ``layers`` with a ``sparsity`` column (and the joined columns). With ``results``, the
        layers' own ``amount`` (what each layer was pruned with) is ``layer_amount``, and
        ``amount`` is the trial's.

    Example:
        >>> layers = pd.DataFrame({"trial_key": "k", "layer": "fc", "numel": [10], "nonzero": 4})
        >>> layer_sparsity(layers)["sparsity"].tolist()
        [0.6]
    """
    out = layers.assign(sparsity=1.0 - layers["nonzero"] / layers["numel"])
    if results is not None:
        out = out.rename(columns={"amount": "layer_amount"})
        extra = varying(results) if columns is None else list(columns)
        joined = list(dict.fromkeys(["trial_key", "method", "amount", "seed", *extra]))
        out = out.merge(results[joined].drop_duplicates("trial_key"), on="trial_key", how="left")
    return out


def subjects(df: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """The rows of each (model, dataset) that has a complete trial: the report's sections.

    Args:
        df: Rows of `sweep.load_results`.

    Returns:
        ``(model, dataset)`` -> its rows (any status), sorted by name. Rows with no model or
        dataset (a trial that failed before building them) belong to none. A frame without
        those columns is one subject, ``()``.

    Example:
        >>> df = pd.DataFrame({"status": "complete", "model": ["b", "a"], "dataset": "digits"})
        >>> list(subjects(df))
        [('a', 'digits'), ('b', 'digits')]
    """
    columns = [c for c in SUBJECT if c in df.columns]
    if not columns:
        return {(): df}
    ran = set(complete(df)[columns].itertuples(index=False, name=None))
    return {
        key: part for key, part in df.groupby(columns, sort=True, dropna=True) if tuple(key) in ran
    }


def check_tolerance(tolerance: float | str, name: str = "tolerance") -> float:
    """``tolerance`` as a float; `ConfigError` unless it is a number in [0, 1]: the one rule of
    ``highest_sparsity_within``, ``python -m sweep.report`` and ``python -m sweep.sensitivity``
    (whose ``--tolerance`` text comes here as a string).

    Example:
        >>> check_tolerance(1.5)
        Traceback (most recent call last):
        ...
        sweep.errors.ConfigError: tolerance=1.5 is outside [0, 1]; accepted: a number in [0, 1]
    """
    if isinstance(tolerance, str):
        try:
            tolerance = float(tolerance)
        except ValueError:
            raise ConfigError(
                f"{name}={tolerance!r} is not a number; accepted: {TOLERANCE_ACCEPTED}"
            ) from None
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float | np.number):
        raise ConfigError(f"{name}={tolerance!r} is not a number; accepted: {TOLERANCE_ACCEPTED}")
    if not 0 <= tolerance <= 1:  # NaN too
        raise ConfigError(f"{name}={tolerance!r} is outside [0, 1]; accepted: {TOLERANCE_ACCEPTED}")
    return float(tolerance)


TOLERANCE_ACCEPTED = "a number in [0, 1]"


def check_objectives(df: pd.DataFrame, objectives: Mapping[str, str]) -> None:
    """`ConfigError` unless ``objectives`` maps numeric columns of ``df`` to max | min."""
    if not isinstance(objectives, Mapping) or not objectives:
        raise ConfigError(
            f"objectives={objectives!r}; accepted: a mapping of columns to max | min, such as "
            "{'acc_finetuned': 'max', 'sparsity': 'max'}"
        )
    check_frame(df)
    for column, direction in objectives.items():
        _check_numeric(df, column, f"objective {column!r}", ())
        if direction not in _DIRECTIONS:
            raise ConfigError(f"direction {direction!r} for {column!r}; accepted: max | min")


def check_frame(df: Any, name: str = "df") -> None:
    """`ConfigError` unless ``df`` is a DataFrame (of `sweep.load_results`)."""
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(
            f"{name} is a {type(df).__name__}, not a DataFrame; accepted: the rows of "
            "sweep.load_results(...)"
        )


def check_metric(df: pd.DataFrame, metric: str, name: str, taken: Sequence[str]) -> None:
    """`ConfigError` unless ``metric`` is a numeric column of ``df`` with complete rows, other
    than the columns ``taken`` (an axis, or the grouping) by the function checking it."""
    check_frame(df)
    _check_numeric(df, metric, f"{name}={metric!r}", taken)
    done = complete(df)
    if not len(done):
        raise ConfigError(
            f"df has no complete trial ({len(df)} row(s)); accepted: rows of "
            "sweep.load_results with status complete"
        )
    if done[metric].isna().all():
        raise ConfigError(
            f"{name}={metric!r} has no value in any of the {len(done)} complete trial(s); "
            f"accepted: a column the trials measured{_MEASURED_WHEN.get(metric, '')}"
        )


def check_one_analysis(table: Any, name: str = "table") -> None:
    """`ConfigError` unless ``table`` holds the rows of one layer sensitivity analysis: a
    DataFrame with ``layer`` and ``amount``, of one model, dataset and method, and one value
    of each config column it has (``model.hidden``, as `sweep.sensitivity.load` adds where
    analyses differ; seeds may differ: they are averaged). Two methods' drops averaged per
    layer are neither's."""
    check_frame(table, name)
    missing = [c for c in ("layer", "amount") if c not in table.columns]
    if missing:
        raise ConfigError(
            f"{name} has no {missing[0]} column: it is not a sensitivity table; accepted: the "
            "rows of sweep.sensitivity.run(...) or sweep.sensitivity.load(...)"
        )
    columns = [c for c in (*SUBJECT, "method") if c in table.columns]
    columns += [c for c in table.columns if "." in c and not c.startswith("scope.amounts.")]
    # as text: a list value (model.hidden) cannot be hashed
    distinct = table[columns].astype(str).drop_duplicates().index if columns else []
    analyses = table.loc[distinct, columns]
    if len(analyses) > 1:
        columns = [c for c in columns if analyses[c].astype(str).nunique(dropna=False) > 1]
        analyses = analyses[columns]
        shown = "; ".join(
            ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True))
            for row in analyses.itertuples(index=False, name=None)
        )
        first = dict(zip(columns, next(analyses.itertuples(index=False, name=None)), strict=True))
        # str(v): numpy 2 writes np.str_('x') for a value read from a frame
        query = " & ".join(
            f"({name}{f'.{c}' if c.isidentifier() else f'[{c!r}]'} == "
            f"{str(v) if isinstance(v, str) else v!r})"
            for c, v in first.items()
        )
        raise ConfigError(
            f"{name} holds {len(analyses)} analyses ({shown}); accepted: the rows of one, such "
            f"as {name}[{query}]"
        )


def _check_numeric(df: pd.DataFrame, column: str, label: str, taken: Sequence[str]) -> None:
    if column in df.columns and column not in taken and pd.api.types.is_numeric_dtype(df[column]):
        return
    numeric = sorted(
        c
        for c in df.columns
        if (c in METRIC_COLUMNS or c in ("amount", "sparsity"))
        and c not in taken
        and pd.api.types.is_numeric_dtype(df[c].dtype)
    )
    if not numeric:  # not rows of load_results: any number
        numeric = [c for c in df.columns if c not in taken and pd.api.types.is_numeric_dtype(df[c])]
    what = "an axis of its own here" if column in taken else "not a numeric column of the results"
    raise ConfigError(
        f"{label} is {what}; accepted: "
        f"{', '.join(numeric) or 'the metric columns of sweep.load_results'}"
    )


_LATENCY = (
    " (latency is measured with compact=true, latency.measure=true, or an objective that "
    "reads it such as -m search=latency)"
)
_MEASURED_WHEN = {c: _LATENCY for c in METRIC_COLUMNS if c.startswith(("latency_ms", "speedup"))}


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """The complete trials, as the analysis groups them.

    Only `ordinary` rows count: those of a layer sensitivity analysis are left out. A trial
    stored twice (one ``trial_key``: a grid's row and a study's, or a study that asked the same
    values twice) counts once, by its latest row, so it never reads as two seeds. Method
    ``none`` rows carry amount 0 (older ones recorded the amount they were asked for,
    which they ignore) and ``device`` is the device type (``cuda:1`` -> ``cuda``).

    Args:
        df: Rows of `sweep.load_results` (a frame with no ``status`` counts as all complete).

    Returns:
        A copy of the complete rows.

    Example:
        >>> df = pd.DataFrame({"status": ["complete", "failed"], "method": "none",
        ...                    "amount": 0.5, "device": "cuda:1"})
        >>> complete(df)[["amount", "device"]].to_dict("records")
        [{'amount': 0.0, 'device': 'cuda'}]
    """
    done = _complete_rows(df).copy()
    if {"method", "amount"} <= set(done.columns):
        done["amount"] = done["amount"].where(~done["method"].isin(["none"]), 0.0)
    if "device" in done.columns:
        done["device"] = done["device"].map(lambda d: d.split(":")[0] if isinstance(d, str) else d)
    return done


def _complete_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows `complete` counts, as they are in ``df``."""
    done = ordinary(df)
    done = done[done["status"].isin(["complete"])] if "status" in done.columns else done
    return _once_per_trial(done)


def _once_per_trial(done: pd.DataFrame) -> pd.DataFrame:
    """``done`` with the latest row of each ``trial_key`` only (rows without one all stay)."""
    if "trial_key" not in done.columns or not done["trial_key"].duplicated().any():
        return done
    order = np.arange(len(done))  # positions, oldest first: the index may repeat labels
    if "started_at" in done.columns:
        order = done["started_at"].reset_index(drop=True).sort_values(kind="stable").index
        order = order.to_numpy()
    keys = pd.Series(done["trial_key"].to_numpy()[order])
    again = (keys.notna() & keys.duplicated(keep="last")).to_numpy()
    dropped = np.zeros(len(done), dtype=bool)
    dropped[order[again]] = True
    return done[~dropped]


def ordinary(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of trade-off trials: those ``python -m sweep.sensitivity`` wrote (``tag``
    ``sensitivity``: one layer pruned at a time, never finetuned) left out.

    Rows with no tag (``tag`` null, or a store from before the column existed) are ordinary,
    and so are rows with a tag of the user's own: a tag that differs between trials is a
    config value that splits curves (`varying`).

    Args:
        df: Rows of `sweep.load_results`.

    Returns:
        The other rows, with their index (the frame itself when it has no ``tag`` column).

    Example:
        >>> df = pd.DataFrame({"tag": [None, "sensitivity", "v2"], "method": "l1"})
        >>> ordinary(df).index.tolist()
        [0, 2]
    """
    if "tag" not in df.columns:
        return df
    return df[~df["tag"].isin([SENSITIVITY_TAG])]


def dense_levels(df: pd.DataFrame, by: Sequence[str] = ()) -> list[tuple[dict, float]]:
    """Mean ``acc_dense`` of the dense baselines, each counted once however many trials it has
    (a mean over seeds): per model and dataset, and per any other varying
    key that is one value within each cached baseline (``baseline_key``: pretraining, data
    split...). A key that differs between trials of one baseline (``finetune.epochs``) does
    not split it; without ``baseline_key`` only model and dataset do.

    Args:
        df: Rows of `sweep.load_results`; only complete trials count.
        by: Further keys that may split the baseline; `varying` always counts.

    Returns:
        ``(varying key -> value, level)`` per baseline, sorted by key; ``[]`` with no
        ``acc_dense``.

    Example:
        >>> df = pd.DataFrame({"status": "complete", "model": ["a", "b"], "acc_dense": 0.5})
        >>> dense_levels(df)
        [({'model': 'a'}, 0.5), ({'model': 'b'}, 0.5)]
    """
    done = complete(df)
    if "acc_dense" not in done.columns or not len(done):
        return []
    candidates = [
        c
        for c in dict.fromkeys([*SUBJECT, *varying(df), *by])
        if c.split(".")[0] != "method" and _varies(done, c)
    ]
    keys = [c for c in candidates if c in SUBJECT]
    if "baseline_key" in done.columns and done["baseline_key"].notna().any():
        per_baseline = done.groupby("baseline_key")[candidates].nunique(dropna=False)
        keys = [c for c in candidates if c in SUBJECT or per_baseline[c].max() <= 1]
    return [
        (dict(zip(keys, key, strict=True)), _mean_dense(part)) for key, part in _groups(done, keys)
    ]


def _mean_dense(rows: pd.DataFrame) -> float:
    # each baseline (a seed's) counted once, however many trials it has
    if "baseline_key" in rows.columns and rows["baseline_key"].notna().all():
        return float(rows.groupby("baseline_key")["acc_dense"].mean().mean())
    return float(rows["acc_dense"].mean())


def _groups(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """``(key tuple, rows)`` per distinct ``keys``; all rows as one group when ``keys`` is empty."""
    if not keys:
        return [((), df)]
    return list(df.groupby(list(keys), dropna=False, sort=True))


def _is_none(df: pd.DataFrame) -> pd.Series:
    if "method" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["method"].isin(["none"])


def _by(df: pd.DataFrame, by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return ["method", *varying(df)]
    columns = [by] if isinstance(by, str) else list(by)
    for column in columns:
        if column not in df.columns:
            close = difflib.get_close_matches(str(column), map(str, df.columns), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"by={by!r}: {column!r} is not a column of the results{hint}; accepted: "
                "columns of sweep.load_results, such as method, model, finetune.epochs"
            )
    return columns


def _varies(df: pd.DataFrame, column: str) -> bool:
    return column in df.columns and df[column].nunique(dropna=False) > 1


def _is_bookkeeping(column: str) -> bool:
    if column in _BOOKKEEPING or column in _HOW_NOT_WHAT or column.startswith(_BOOKKEEPING_GROUPS):
        return True
    if column in ("device", "schedule", *SUBJECT):
        return False
    return column in METRIC_COLUMNS or ("." not in column and bool(_METRIC_NAME.search(column)))


def _known_by_content(df: pd.DataFrame, column: str) -> bool:
    """Whether every row that names a file in ``column`` has the digest of its content."""
    digest = _BY_CONTENT[column]
    if digest not in df.columns:
        return False
    return bool(df.loc[df[column].notna(), digest].notna().all())


def _pairs(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={_text(values[k])}" for k in keys)


def _text(value: Any) -> str:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return "-"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        short = f"{value:g}"
        return short if float(short) == value else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)
