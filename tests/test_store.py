"""The results store: atomic per-trial files, concurrent writers, kills, schema growth, odd
rows, damaged files, readers racing writers, shared and full disks."""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep import store
from sweep.errors import ConfigError
from sweep.store import (
    METRIC_COLUMNS,
    check_writable,
    clean,
    load_layers,
    load_results,
    read_row,
    write_trial,
)

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


# --- one odd row never makes the store unreadable ---------------------------------------------


def _put(store, name: str, row: dict, folder: str = "trials") -> None:
    """A row file as another version of sweep (or another tool) may have written it."""
    (store / folder).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([row]), store / folder / f"{name}.parquet")


def test_config_values_of_different_types_are_read_as_text(tmp_path):
    write_trial(
        tmp_path,
        {"trial_key": "a", "model.small_input_stem": "auto", "method.n": 2, "finetune.lr": 0.1},
    )
    write_trial(
        tmp_path,
        {
            "trial_key": "b",
            "model.small_input_stem": False,
            "method.n": "fro",
            "finetune.lr": 1e-05,
        },
    )
    write_trial(tmp_path, {"trial_key": "c", "model.small_input_stem": True, "finetune.lr": "x"})
    df = load_results(tmp_path).set_index("trial_key")
    assert df["model.small_input_stem"].to_dict() == {"a": "auto", "b": "false", "c": "true"}
    assert df["method.n"].tolist()[:2] == ["2", "fro"] and pd.isna(df.loc["c", "method.n"])
    assert df["finetune.lr"].tolist() == ["0.1", "1e-05", "x"]
    # text: pandas 3's str dtype, or pandas 2's object dtype of strings (with NA beside them)
    assert all(pd.api.types.is_string_dtype(df[c].dropna()) for c in ["method.n", "finetune.lr"])


def test_layer_columns_of_different_types_do_not_stop_load_layers(tmp_path):
    layer = {"layer": "fc", "param": "weight", "numel": 10, "nonzero": 4, "in_scope": True}
    write_trial(tmp_path, {"trial_key": "a"}, [{**layer, "group": 1}])
    write_trial(tmp_path, {"trial_key": "b"}, [{**layer, "group": "conv", "numel": 10.0}])
    layers = load_layers(tmp_path)
    assert layers.group.tolist() == ["1", "conv"]
    assert layers.numel.dtype == "int64" and layers.numel.tolist() == [10, 10]
    assert layers.in_scope.dtype == "bool"


def test_ints_and_floats_give_floats_and_missing_values_take_the_others_type(tmp_path):
    write_trial(tmp_path, {"trial_key": "a", "finetune.lr": 1, "model.width": 8, "tag": None})
    write_trial(tmp_path, {"trial_key": "b", "finetune.lr": 0.5, "model.width": None, "tag": "x"})
    df = load_results(tmp_path)
    assert df["finetune.lr"].dtype == "float64" and df["finetune.lr"].tolist() == [1.0, 0.5]
    assert df["model.width"].dtype == "Int64" and df["model.width"].iloc[0] == 8
    assert df["model.width"].isna().tolist() == [False, True]
    assert pd.isna(df.tag.iloc[0]) and df.tag.iloc[1] == "x"


def test_a_column_that_changed_type_in_a_later_version_still_loads(tmp_path):
    _put(tmp_path, "old", {"trial_key": "old", "scope.exclude": 3})
    _put(tmp_path, "new", {"trial_key": "new", "scope.exclude": "classifier"})
    df = load_results(tmp_path).set_index("trial_key")
    assert df["scope.exclude"].to_dict() == {"new": "classifier", "old": "3"}


def test_naive_and_aware_config_times_give_utc_times(tmp_path):
    aware = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    _put(tmp_path, "aware", {"trial_key": "aware", "optuna.started": aware})
    _put(tmp_path, "naive", {"trial_key": "naive", "optuna.started": aware.replace(tzinfo=None)})
    df = load_results(tmp_path)
    assert str(df["optuna.started"].dtype) == "datetime64[us, UTC]"
    assert df["optuna.started"].tolist() == [pd.Timestamp(aware)] * 2


