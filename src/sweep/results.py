"""Reading results: `load_results` and `load_layers`, from a store folder or from a study.

A store folder is read by `sweep.store` alone (pandas and pyarrow); a study's storage by
`sweep.search`, imported only when one is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from sweep import store

__all__ = ["load_layers", "load_results"]


def load_results(
    path: str | os.PathLike | None = None,
    *,
    strict: bool = False,
    storage: Any = None,
    study: str | None = None,
) -> pd.DataFrame:
    """All trials in the store as one DataFrame, one row per trial, oldest first.

    Column types: fixed columns have declared types (``amount`` int64 when every amount is an
    int, a count; float64 when ints and floats mix, values >= 1 then counts and < 1
    fractions). A config column whose files agree keeps its type; int and float give float;
    naive and aware times give UTC times; any other mix gives text, each value as it would be
    typed on the command line (``true``, ``2``, ``fro``). Integer columns with missing values
    are pandas' nullable Int64.

    Args:
        path: The store folder (default ``results`` in the current folder).
        strict: Raise ``ValueError`` on a damaged or foreign file, or a value that cannot take
            its column's type, instead of skipping it (or reading it as missing) with a warning.
        storage, study: Read the rows of Optuna study ``study`` from its storage (a URL such as
            ``postgresql://...``, a journal file path, or an Optuna storage) instead of a
            folder: every worker's rows, wherever its store was. The same DataFrame as the
            store of a sweep whose workers shared it.

    Returns:
        The fixed metric columns first, then config columns (``finetune.lr``...) sorted.
        Columns that appeared later in the store's life are missing (NA) in older rows,
        but for ``schedule``: rows from before it existed are ``one_shot``, as they ran.

    Example:
        >>> df = load_results("results")  # doctest: +SKIP
        >>> df.groupby("method").sparsity.max()  # doctest: +SKIP
    """
    if storage is not None or study is not None:
        from sweep.search._rows import study_rows

        rows = study_rows(storage, study, "row")
        return store.results_frame(store.rows_table(rows, "row", strict))
    df = store.load_results(path, strict=strict)
    # where the rows' files are (model_file...), for `sweep.load_model(row)`: pandas keeps
    # ``attrs`` through sorting, filtering and taking a row
    df.attrs["store"] = str(
        Path(path if path is not None else store.DEFAULT_PATH).expanduser().resolve()
    )
    return df


def load_layers(
    path: str | os.PathLike | None = None,
    *,
    strict: bool = False,
    storage: Any = None,
    study: str | None = None,
) -> pd.DataFrame:
    """Per-layer sparsity of every trial: ``trial_key, layer, param, numel, nonzero, in_scope,
    amount`` (the amount the layer was pruned with; missing out of scope and in older stores).

    Args:
        path: The store folder (default ``results`` in the current folder).
        strict: Raise on a damaged or foreign file instead of skipping it with a warning.
        storage, study: Read them from an Optuna study's storage instead (`load_results`).
    """
    if storage is not None or study is not None:
        from sweep.search._rows import study_rows

        rows = study_rows(storage, study, "layers")
        return store.layers_frame(store.rows_table(rows, "layers", strict))
    return store.load_layers(path, strict=strict)
