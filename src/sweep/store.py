"""The results store: one Parquet file per trial, safe for many concurrent writers.

Layout under the store folder::

    trials/<row id>.parquet   one row: fixed metric columns plus the flattened config
    layers/<row id>.parquet   per-layer sparsity of that trial (long format)
    models/<row id>.pt        its final model (store.models; read with sweep.load_model)
    baselines/                the dense-baseline cache (see sweep.baseline)
    index/                    the rows of trials/ and layers/ in a few files, so that a load
                              reads only what changed since (a cache: safe to delete)

Each file is written to a hidden temporary name and renamed into place, so a reader or a kill
at any moment sees a trial whole or not at all; the layers file is written first and the trial
row last, so a row always has its layers. No file is ever appended to, so writers on any number
of processes or machines (over a shared filesystem) never interleave. Files get ``0o666`` less
the writer's umask, so a store shared by a group stays readable by the group.

Reading reads each file's bytes once and parses them from memory, so a reader racing a rewrite
of the same row sees the old row or the new one. A file that is not a Parquet file, or one
without a ``trial_key`` column, is skipped with one warning naming it (``strict=True`` raises).

Column types, so that one odd row never makes the store unreadable:

- Fixed columns have declared types, applied when reading whatever a file holds: metrics and
  counts are float64 or int64, labels text, ``compacted`` and ``baseline_trained`` bool,
  ``started_at`` a UTC timestamp, ``optuna.trial`` int, ``optuna.study`` text. ``amount`` is
  int64 when every row's amount is an int (a count) and float64 when ints and floats mix
  (values >= 1 are then counts, values < 1 fractions). A value that cannot take its column's
  type is read as missing, with a warning.
- Any other (config) column takes one type from the types its files hold: types that agree
  are kept; int and float give float; a missing value takes the other files' type; naive and
  aware timestamps give UTC timestamps; anything else gives text, each value written as it
  would be typed on the command line (``true``, ``2``, ``0.5``, ``fro``).

Integer columns stay integers: int64, or pandas' nullable Int64 where some rows lack a value
(bool likewise: nullable boolean).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sweep._files import atomic_write
from sweep.errors import ConfigError

__all__ = [
    "DEFAULT_PATH",
    "LABEL_COLUMNS",
    "LAYER_COLUMNS",
    "METRIC_COLUMNS",
    "check_writable",
    "clean",
    "decode_rows",
    "encode_rows",
    "index_written",
    "layers_frame",
    "load_layers",
    "load_results",
    "read_layers",
    "read_row",
    "results_frame",
    "row_id",
    "rows_table",
    "write_trial",
]

# Skipped files are reported through logging, not warnings: one line each (warnings adds the
# source line), and runs under Hydra keep it in the job's log beside the trial's own messages.
log = logging.getLogger(__name__)

DEFAULT_PATH = "results"

# Fixed columns, in the order they lead every DataFrame; flattened config columns follow.
METRIC_COLUMNS = (
    "trial_key",
    "status",
    "error",
    "model",
    "dataset",
    "method",
    "schedule",
    "amount",
    "seed",
    "device",
    "gpu",
    "fused",
    "acc_dense",
    "acc_pruned",
    "acc_recalibrated",
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
    "latency_ms_dense_low",
    "latency_ms_dense_high",
    "latency_ms_low",
    "latency_ms_high",
    "speedup_low",
    "speedup_high",
    "latency_rounds",
    "latency_noisy",
    "size_bytes_dense",
    "size_bytes",
    "compacted",
    "compact_error",
    "skipped_layers",
    "recalibrated",
    "model_file",
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
        "schedule",
        "device",
        "gpu",
        "fused",
        "started_at",
        "compacted",
        "recalibrated",
        "latency_noisy",
        "compact_error",
        "skipped_layers",
        "model_file",
    }
)
LAYER_COLUMNS = ("trial_key", "layer", "param", "numel", "nonzero", "in_scope", "amount")

_TEXT, _INT, _FLOAT, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
_UTC = "UTC"
# ``amount`` is a count (int) or a fraction (float): int64 or float64, decided by the store.
_NUMBER = "int64, or float64 when ints and floats mix"

# The type every reader gives a fixed column, whatever type a file holds.
_ROW_TYPES: dict[str, pa.DataType | str] = {
    **dict.fromkeys(
        ("trial_key", "status", "error", "model", "dataset", "method", "schedule", "device", "gpu"),
        _TEXT,
    ),
    "amount": _NUMBER,
    **dict.fromkeys(("seed", "params", "params_nonzero", "flops_dense", "flops"), _INT),
    "fused": _INT,  # the size of the group the trial finetuned in; 1: alone
    **dict.fromkeys(("size_bytes_dense", "size_bytes"), _INT),
    **dict.fromkeys(("acc_dense", "acc_pruned", "acc_recalibrated", "acc_finetuned"), _FLOAT),
    "loss_finetuned": _FLOAT,
    **dict.fromkeys(("sparsity", "latency_ms_dense", "latency_ms", "speedup"), _FLOAT),
    **{
        f"{name}_{end}": _FLOAT
        for name in ("latency_ms_dense", "latency_ms", "speedup")
        for end in ("low", "high")
    },
    "latency_rounds": _INT,
    "latency_noisy": _BOOL,
    **dict.fromkeys(("time_prune_s", "time_finetune_s", "time_total_s"), _FLOAT),
    "compacted": _BOOL,
    "recalibrated": _BOOL,
    "compact_error": _TEXT,
    "skipped_layers": _TEXT,
    "model_file": _TEXT,
    "started_at": pa.timestamp("us", tz=_UTC),
    "optuna.study": _TEXT,
    "optuna.trial": _INT,
    "baseline_key": _TEXT,
    "baseline_trained": _BOOL,
    "dataset.fingerprint": _TEXT,
}
_LAYER_TYPES: dict[str, pa.DataType | str] = {
    **dict.fromkeys(("trial_key", "layer", "param"), _TEXT),
    **dict.fromkeys(("numel", "nonzero"), _INT),
    "in_scope": _BOOL,
    "amount": _NUMBER,  # missing for layers out of scope, and in stores written before it
}
# Columns the readers add to each row while combining files: the row's file (its row id) and
# its place in that file; and, in the index, what the file was when its rows were read.
_FILE, _ROW = "__file", "__row"
_INO, _MTIME, _SIZE = "__ino", "__mtime_ns", "__size"
_INDEX = "index"
_NULLABLE = {_INT: pd.Int64Dtype(), _BOOL: pd.BooleanDtype()}
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def row_id(
    trial_key: str | None,
    study: str | None = None,
    number: int | None = None,
    study_uid: str | None = None,
) -> str:
    """File name of a trial's row: ``<study>-<uid>-<number>`` for Optuna trials (two trials of a
    study may share a config; two studies may share a name, in other storages or after the
    storage was deleted, but not a uid), else the trial key (a rerun of the same config
    replaces its row)."""
    if study is not None and number is not None:
        uid = f"-{study_uid}" if study_uid else ""
        return f"{study}{uid}-{int(number):05d}"
    return str(trial_key)


def write_trial(
    path: str | os.PathLike,
    row: Mapping[str, Any],
    layers: Sequence[Mapping[str, Any]] = (),
    *,
    row_id: str | None = None,
    replace_complete: bool = False,
) -> Path:
    """Write one trial's row (and its per-layer rows) atomically; return the row's file.

    Args:
        path: The store folder.
        row: Column name to scalar; lists and dicts are stored as JSON text.
        layers: Per-layer rows; ``trial_key`` is added to each.
        row_id: File name stem; defaults to ``row["trial_key"]``. Writing the same id again
            replaces that row (a rerun of the same trial) and its layers, it never duplicates
            them; but a row that did not complete never replaces a complete one (a rerun that
            failed, out of memory or on a damaged file, loses nothing that ran): that one,
            its layers and its model stay, with a warning.
        replace_complete: Replace a complete row all the same (a study trial failed as stale
            while its stalled worker went on to store it complete: the study says failed).

    Raises:
        OSError: The store cannot be written (full disk, no permission); the message names the
            file, and no partial file is left.
    """
    root = Path(path).expanduser()
    row_id = row_id or str(row["trial_key"])
    target = root / "trials" / f"{row_id}.parquet"
    if not replace_complete and row.get("status") != "complete" and _status(target) == "complete":
        log.warning(
            "trial %s %s; the complete row already in the store stays, with its model: %s",
            row_id,
            row.get("status"),
            target,
        )
        return target
    (root / "trials").mkdir(parents=True, exist_ok=True)
    (root / "layers").mkdir(parents=True, exist_ok=True)
    layers_file = root / "layers" / f"{row_id}.parquet"
    if layers:
        table = pa.Table.from_pylist([{"trial_key": row["trial_key"], **r} for r in layers])
        atomic_write(layers_file, lambda f: pq.write_table(table, f))
    table = pa.Table.from_pylist([{k: _scalar(v) for k, v in row.items()}])
    atomic_write(target, lambda f: pq.write_table(table, f))
    if not layers:
        # The replaced row's layers would otherwise pass for this row's (same trial key).
        layers_file.unlink(missing_ok=True)
    if not row.get("model_file"):
        (root / "models" / f"{row_id}.pt").unlink(missing_ok=True)  # likewise its model
    _WRITTEN.add(os.path.abspath(root))
    return target


def _status(file: Path) -> str | None:
    """The ``status`` of the row in ``file``; ``None`` when there is none, or it is unreadable."""
    if not file.exists():
        return None
    table = _read_file(file, strict=False, columns=["status"])
    if table is None or not table.num_rows or "status" not in table.column_names:
        return None
    return table.column("status")[0].as_py()


# The stores this process wrote rows to since `index_written` last brought their index up to date.
_WRITTEN: set[str] = set()


def index_written(*paths: str | os.PathLike) -> None:
    """Bring the index of ``paths`` and of every store this process wrote rows to up to date,
    as a load would (`_indexed`), so that the first `load_results` after a sweep reads a few
    index files instead of one file per trial. Sweeps call it when they end. It reads the rows
    that other writers added too; a path that is not a store folder is passed over.

    Never raises and never warns (the index is a cache; a damaged file is reported by the load
    that skips it).
    """
    roots = {os.path.abspath(os.path.expanduser(p)) for p in paths} | _WRITTEN
    _WRITTEN.clear()
    log.addFilter(_drop)
    try:
        for root in sorted(roots):
            if (Path(root) / "trials").is_dir():
                for folder in ("trials", "layers"):
                    _indexed(Path(root) / folder, strict=False)
    except Exception as e:  # only the reads the index would save are lost
        log.debug("results index of %s not brought up to date: %s", roots, e)
    finally:
        log.removeFilter(_drop)


def _drop(record: logging.LogRecord) -> bool:
    return False


def read_row(
    path: str | os.PathLike, row_id: str, *, strict: bool = False
) -> dict[str, Any] | None:
    """The stored row ``row_id`` as a dict, or ``None`` when the store does not have it.

    Fixed columns have their declared types (see the module docstring). A damaged or foreign
    file counts as absent, with a warning; with ``strict`` it raises ``ValueError``.
    """
    target = Path(path).expanduser() / "trials" / f"{row_id}.parquet"
    table = _read_file(target, strict)
    if table is None or not table.num_rows:
        return None
    table = _labelled(table, row_id)
    schema = _unify([table.schema], _ROW_TYPES)
    row = _conform([(target.parent, table)], schema, strict).to_pylist()[0]
    del row[_FILE], row[_ROW]
    return row


def load_results(path: str | os.PathLike | None = None, *, strict: bool = False) -> pd.DataFrame:
    """All trials in the store folder as one DataFrame, one row per trial, oldest first.

    `sweep.load_results` is this function, and also reads a study's storage instead; its
    docstring says what the columns are and hold.

    Args:
        path: The store folder (default ``results`` in the current folder).
        strict: Raise ``ValueError`` on a damaged or foreign file, or a value that cannot take
            its column's type, instead of skipping it (or reading it as missing) with a warning.
    """
    return results_frame(_read_folder(_existing(path) / "trials", _ROW_TYPES, strict))


def load_layers(path: str | os.PathLike | None = None, *, strict: bool = False) -> pd.DataFrame:
    """Per-layer sparsity of every trial in the store folder (`sweep.load_layers`)."""
    root = _existing(path)
    layers = _read_folder(root / "layers", _LAYER_TYPES, strict)
    if layers is None:
        return pd.DataFrame(columns=list(LAYER_COLUMNS))
    trials = _read_folder(root / "trials", _ROW_TYPES, strict)
    keys = pa.array([], _TEXT) if trials is None else trials["trial_key"].combine_chunks()
    # A trial killed between its two files leaves layers without a row: not part of the store.
    return layers_frame(layers.filter(pc.is_in(layers["trial_key"], value_set=keys)))


def rows_table(
    labelled: Iterable[tuple[str, Sequence[Mapping[str, Any]]]], kind: str, strict: bool = False
) -> pa.Table | None:
    """Rows from elsewhere (a study's trials) as `load_results` or `load_layers` reads them
    from files: ``labelled`` gives each file's name (its row id) and rows; ``kind`` is
    ``row`` or ``layers``. ``None`` when there are none.

    Rows of one set of column types become one table in one call: per-row work is the
    grouping alone.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for label, rows in labelled:
        for i, r in enumerate(rows):
            row = {k: _scalar(v) for k, v in r.items()}
            signature = tuple((k, type(v)) for k, v in row.items())
            groups.setdefault(signature, []).append({**row, _FILE: label, _ROW: i})
    tables = ((None, pa.Table.from_pylist(members)) for members in groups.values())
    return _combine(tables, _ROW_TYPES if kind == "row" else _LAYER_TYPES, strict)


def results_frame(table: pa.Table | None) -> pd.DataFrame:
    """The trials table (`_read_folder`, `rows_table`) as `load_results` returns it."""
    if table is None:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    # stable, missing times last: rows that started together keep their files' order
    by = [("started_at", "ascending")] * ("started_at" in table.column_names)
    table = table.take(pc.sort_indices(table, [*by, (_FILE, "ascending")]))
    table = table.drop_columns([_FILE, _ROW])
    lead = [c for c in METRIC_COLUMNS if c in table.column_names]
    df = _to_pandas(table.select(lead + sorted(set(table.column_names) - set(lead))))
    if "schedule" in df.columns:  # rows from before schedules existed were pruned at once
        df["schedule"] = df["schedule"].fillna("one_shot")
    return df


def layers_frame(table: pa.Table | None) -> pd.DataFrame:
    """The layers table (`_read_folder`, `rows_table`) as `load_layers` returns it."""
    if table is None:
        return pd.DataFrame(columns=list(LAYER_COLUMNS))
    # a trial's layers in the order it wrote them, trials in the order of their files
    order = pc.sort_indices(table, [(_FILE, "ascending"), (_ROW, "ascending")])
    return _to_pandas(table.take(order).drop_columns([_FILE, _ROW]))


def read_layers(path: str | os.PathLike, row_id: str) -> list[dict[str, Any]]:
    """The per-layer rows stored with row ``row_id`` (none when it has none)."""
    table = _read_file(Path(path).expanduser() / "layers" / f"{row_id}.parquet", strict=False)
    return [] if table is None else table.to_pylist()


def encode_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as JSON text that `decode_rows` reads back with their types (times included):
    how a row travels in an Optuna trial's user attributes."""
    return json.dumps([dict(r) for r in rows], default=_json_value, allow_nan=True)


def encode_row(row: Mapping[str, Any]) -> str:
    """A trial's row as its Optuna trial holds it (user attribute ``row``): without
    ``store_file``, which names one worker's disk."""
    return encode_rows([{k: v for k, v in row.items() if k != "store_file"}])


# Receives a trial's row and per-layer rows just before `write_trial` writes them to the store
# (`sweep.trial.run_trial`'s ``on_row``).
RowCallback = Callable[[dict[str, Any], Sequence[Mapping[str, Any]]], None]


def decode_rows(text: str) -> list[dict[str, Any]]:
    return json.loads(text, object_hook=_from_json)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _from_json(node: dict[str, Any]) -> Any:
    if set(node) == {"$datetime"}:
        return dt.datetime.fromisoformat(node["$datetime"])
    return node


def clean(path: str | os.PathLike, older_than_s: float = 3600) -> list[Path]:
    """Remove what killed writers left: temporary ``.*.tmp`` files, and layers and models
    without a row.

    Readers already ignore both; this only keeps them from piling up. Files younger than
    ``older_than_s`` stay, since they may belong to a writer still running, and so does every
    file not named as the store names its own (``models/best.pt``). A folder without
    ``trials/`` is not a store: nothing in it is touched.

    Args:
        path: The store folder.
        older_than_s: Minimum age (since last modification) of a file to remove, in seconds.

    Returns:
        The removed files, sorted.

    Example:
        >>> clean("results", older_than_s=24 * 3600)  # doctest: +SKIP
        [PosixPath('results/trials/.l1-00003.parquet.k2j4x9.tmp')]
    """
    root = Path(path).expanduser()
    if not (root / "trials").is_dir():
        return []  # not a store: nothing here was written by prune-sweep
    cutoff = time.time() - older_than_s
    rows = {p.stem for p in _listing(root / "trials")}
    leftovers = [
        entry
        for folder in ("trials", "layers", "models", "baselines", _INDEX)
        for entry in _entries(root / folder)
        if _TEMPORARY.fullmatch(entry.name)
    ]
    # only files named as the store names them: a trial key, or <study>-<uid>-<number> of a
    # study with rows here; a file of the user's own (ckpt-step-10000.pt) stays
    studies = {m.group(1) for stem in rows if (m := _STUDY_ROW.fullmatch(stem))}

    def orphan(stem: str) -> bool:
        if stem in rows:
            return False
        study = _STUDY_ROW.fullmatch(stem)
        return bool(_TRIAL_KEY.fullmatch(stem)) or (study is not None and study[1] in studies)

    leftovers += [
        entry
        for entry in _entries(root / "models")
        if entry.name.endswith(".pt") and orphan(entry.name.removesuffix(".pt"))
    ]
    leftovers += [
        entry
        for entry in _entries(root / "layers")
        if _is_row_file(entry.name) and orphan(entry.name.removesuffix(".parquet"))
    ]
    removed = []
    for entry in leftovers:
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # another cleaner got there first, or a store shared read-only
            continue
    return sorted(removed)


# what `row_id` names (a trial key, or <study>[-<uid>]-<number>) and `atomic_write`'s temporaries
_TRIAL_KEY = re.compile(r"[0-9a-f]{16}")
_STUDY_ROW = re.compile(r"(.+)-[0-9]{5,}")
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # mkstemp's 8 random characters


def check_writable(
    path: str | os.PathLike,
    *,
    name: str = "store.path",
    folders: Sequence[str] = ("trials", "layers"),
) -> None:
    """Make sure trials can be written under ``path`` before any training starts.

    Creates the store folder (with ``trials/`` and ``layers/``) if missing, and writes and
    removes a small probe file.

    Args:
        path: The store folder.
        name: The setting ``path`` came from, for the message.
        folders: The subfolders to create; the probe is written in the first (in ``path``
            itself when there are none: ``store.baselines``).

    Raises:
        ConfigError: ``path`` is a file or inside one, or cannot be written; the message names
            the value and what is accepted.

    Example:
        >>> check_writable("/etc/passwd")  # doctest: +SKIP
        sweep.errors.ConfigError: store.path='/etc/passwd' is a file; accepted: a folder ...
    """
    root = Path(path).expanduser()
    value = f"{name}={str(path)!r}"
    try:
        blocking = next((p for p in (root, *root.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            where = "is a file" if blocking == root else f"is inside a file ({str(blocking)!r})"
            raise ConfigError(f"{value} {where}; accepted: a folder (created if missing)")
        root.mkdir(parents=True, exist_ok=True)
        for folder in folders:
            (root / folder).mkdir(exist_ok=True)
        probing = root / folders[0] if folders else root
        fd, probe = tempfile.mkstemp(dir=probing, prefix=".probe.", suffix=".tmp")
        try:
            # a full disk may accept the name and refuse the bytes, or refuse them only on sync
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"{value} is not writable ({e.strerror or e}); accepted: a folder you can write to"
        ) from e


def _existing(path: str | os.PathLike | None) -> Path:
    root = Path(path or DEFAULT_PATH).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"no results store at {str(root)!r}: run a trial first (python -m sweep) "
            "or pass the store folder (store.path of the runs)"
        )
    own = ("trials", "layers", "models", "baselines", _INDEX, "optuna.db", "sensitivity")
    if not any((root / name).exists() for name in own):
        # no store's own entry, but stores inside: a project's folder holding several, not a
        # store with no trials yet (whose first baseline may still be training)
        found = [*root.glob("*/trials"), *root.glob("*/*/trials")]
        inside = sorted(str(p.parent) for p in found if p.is_dir())
        if inside:
            more = f" and {len(inside) - 3} more" if len(inside) > 3 else ""
            raise FileNotFoundError(
                f"{str(root)!r} is not a results store (it has no trials/ folder); accepted: a "
                f"store inside it: {', '.join(inside[:3])}{more}"
            )
    return root


def _read_folder(
    folder: Path, types: Mapping[str, pa.DataType | str], strict: bool, *, index: bool = True
) -> pa.Table | None:
    """Every file's rows, one type per column, with each row's file name (``__file``) and its
    place in the file (``__row``); ``None`` when there are no files.

    With ``index``, rows come from the store's index where their files are unchanged since
    it was written, and the index is brought up to date (see `_indexed`); without, every file
    is read.
    """
    sources = _indexed(folder, strict) if index else _each_file(folder, strict)
    return _combine(sources, types, strict)


def _each_file(folder: Path, strict: bool) -> list[tuple[Any, pa.Table]]:
    files = _listing(folder)
    tables = zip(files, _read_files(files, strict), strict=True)
    return [(folder, _labelled(table, file.stem)) for file, table in tables if table is not None]


def _labelled(table: pa.Table, label: str) -> pa.Table:
    """``table`` with the name of its file and each row's place in it."""
    n = table.num_rows
    table = table.append_column(_FILE, pa.array([label] * n, _TEXT))
    return table.append_column(_ROW, pa.array(range(n), _INT))


def _indexed(folder: Path, strict: bool) -> list[tuple[Any, pa.Table]]:
    """The rows of ``folder``'s files, read from the index where it is current.

    The index (``<store>/index/<folder>-<schema>.parquet``) holds, for each set of column
    types, the rows of every file with those types, each with its file's name, inode,
    modification time and size. Rows whose file still has all four are taken from it; any other
    file is read (a writer's rename gives a new inode, so a rewritten row is always read
    again), and the segments that changed are written again, atomically. The index is a cache:
    a damaged, foreign or missing segment only costs the reads it would have saved, and a store
    that cannot be written is read file by file.
    """
    stamps: dict[str, tuple[int, int, int]] = {}
    for entry in _entries(folder):
        if _is_row_file(entry.name):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed since the listing
                continue
            stamps[entry.name.removesuffix(".parquet")] = (st.st_ino, st.st_mtime_ns, st.st_size)
    cache = folder.parent / _INDEX
    segments: dict[str, pa.Table] = {}
    changed: set[str] = set()
    covered: set[str] = set()
    read: list[pa.Table] = []
    for file in sorted(cache.glob(f"{folder.name}-*.parquet")):
        table = _read_segment(file)
        if table is None:
            changed.add(file.name)
            continue
        names = table.column(_FILE).to_pylist()
        current = [
            (stamps.get(n) == s and n not in covered)
            for n, s in zip(names, _stamps(table), strict=True)
        ]
        if not all(current):
            changed.add(file.name)
            table = table.filter(pa.array(current, pa.bool_()))
        covered.update(table.column(_FILE).to_pylist())
        segments[file.name] = table
    new: dict[str, list[tuple[str, pa.Table]]] = {}
    unread = sorted(stamps.keys() - covered)
    for name, table in zip(
        unread, _read_files([folder / f"{n}.parquet" for n in unread], strict), strict=True
    ):
        if table is not None:
            table = table.replace_schema_metadata(None)
            new.setdefault(_schema_key(table.schema), []).append((name, table))
    for key, files in new.items():
        names = [name for name, t in files for _ in range(t.num_rows)]
        table = pa.concat_tables([t for _, t in files])
        extra = {
            _FILE: pa.array(names, _TEXT),
            _ROW: pa.array([i for _, t in files for i in range(t.num_rows)], _INT),
            **{
                column: pa.array([stamps[n][k] for n in names], _INT)
                for k, column in enumerate((_INO, _MTIME, _SIZE))
            },
        }
        for column, values in extra.items():
            table = table.append_column(column, values)
        new[key] = table
    for key, table in new.items():
        segment = f"{folder.name}-{key}.parquet"
        old = segments.get(segment)
        if old is not None and old.schema.equals(table.schema):
            table = pa.concat_tables([old, table])
        elif old is not None:  # written by another version: replaced, its rows kept
            read.append(old)
        segments[segment] = table
        changed.add(segment)
    _write_index(cache, {name: segments.get(name) for name in changed})
    tables = [*segments.values(), *read]
    return [(folder, t.drop_columns([_INO, _MTIME, _SIZE])) for t in tables]


def _read_segment(file: Path) -> pa.Table | None:
    """One segment of the index, or ``None`` when it cannot be used (it is then rewritten)."""
    try:
        table = pq.read_table(file, use_threads=False)
    except (pa.ArrowException, OSError):
        return None
    if not {_FILE, _ROW, _INO, _MTIME, _SIZE} <= set(table.column_names):
        return None
    return table


def _stamps(table: pa.Table) -> Iterator[tuple[int, int, int]]:
    columns = [table.column(c).to_pylist() for c in (_INO, _MTIME, _SIZE)]
    return zip(*columns, strict=True)


def _schema_key(schema: pa.Schema) -> str:
    return hashlib.sha256(schema.serialize().to_pybytes()).hexdigest()[:16]


def _write_index(cache: Path, segments: Mapping[str, pa.Table | None]) -> None:
    """Write (or, for ``None`` or no rows, remove) the changed segments; a store that cannot
    be written keeps no index."""
    try:
        for name, table in segments.items():
            if table is None or not table.num_rows:
                (cache / name).unlink(missing_ok=True)
                continue
            cache.mkdir(exist_ok=True)
            atomic_write(cache / name, lambda f, t=table: pq.write_table(t, f))
    except OSError as e:
        log.debug("results index not written under %s: %s", cache, e)


def _combine(
    tables: Iterable[tuple[Any, pa.Table]], types: Mapping[str, pa.DataType | str], strict: bool
) -> pa.Table | None:
    """The tables (each with what it came from) as one, one type per column; ``None`` when
    there are none.

    Tables are grouped by schema, and the types unified and cast once per group: per-table
    work is the read and parse alone, whatever the number of rows.
    """
    groups: dict[bytes, list[tuple[Any, pa.Table]]] = {}
    for source, table in tables:
        # the serialized schema: hashing pa.Schema itself costs more than parsing the file
        key = table.schema.serialize().to_pybytes()
        groups.setdefault(key, []).append((source, table))
    if not groups:
        return None
    schema = _unify([files[0][1].schema for files in groups.values()], types)
    return pa.concat_tables([_conform(files, schema, strict) for files in groups.values()])


def _listing(folder: Path) -> list[Path]:
    """The row files in ``folder``, by name; hidden ones are temporary files of writers."""
    return [folder / n for n in sorted(e.name for e in _entries(folder) if _is_row_file(e.name))]


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _is_row_file(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith(".")


def _read_files(files: Sequence[Path], strict: bool) -> list[pa.Table | None]:
    """`_read_file` of each file, in order, parsed on several threads: pyarrow parses without
    holding the GIL, and parsing (about 1 ms for a row of 100 columns) is most of a read."""
    if len(files) < 2 or _READERS < 2:
        return [_read_file(file, strict) for file in files]
    with ThreadPoolExecutor(min(_READERS, len(files))) as pool:
        return list(pool.map(lambda file: _read_file(file, strict), files))


_READERS = min(8, os.cpu_count() or 1)


def _read_file(file: Path, strict: bool, columns: list[str] | None = None) -> pa.Table | None:
    """The table in ``file``, from one read of its bytes; ``None`` if it is gone or unusable.

    One open matters: a writer may rename a new version over the file at any moment, and a
    reader that opens it twice (pyarrow's own readers do) can mix the two versions.
    """
    try:
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:  # removed since the listing: not part of the store any more
        return None
    except OSError as e:
        return _unusable(file, e.strerror or str(e), strict)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
        if "trial_key" not in parquet.schema_arrow.names:
            return _unusable(file, "no trial_key column, not a results store file", strict)
        return parquet.read(columns, use_threads=False)
    except (pa.ArrowException, OSError) as e:
        return _unusable(file, f"not a readable Parquet file ({' '.join(str(e).split())})", strict)


def _unusable(file: Path, reason: str, strict: bool) -> None:
    if strict:
        raise ValueError(f"{file}: {reason}")
    log.warning("%s: %s; skipped", file, reason)


def _unify(schemas: Iterable[pa.Schema], types: Mapping[str, pa.DataType | str]) -> pa.Schema:
    """One type per column: the declared one for fixed columns, else what the files agree on."""
    seen: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            seen.setdefault(field.name, []).append(field.type)
    fields = []
    for name, found in seen.items():
        common = _common_type(found)
        declared = types.get(name)
        if declared is _NUMBER:
            declared = common if common in (_INT, _FLOAT) else _FLOAT
        fields.append(pa.field(name, declared if declared is not None else common))
    return pa.schema(fields)


def _common_type(types: Iterable[pa.DataType]) -> pa.DataType:
    found = {_plain(t) for t in types} - {pa.null()}
    if len(found) <= 1:
        return found.pop() if found else pa.null()
    if found == {_INT, _FLOAT}:
        return _FLOAT
    if all(pa.types.is_timestamp(t) for t in found):
        finest = max(found, key=lambda t: ("s", "ms", "us", "ns").index(t.unit))
        return pa.timestamp(finest.unit, tz=_UTC)
    return _TEXT


# string_view came with pyarrow 16: an older pyarrow reads no column of that type
_is_string_view = getattr(pa.types, "is_string_view", lambda t: False)


def _plain(t: pa.DataType) -> pa.DataType:
    """``t`` without width or encoding: int32 and int64 agree, as do string and large_string."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return _INT
    if pa.types.is_floating(t):
        return _FLOAT
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t):
        return _TEXT
    return t


def _conform(files: list[tuple[Path, pa.Table]], schema: pa.Schema, strict: bool) -> pa.Table:
    """The tables of ``files`` (all of one schema) as one table of ``schema``."""
    # one chunk per column: a cast is then one call, not one per file
    table = pa.concat_tables([t for _, t in files]).combine_chunks()
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        try:
            columns.append(_cast(column, field.type))
        except _CAST_ERRORS:
            columns.append(_cast_each(files, field, strict))
    return pa.Table.from_arrays(columns, schema=schema)


def _cast_each(tables: list[tuple[Any, pa.Table]], field: pa.Field, strict: bool) -> pa.Array:
    """Cast file by file: a value that cannot take the column's type is missing, with a
    warning naming its file (or, with ``strict``, an error)."""
    chunks = []
    for folder, table in tables:
        files = table.column(_FILE).to_pylist()
        start = 0
        while start < len(files):
            end = start
            while end < len(files) and files[end] == files[start]:
                end += 1
            column = table.column(field.name).slice(start, end - start)
            try:
                chunks.append(_cast(column, field.type))
            except _CAST_ERRORS:
                file = files[start] if folder is None else folder / f"{files[start]}.parquet"
                reason = f"column {field.name!r} holds {column.type}, not {field.type}"
                if strict:
                    raise ValueError(f"{file}: {reason}") from None
                log.warning("%s: %s; read as missing", file, reason)
                chunks.append(pa.nulls(end - start, field.type))
            start = end
    return pa.chunked_array([c for chunk in chunks for c in _chunks(chunk)], field.type)


def _chunks(column: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _cast(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray | pa.Array:
    if column.type == target:
        return column
    if target == _TEXT and _plain(column.type) != _TEXT:
        return pa.array([_text(v) for v in column.to_pylist()], _TEXT)
    # Dropping a float's excess precision, or a time's sub-microseconds, loses nothing a user
    # reads; any other loss (3.5 as an int) is an error.
    lossy = pa.types.is_timestamp(target) or (target == _FLOAT and _plain(column.type) == _INT)
    return column.cast(target, safe=not lossy)


def _text(value: Any) -> str | None:
    """``value`` as a user would type it on the command line."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    for name, column in zip(table.column_names, table.columns, strict=True):
        # pandas would turn ints with a missing value into floats (3.0), bools into objects
        if column.null_count and column.type in _NULLABLE:
            df[name] = column.to_pandas(types_mapper=_NULLABLE.get)
    return df


def _scalar(value: Any) -> Any:
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, dt.datetime):
        # one timezone for every row; naive times (Optuna's) are local time
        return value.astimezone(dt.timezone.utc)
    return value