def test_fixed_columns_have_their_declared_types_whatever_a_file_holds(tmp_path):
    _put(tmp_path, "a", {"trial_key": "a", "seed": 1, "acc_dense": 1, "method": 5})
    _put(
        tmp_path,
        "b",
        {"trial_key": "b", "seed": "2", "acc_dense": 0.5, "method": "l1", "baseline_trained": "1"},
    )
    df = load_results(tmp_path)
    assert (df.seed.dtype, df.seed.tolist()) == ("int64", [1, 2])
    assert (df.acc_dense.dtype, df.acc_dense.tolist()) == ("float64", [1.0, 0.5])
    assert df.method.tolist() == ["5", "l1"]
    assert df.baseline_trained.dtype == "boolean" and df.baseline_trained.iloc[1]
    assert read_row(tmp_path, "b")["seed"] == 2


def test_a_value_that_cannot_take_its_declared_type_is_missing_with_a_warning(tmp_path, caplog):
    _put(tmp_path, "a", {"trial_key": "a", "seed": 1})
    _put(tmp_path, "b", {"trial_key": "b", "seed": "abc"})
    df = load_results(tmp_path)
    assert df.seed.dtype == "Int64" and df.seed.isna().tolist() == [False, True]
    reason = f"{tmp_path / 'trials' / 'b.parquet'}: column 'seed' holds string, not int64"
    assert caplog.messages == [f"{reason}; read as missing"]
    with pytest.raises(ValueError) as e:
        load_results(tmp_path, strict=True)
    assert str(e.value) == reason


def test_optuna_trial_numbers_stay_integers_beside_rows_without_one(tmp_path):
    write_trial(tmp_path, {"trial_key": "a", "optuna.study": "s", "optuna.trial": 3}, row_id="s-3")
    write_trial(tmp_path, {"trial_key": "b", "optuna.study": None, "optuna.trial": None})
    df = load_results(tmp_path).set_index("trial_key")
    assert df["optuna.trial"].dtype == "Int64"
    assert [str(v) for v in df.loc[["a", "b"], "optuna.trial"]] == ["3", "<NA>"]


def test_int_amounts_are_an_int_column(tmp_path):
    write_trial(tmp_path, {"trial_key": "a", "amount": 100})
    write_trial(tmp_path, {"trial_key": "b", "amount": 200})
    df = load_results(tmp_path)
    assert df.amount.dtype == "int64" and df.amount.tolist() == [100, 200]


# --- a damaged or foreign file never hides the rest -------------------------------------------

NOT_PARQUET = (
    "not a readable Parquet file (Parquet magic bytes not found in footer. Either the file is "
    "corrupted or this is not a parquet file.)"
)


def test_a_damaged_file_is_skipped_with_one_warning_naming_it(tmp_path, caplog):
    write_trial(tmp_path, {"trial_key": "a", "status": "complete"}, [{"layer": "fc"}])
    (tmp_path / "trials" / "zz.parquet").write_text("garbage\n")
    (tmp_path / "layers" / "yy.parquet").write_bytes(b"")
    assert load_results(tmp_path).trial_key.tolist() == ["a"]
    assert caplog.messages == [f"{tmp_path / 'trials' / 'zz.parquet'}: {NOT_PARQUET}; skipped"]
    caplog.clear()
    assert load_layers(tmp_path).layer.tolist() == ["fc"]
    assert sorted(caplog.messages) == [
        f"{tmp_path / 'layers' / 'yy.parquet'}: not a readable Parquet file "
        "(Parquet file size is 0 bytes); skipped",
        f"{tmp_path / 'trials' / 'zz.parquet'}: {NOT_PARQUET}; skipped",
    ]
    caplog.clear()
    assert read_row(tmp_path, "zz") is None and len(caplog.messages) == 1
    assert read_row(tmp_path, "a")["status"] == "complete"


