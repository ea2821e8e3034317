"""The results store: atomic per-trial files, concurrent writers, kills, schema growth."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from sweep.store import METRIC_COLUMNS, load_layers, load_results, read_row, write_trial

WRITER = """
import sys, datetime as dt
from sweep.store import write_trial
store, worker, n, payload = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    key = f"w{worker}-{i}"
    row = {"trial_key": key, "status": "complete", "worker": worker, "index": i,
           "blob": "x" * payload, "started_at": dt.datetime.now(dt.timezone.utc)}
    layers = [{"layer": f"l{j}", "param": "weight", "numel": 10, "nonzero": j} for j in range(50)]
    write_trial(store, row, layers)
"""


def _writer(store, worker: int, n: int, payload: int = 10) -> subprocess.Popen:
    args = [sys.executable, "-c", WRITER, str(store), str(worker), str(n), str(payload)]
    return subprocess.Popen(args)


def test_eight_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    store = tmp_path / "results"
    procs = [_writer(store, w, 25) for w in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    df = load_results(store)
    assert len(df) == 200
    assert df.trial_key.is_unique
    assert sorted(df.groupby("worker")["index"].count().tolist()) == [25] * 8
    layers = load_layers(store)
    assert len(layers) == 200 * 50 and set(layers.trial_key) == set(df.trial_key)


@pytest.mark.parametrize("delay", [0.0, 0.13, 0.31, 0.57])
def test_writer_killed_mid_write_leaves_no_partial_row(tmp_path, delay):
    store = tmp_path / "results"
    proc = _writer(store, 0, 10_000, payload=2_000_000)
    deadline = time.monotonic() + 60
    while not (store / "trials").is_dir() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files = [p for p in (store / "trials").glob("*.parquet") if not p.name.startswith(".")]
    df = load_results(store)
    assert delay == 0.0 or len(df) > 0
    assert len(df) == len(files)
    if len(df):
        assert (df.blob.str.len() == 2_000_000).all()
        assert df["index"].sort_values().tolist() == list(range(len(df)))
    # every row's layers are there; a trial killed between its two files has no row
    assert load_layers(store).groupby("trial_key").size().eq(50).all()


def test_rewriting_a_trial_replaces_its_row(tmp_path):
    write_trial(tmp_path, {"trial_key": "a", "status": "failed", "error": "nan"})
    write_trial(tmp_path, {"trial_key": "a", "status": "complete", "error": None})
    df = load_results(tmp_path)
    assert df.status.tolist() == ["complete"]
    assert read_row(tmp_path, "a")["status"] == "complete"
    assert read_row(tmp_path, "b") is None


def test_new_columns_over_time(tmp_path):
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    write_trial(tmp_path, {"trial_key": "old", "status": "complete", "started_at": t0, "acc": 0.5})
    write_trial(
        tmp_path,
        {
            "trial_key": "new",
            "status": "complete",
            "started_at": t0 + pd.Timedelta("1s"),
            "acc": 0.7,
            "speedup": 2.0,
            "scope.layers": ["Conv2d", "Linear"],
        },
    )
    df = load_results(tmp_path)
    assert df.trial_key.tolist() == ["old", "new"]
    assert df.speedup.isna().tolist() == [True, False]
    assert df["scope.layers"].iloc[1] == '["Conv2d", "Linear"]'
    assert df.acc.dtype == "float64"


def test_int_and_float_amounts_share_one_numeric_column(tmp_path):
    write_trial(tmp_path, {"trial_key": "count", "amount": 100})
    write_trial(tmp_path, {"trial_key": "fraction", "amount": 0.5})
    df = load_results(tmp_path).set_index("trial_key")
    assert df.amount.dtype == "float64"
    assert df.amount.to_dict() == {"count": 100.0, "fraction": 0.5}


def test_naive_and_aware_times_share_one_column(tmp_path):
    import datetime as dt

    aware = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    write_trial(tmp_path, {"trial_key": "aware", "started_at": aware})
    write_trial(
        tmp_path, {"trial_key": "naive", "started_at": aware.astimezone().replace(tzinfo=None)}
    )
    df = load_results(tmp_path)
    assert str(df.started_at.dtype) == "datetime64[us, UTC]"
    assert df.started_at.tolist() == [pd.Timestamp(aware)] * 2


def test_empty_and_missing_stores(tmp_path):
    (tmp_path / "trials").mkdir()
    df = load_results(tmp_path)
    assert len(df) == 0 and list(df.columns) == list(METRIC_COLUMNS)
    with pytest.raises(FileNotFoundError, match=r"no results store at '.*nowhere'"):
        load_results(tmp_path / "nowhere")
