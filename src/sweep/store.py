"""The results store: one Parquet file per trial, safe for many concurrent writers.

Layout under the store folder::

    trials/<row id>.parquet   one row: fixed metric columns plus the flattened config
    layers/<row id>.parquet   per-layer sparsity of that trial (long format)
    baselines/                the dense-baseline cache (see sweep.baseline)

Each file is written to a hidden temporary name and renamed into place, so a reader or a kill
at any moment sees a trial whole or not at all; the layers file is written first and the trial
row last, so a row always has its layers. No file is ever appended to, so writers on any number
of processes or machines (over a shared filesystem) never interleave.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweep._files import atomic_write

__all__ = [
    "DEFAULT_PATH",
    "METRIC_COLUMNS",
    "load_layers",
    "load_results",
    "read_row",
    "row_id",
    "write_trial",
]

DEFAULT_PATH = "results"

# Fixed columns, in the order they lead every DataFrame; flattened config columns follow.
METRIC_COLUMNS = (
    "trial_key",
    "status",
    "error",
    "model",
    "dataset",
    "method",
    "amount",
    "seed",
    "device",
    "acc_dense",
    "acc_pruned",
    "acc_finetuned",
    "loss_finetuned",
    "sparsity",
    "params",
    "params_nonzero",
    "flops_dense",
    "flops",
    "latency_ms_dense",
    "latency_ms",
    "speedup",
    "size_bytes_dense",
    "size_bytes",
    "compacted",
    "compact_error",
    "time_prune_s",
    "time_finetune_s",
    "time_total_s",
    "started_at",
)
# The fixed columns that name or describe a trial rather than measure it.
LABEL_COLUMNS = frozenset(
    {
        "trial_key",
        "status",
        "error",
        "model",
        "dataset",
        "method",
        "device",
        "started_at",
        "compacted",
        "compact_error",
    }
)
LAYER_COLUMNS = ("trial_key", "layer", "param", "numel", "nonzero", "in_scope")


def row_id(trial_key: str | None, study: str | None = None, number: int | None = None) -> str:
    """File name of a trial's row: ``<study>-<number>`` for Optuna trials (two trials of a study
    may share a config), else the trial key (a rerun of the same config replaces its row)."""
    if study is not None and number is not None:
        return f"{study}-{int(number):05d}"
    return str(trial_key)


def write_trial(
    path: str | os.PathLike,
    row: Mapping[str, Any],
    layers: Sequence[Mapping[str, Any]] = (),
    *,
    row_id: str | None = None,
) -> Path:
    """Write one trial's row (and its per-layer rows) atomically; return the row's file.

    Args:
        path: The store folder.
        row: Column name to scalar; lists and dicts are stored as JSON text.
        layers: Per-layer rows; ``trial_key`` is added to each.
        row_id: File name stem; defaults to ``row["trial_key"]``. Writing the same id again
            replaces that row (a rerun of the same trial), it never duplicates it.
    """
    root = Path(path)
    row_id = row_id or str(row["trial_key"])
    (root / "trials").mkdir(parents=True, exist_ok=True)
    (root / "layers").mkdir(parents=True, exist_ok=True)
    if layers:
        table = pa.Table.from_pylist([{"trial_key": row["trial_key"], **r} for r in layers])
        atomic_write(root / "layers" / f"{row_id}.parquet", lambda f: pq.write_table(table, f))
    table = pa.Table.from_pylist([{k: _scalar(v) for k, v in row.items()}])
    target = root / "trials" / f"{row_id}.parquet"
    atomic_write(target, lambda f: pq.write_table(table, f))
    return target


def read_row(path: str | os.PathLike, row_id: str) -> dict[str, Any] | None:
    """The stored row ``row_id`` as a dict, or ``None`` when the store does not have it."""
    target = Path(path) / "trials" / f"{row_id}.parquet"
    if not target.exists():
        return None
    return pq.read_table(target).to_pylist()[0]


def load_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """All trials in the store as one DataFrame, one row per trial, oldest first.

    Args:
        path: The store folder (default ``results`` in the current folder).

    Returns:
        The fixed metric columns first, then config columns (``finetune.lr``...) sorted.
        Columns that appeared later in the store's life are missing (NA) in older rows.

    Example:
        >>> df = load_results("results")  # doctest: +SKIP
        >>> df.groupby("method").sparsity.max()  # doctest: +SKIP
    """
    df = _read_folder(Path(path or DEFAULT_PATH), "trials", METRIC_COLUMNS)
    if len(df) and "started_at" in df.columns:
        df = df.sort_values("started_at", kind="stable").reset_index(drop=True)
    lead = [c for c in METRIC_COLUMNS if c in df.columns]
    return df[lead + sorted(c for c in df.columns if c not in METRIC_COLUMNS)]


def load_layers(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Per-layer sparsity of every trial: ``trial_key, layer, param, numel, nonzero, in_scope``."""
    root = Path(path or DEFAULT_PATH)
    layers = _read_folder(root, "layers", LAYER_COLUMNS)
    # A trial killed between its two files leaves layers without a row: not part of the store.
    keys = set(_read_folder(root, "trials", ("trial_key",), columns=["trial_key"])["trial_key"])
    return layers[layers["trial_key"].isin(keys)].reset_index(drop=True)


def _read_folder(
    root: Path, folder: str, empty_columns: Sequence[str], columns: list[str] | None = None
) -> pd.DataFrame:
    if not root.is_dir():
        raise FileNotFoundError(
            f"no results store at {str(root)!r}: run a trial first (python -m sweep) "
            "or pass the store folder (store.path of the runs)"
        )
    files = sorted(p for p in (root / folder).glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pd.DataFrame(columns=list(empty_columns))
    tables = [pq.read_table(f, columns=columns) for f in files]
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.to_pandas()


def _scalar(value: Any) -> Any:
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, dt.datetime):
        # one timezone for every row; naive times (Optuna's) are local time
        return value.astimezone(dt.timezone.utc)
    return value