def test_strict_readers_raise_on_a_damaged_file_naming_it(tmp_path):
    write_trial(tmp_path, {"trial_key": "a"}, [{"layer": "fc"}])
    (tmp_path / "trials" / "zz.parquet").write_text("garbage\n")
    message = f"{tmp_path / 'trials' / 'zz.parquet'}: {NOT_PARQUET}"
    for read in (load_results, load_layers):
        with pytest.raises(ValueError) as e:
            read(tmp_path, strict=True)
        assert str(e.value) == message


def test_a_parquet_file_without_trial_key_is_foreign(tmp_path, caplog):
    write_trial(tmp_path, {"trial_key": "a"})
    _put(tmp_path, "foreign", {"x": 1})
    assert load_results(tmp_path).trial_key.tolist() == ["a"]
    foreign = tmp_path / "trials" / "foreign.parquet"
    assert caplog.messages == [f"{foreign}: no trial_key column, not a results store file; skipped"]


def test_the_warning_is_one_line_on_stderr(tmp_path):
    write_trial(tmp_path, {"trial_key": "a"})
    (tmp_path / "trials" / "zz.parquet").write_text("garbage\n")
    code = "import sys; from sweep import load_results; print(len(load_results(sys.argv[1])))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout == "1\n"
    assert done.stderr == f"{tmp_path / 'trials' / 'zz.parquet'}: {NOT_PARQUET}; skipped\n"


def test_a_file_removed_after_the_listing_is_simply_absent(tmp_path, monkeypatch, caplog):
    write_trial(tmp_path, {"trial_key": "a"})
    listing = store._listing
    monkeypatch.setattr(store, "_listing", lambda f: [*listing(f), f / "gone.parquet"])
    assert load_results(tmp_path).trial_key.tolist() == ["a"]
    assert caplog.messages == []


# --- readers racing writers ------------------------------------------------------------------

REWRITER = """
import sys, time
from sweep.store import write_trial
store, seconds = sys.argv[1], float(sys.argv[2])
end, version = time.monotonic() + seconds, 0
while time.monotonic() < end:
    # versions of different sizes: a reader mixing two of them reads past the end of one
    row = {"trial_key": "k", "version": version, "blob": f"{version}:" + "x" * (version % 5 * 20_000)}
    write_trial(store, row, [{"layer": "fc", "nonzero": version}])
    if version == 0:
        print("ready", flush=True)
    version += 1
"""


def test_readers_racing_a_rewriter_see_whole_rows(tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", REWRITER, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True
    )
    whole = lambda v: f"{v}:" + "x" * (v % 5 * 20_000)  # noqa: E731
    try:
        assert writer.stdout.readline() == "ready\n"
        end, reads = time.monotonic() + 2, 0
        while time.monotonic() < end and reads < 300:
            row = load_results(tmp_path).iloc[0]
            assert row.blob == whole(row.version)
            row = read_row(tmp_path, "k")
            assert row["blob"] == whole(row["version"])
            assert load_layers(tmp_path).trial_key.tolist() == ["k"]
            reads += 1
    finally:
        writer.kill()
        writer.wait()


# --- shared stores stay shared and clean -----------------------------------------------------


