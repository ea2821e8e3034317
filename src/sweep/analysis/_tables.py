from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

_DIRECTIONS = {"max": 1.0, "maximize": 1.0, "min": -1.0, "minimize": -1.0}


def aggregate(
    df: pd.DataFrame,
    y: str = "acc_finetuned",
    *,
    x: str = "sparsity",
    by: str | Sequence[str] = "method",
    band: str = "std",
) -> pd.DataFrame:
    """Mean of ``y`` (and ``x``) across seeds for each ``by`` and requested amount, with a band.

    Only complete trials count. Trials are grouped by what was asked (``by`` and ``amount``), so
    seeds of one setting form one point even when their achieved sparsities differ slightly.

    Args:
        df: Rows of `sweep.load_results`.
        y: The metric to average (``acc_finetuned``, ``latency_ms``...).
        x: The column for the horizontal axis (``sparsity`` or ``amount``).
        by: Column(s) naming a curve (``method``; ``["method", "model"]``).
        band: ``std`` (one standard deviation) or ``ci95`` (normal 95% interval of the mean).

    Returns:
        One row per curve point: ``by`` columns, ``amount``, ``x``, ``y``, ``y_lo``, ``y_hi``,
        ``n`` (seeds), sorted by ``by`` then ``x``.

    Example:
        >>> df = pd.DataFrame({"status": "complete", "method": "l1", "amount": [0.5, 0.5],
        ...                    "sparsity": [0.5, 0.5], "acc_finetuned": [0.9, 0.8]})
        >>> aggregate(df)[["method", "sparsity", "acc_finetuned", "n"]].to_dict("records")
        [{'method': 'l1', 'sparsity': 0.5, 'acc_finetuned': 0.85, 'n': 2}]
    """
    if band not in ("std", "ci95"):
        raise ValueError(f"band={band!r}; accepted: std | ci95")
    by = [by] if isinstance(by, str) else list(by)
    keys = list(dict.fromkeys([*by, "amount"]))
    done = _complete(df)
    grouped = done.groupby(keys, dropna=False)
    out = grouped.agg(**{x: (x, "mean"), y: (y, "mean"), "_sd": (y, "std"), "n": (y, "count")})
    out["_sd"] = out["_sd"].fillna(0.0)
    half = out["_sd"] if band == "std" else 1.96 * out["_sd"] / np.sqrt(out["n"])
    out[f"{y}_lo"], out[f"{y}_hi"] = out[y] - half, out[y] + half
    out = out.drop(columns="_sd").reset_index()
    return out.sort_values([*by, x], kind="stable").reset_index(drop=True)


def pareto_front(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The rows no other row beats: at least as good in every objective and better in one.

    Rows with a missing objective value are left out; rows with identical objective values
    are all kept (none dominates the other).

    Args:
        df: Any rows, typically `sweep.load_results`.
        objectives: Column -> ``max`` or ``min`` (``maximize``/``minimize`` also accepted).

    Returns:
        The non-dominated rows, in their original order and with their original index.

    Example:
        >>> df = pd.DataFrame({"acc": [0.9, 0.8, 0.7], "sparsity": [0.5, 0.9, 0.4]})
        >>> pareto_front(df, {"acc": "max", "sparsity": "max"}).index.tolist()
        [0, 1]
    """
    if not objectives:
        raise ValueError("objectives is empty; accepted: a mapping of columns to max | min")
    for column, direction in objectives.items():
        if column not in df.columns:
            raise ValueError(
                f"objective {column!r} is not a column; columns are {list(df.columns)}"
            )
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction {direction!r} for {column!r}; accepted: max | min")
    rows = df.dropna(subset=list(objectives))
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
    by: str = "method",
) -> pd.DataFrame:
    """Per ``by``, the highest mean sparsity whose mean ``metric`` stays within ``tolerance`` of
    the dense baseline (``acc_dense``, averaged over the same trials).

    Returns:
        One row per ``by`` value: ``amount``, ``sparsity``, ``metric``, ``acc_dense``, ``drop``
        (dense minus metric), ``compression`` (1 / density) and ``n``; NaN where no setting
        stays within the tolerance.
    """
    points = aggregate(df, metric, x="sparsity", by=by)
    dense = _complete(df).groupby([by, "amount"])["acc_dense"].mean().rename("acc_dense")
    points = points.merge(dense.reset_index(), on=[by, "amount"])
    points["drop"] = points["acc_dense"] - points[metric]
    rows = []
    for name, group in points.groupby(by, sort=True):
        ok = group[group["drop"] <= tolerance + 1e-9]  # "within 1%" includes 0.99 - 0.98
        best = ok.loc[ok["sparsity"].idxmax()] if len(ok) else None
        rows.append(
            {
                by: name,
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
        rows, columns=[by, "amount", "sparsity", metric, "acc_dense", "drop", "compression", "n"]
    )


def compression_ratio(sparsity: float | np.ndarray | pd.Series):
    """1 / density, as the pruning literature reports it: sparsity 0.9 -> 10x.

    Example:
        >>> compression_ratio(0.9)
        10.000000000000002
    """
    return 1.0 / (1.0 - sparsity)


def layer_sparsity(layers: pd.DataFrame, results: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-layer sparsity (1 - nonzero / numel) of each trial, joined with its method and amount.

    Args:
        layers: `sweep.load_layers`.
        results: `sweep.load_results`, to add ``method``, ``amount`` and ``seed``.
    """
    out = layers.assign(sparsity=1.0 - layers["nonzero"] / layers["numel"])
    if results is not None:
        out = out.merge(
            results[["trial_key", "method", "amount", "seed"]].drop_duplicates("trial_key"),
            on="trial_key",
            how="left",
        )
    return out


def _complete(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "complete"] if "status" in df.columns else df