@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_files_respect_the_umask(tmp_path, umask, file_mode, folder_mode):
    code = (
        "import os, sys; os.umask(int(sys.argv[2], 8))\n"
        "from sweep._files import umask\n"
        "from sweep.store import write_trial\n"
        "print(oct(umask()), oct(umask()))\n"  # read twice: reading it does not change it
        "write_trial(sys.argv[1], {'trial_key': 'a'}, [{'layer': 'fc'}])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "st"), oct(umask)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == f"{oct(umask)} {oct(umask)}\n"
    modes = {
        p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777
        for p in (tmp_path / "st").rglob("*")
    }
    assert modes == {
        "st/trials": folder_mode,
        "st/layers": folder_mode,
        "st/trials/a.parquet": file_mode,
        "st/layers/a.parquet": file_mode,
    }


def _aged(path, seconds: float = 7200):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_clean_removes_old_leftovers_of_killed_writers_only(tmp_path):
    write_trial(tmp_path, {"trial_key": "kept"}, [{"layer": "fc"}])
    _aged(tmp_path / "trials" / "kept.parquet")
    _aged(tmp_path / "layers" / "kept.parquet")
    study_row = {"trial_key": "k1", "status": "complete"}
    write_trial(tmp_path, study_row, row_id="tradeoff-660487e95cd1-00001")
    old = [
        _aged(tmp_path / "trials" / ".a.parquet.x1abc_90.tmp"),
        _aged(tmp_path / "layers" / ".b.parquet.x2abc_90.tmp"),
        _aged(tmp_path / "baselines" / ".k.pt.x3abc_90.tmp"),
        _aged(tmp_path / "layers" / "0123456789abcdef.parquet"),
        _aged(tmp_path / "models" / "tradeoff-660487e95cd1-00003.pt"),  # its study has rows
    ]
    young = [
        _aged(tmp_path / "trials" / ".c.parquet.x4abc_90.tmp", seconds=60),
        _aged(tmp_path / "layers" / "fedcba9876543210.parquet", seconds=60),
    ]
    # files of the user's own, however old: not named as the store names its files
    own = [
        _aged(tmp_path / "models" / "best.pt"),
        _aged(tmp_path / "models" / "ckpt-step-10000.pt"),
        _aged(tmp_path / "models" / "resnet50-20240115.pt"),
        _aged(tmp_path / "layers" / "feature_stats.parquet"),
        _aged(tmp_path / "trials" / ".notes.tmp"),
    ]
    assert clean(tmp_path) == sorted(old)
    assert not any(p.exists() for p in old) and all(p.exists() for p in young + own)
    assert clean(tmp_path, older_than_s=30) == sorted(young)
    assert load_results(tmp_path).trial_key.tolist() == ["kept", "k1"]
    assert load_layers(tmp_path).trial_key.tolist() == ["kept"]
    assert clean(tmp_path / "nowhere") == []


def test_a_folder_holding_stores_is_not_read_as_an_empty_store(tmp_path):
    write_trial(tmp_path / "a" / "results", {"trial_key": "k"})
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileNotFoundError) as e:
        load_results(tmp_path)
    assert str(e.value) == (
        f"{str(tmp_path)!r} is not a results store (it has no trials/ folder); accepted: a store "
        f"inside it: {tmp_path / 'a' / 'results'}"
    )
    (tmp_path / "empty").mkdir()  # a folder made for a store, nothing run yet
    assert len(load_results(tmp_path / "empty")) == 0
    (tmp_path / "baselines").mkdir()  # a store whose first baseline is training: a store
    assert len(load_results(tmp_path)) == 0


def test_clean_leaves_a_folder_that_is_not_a_store_alone(tmp_path):
    mine = [_aged(tmp_path / "models" / "0123456789abcdef.pt"), _aged(tmp_path / "x.parquet")]
    assert clean(tmp_path) == []
    assert all(p.exists() for p in mine)


def test_a_rerun_that_fails_never_replaces_a_complete_row(tmp_path, caplog):
    """A grid rerun (skip_completed=false) that failed on a damaged file or out of memory
    replaced the complete row and deleted its model: nothing that ran may be lost."""
    complete = {"trial_key": "a", "status": "complete", "model_file": "models/a.pt"}
    write_trial(tmp_path, complete, [{"layer": "fc", "numel": 4, "nonzero": 2}])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.pt").write_bytes(b"weights")
    failed = {"trial_key": "a", "status": "failed", "error": "RuntimeError: out of memory"}
    assert write_trial(tmp_path, failed) == tmp_path / "trials" / "a.parquet"
    rows = load_results(tmp_path)
    assert rows[["status", "model_file"]].values.tolist() == [["complete", "models/a.pt"]]
    assert load_layers(tmp_path)["layer"].tolist() == ["fc"]
    assert (tmp_path / "models" / "a.pt").read_bytes() == b"weights"
    assert (
        f"trial a failed; the complete row already in the store stays, with its model: {tmp_path}/trials/a.parquet"
        in caplog.messages
    )
    # a failed row replaces a failed one, and a complete row replaces anything
    write_trial(tmp_path, {"trial_key": "b", "status": "failed", "error": "x"})
    write_trial(tmp_path, {"trial_key": "b", "status": "failed", "error": "y"})
    write_trial(tmp_path, {**complete, "acc_finetuned": 0.5})
    rows = load_results(tmp_path).set_index("trial_key")
    assert rows.loc["b", "error"] == "y" and rows.loc["a", "acc_finetuned"] == 0.5


def test_rewriting_a_trial_without_layers_drops_its_old_layers(tmp_path):
    write_trial(tmp_path, {"trial_key": "a", "status": "failed"}, [{"layer": "fc"}])
    write_trial(tmp_path, {"trial_key": "a", "status": "failed"})
    assert len(load_layers(tmp_path)) == 0
    assert not (tmp_path / "layers" / "a.parquet").exists()


# --- writable store, checked before any training ---------------------------------------------


def test_check_writable_creates_the_store_and_leaves_no_probe(tmp_path):
    check_writable(tmp_path / "new" / "st")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "new",
        "new/st",
        "new/st/layers",
        "new/st/trials",
    ]


def test_check_writable_refuses_a_file(tmp_path):
    (tmp_path / "st").write_text("")
    with pytest.raises(ConfigError) as e:
        check_writable(tmp_path / "st")
    assert str(e.value) == (
        f"store.path='{tmp_path / 'st'}' is a file; accepted: a folder (created if missing)"
    )
    with pytest.raises(ConfigError) as e:
        check_writable(tmp_path / "st" / "inner")
    assert str(e.value) == (
        f"store.path='{tmp_path / 'st' / 'inner'}' is inside a file ('{tmp_path / 'st'}'); "
        "accepted: a folder (created if missing)"
    )


def _no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_check_writable_refuses_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(ConfigError) as e:
        check_writable(tmp_path)
    assert str(e.value) == (
        f"store.path='{tmp_path}' is not writable (No space left on device); "
        "accepted: a folder you can write to"
    )
    assert list((tmp_path / "trials").iterdir()) == []


CHECK_AS_NOBODY = """
import os, pwd, sys
from sweep.errors import ConfigError
from sweep.store import check_writable
if os.geteuid() == 0:
    try:
        nobody = pwd.getpwnam("nobody")
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    except (KeyError, OSError) as e:
        print(f"cannot run as the unprivileged user nobody: {e}", file=sys.stderr)
        sys.exit(77)
try:
    check_writable(sys.argv[1])
except ConfigError as e:
    print(e)
"""


def test_check_writable_refuses_a_read_only_folder():
    # root writes anywhere: the check runs as an unprivileged user, in a folder it can reach
    top = Path(tempfile.mkdtemp(prefix="sweep-store-"))
    try:
        top.chmod(0o755)
        folder = top / "st"
        folder.mkdir(mode=0o555)
        done = subprocess.run(
            [sys.executable, "-c", CHECK_AS_NOBODY, str(folder)], capture_output=True, text=True
        )
        if done.returncode == 77:
            pytest.skip(done.stderr.strip())
        assert done.returncode == 0, done.stderr
        assert done.stdout == (
            f"store.path='{folder}' is not writable (Permission denied); "
            "accepted: a folder you can write to\n"
        )
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("layers", [[], [{"layer": "fc"}]])
def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch, layers):
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OSError) as e:
        write_trial(tmp_path, {"trial_key": "a"}, layers)
    target = tmp_path / ("layers" if layers else "trials") / "a.parquet"
    assert e.value.errno == errno.ENOSPC
    assert str(e.value) == f"[Errno 28] No space left on device: '{target}'"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["layers", "trials"]
