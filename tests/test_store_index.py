"""The store's index: rows of unchanged files come from it, anything else is read again, and
what a load returns is what reading every file returns."""

from __future__ import annotations

import datetime as dt
import errno
import os

import pandas as pd
import pytest

from sweep import store
from sweep.store import index_written, load_layers, load_results, write_trial
from tests.conftest import row_file_reads


def _every_file(monkeypatch):
    """Loads that read every file, as before the index existed."""
    monkeypatch.setattr(store, "_indexed", store._each_file)


def _mixed_store(path) -> None:
    """Rows whose columns disagree in type, gain columns over time, and carry layers."""
    utc = dt.timezone.utc
    rows = [
        {"trial_key": "a", "amount": 0.5, "x": 1, "when": dt.datetime(2024, 1, 1, tzinfo=utc)},
        {"trial_key": "b", "amount": 3, "x": 2.5, "when": dt.datetime(2024, 1, 2)},
        {"trial_key": "c", "amount": 0.25, "x": "fro", "later": True},
        {"trial_key": "d", "amount": 0.75, "x": None, "status": "complete", "seed": 3},
    ]
    for i, row in enumerate(rows):
        started = dt.datetime(2024, 1, 1, tzinfo=utc) + dt.timedelta(minutes=i % 2)
        layers = [{"layer": f"l{j}", "nonzero": j, "amount": 0.5 if j else 1} for j in range(3)]
        write_trial(path, {**row, "started_at": started}, layers)


def test_a_second_load_reads_no_row_file_and_returns_the_same_frame(tmp_path, monkeypatch):
    _mixed_store(tmp_path)
    first, first_layers = load_results(tmp_path), load_layers(tmp_path)
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) != []
    reads = row_file_reads(monkeypatch)
    pd.testing.assert_frame_equal(load_results(tmp_path), first)
    pd.testing.assert_frame_equal(load_layers(tmp_path), first_layers)
    assert reads == []


def test_the_index_gives_what_reading_every_file_gives(tmp_path, monkeypatch):
    _mixed_store(tmp_path)
    load_results(tmp_path), load_layers(tmp_path)  # writes the index
    write_trial(tmp_path, {"trial_key": "e", "amount": 0.9, "x": 7, "extra": "new"})
    indexed, indexed_layers = load_results(tmp_path), load_layers(tmp_path)
    _every_file(monkeypatch)
    pd.testing.assert_frame_equal(indexed, load_results(tmp_path))
    pd.testing.assert_frame_equal(indexed_layers, load_layers(tmp_path))
    assert indexed.trial_key.tolist() == ["a", "c", "b", "d", "e"]  # by start, then file
    assert indexed["x"].fillna("-").tolist() == ["1", "fro", "2.5", "-", "7"]


def test_a_rewritten_row_of_the_same_size_is_read_again(tmp_path, monkeypatch):
    write_trial(tmp_path, {"trial_key": "a", "version": 1})
    write_trial(tmp_path, {"trial_key": "b", "version": 1})
    assert load_results(tmp_path).version.tolist() == [1, 1]
    file = tmp_path / "trials" / "a.parquet"
    size, mtime = file.stat().st_size, file.stat().st_mtime_ns
    write_trial(tmp_path, {"trial_key": "a", "version": 2})
    os.utime(file, ns=(mtime, mtime))  # same time and size: only the inode tells
    assert file.stat().st_size == size
    reads = row_file_reads(monkeypatch)
    assert load_results(tmp_path).version.tolist() == [2, 1]
    assert reads == ["a.parquet"]


def test_removed_and_added_rows(tmp_path, monkeypatch):
    for key in "abc":
        write_trial(tmp_path, {"trial_key": key}, [{"layer": "fc"}])
    assert load_results(tmp_path).trial_key.tolist() == ["a", "b", "c"]
    assert load_layers(tmp_path).trial_key.tolist() == ["a", "b", "c"]
    (tmp_path / "trials" / "b.parquet").unlink()
    write_trial(tmp_path, {"trial_key": "d"}, [{"layer": "fc"}])
    reads = row_file_reads(monkeypatch)
    assert load_results(tmp_path).trial_key.tolist() == ["a", "c", "d"]
    assert load_layers(tmp_path).trial_key.tolist() == ["a", "c", "d"]
    assert reads == ["d.parquet", "d.parquet"]  # the layers of b stay: its row is gone
    reads.clear()
    load_results(tmp_path), load_layers(tmp_path)
    assert reads == []


def test_a_damaged_index_costs_only_the_reads_it_saves(tmp_path, monkeypatch, caplog):
    write_trial(tmp_path, {"trial_key": "a"})
    load_results(tmp_path)
    (segment,) = (tmp_path / "index").iterdir()
    segment.write_bytes(b"garbage")
    reads = row_file_reads(monkeypatch)
    assert load_results(tmp_path).trial_key.tolist() == ["a"]
    assert reads == ["a.parquet"] and caplog.messages == []
    reads.clear()
    assert load_results(tmp_path).trial_key.tolist() == ["a"]
    assert reads == []  # rewritten whole


def test_a_store_that_cannot_be_written_is_read_file_by_file(tmp_path, monkeypatch):
    write_trial(tmp_path, {"trial_key": "a"})

    def refuse(path, write):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(store, "atomic_write", refuse)
    assert load_results(tmp_path).trial_key.tolist() == ["a"]
    assert list((tmp_path / "index").glob("*")) == []


def test_a_damaged_row_file_is_never_indexed_and_warns_each_load(tmp_path, caplog):
    write_trial(tmp_path, {"trial_key": "a"})
    (tmp_path / "trials" / "zz.parquet").write_text("garbage\n")
    for _ in range(2):
        caplog.clear()
        assert load_results(tmp_path).trial_key.tolist() == ["a"]
        assert len(caplog.messages) == 1 and "zz.parquet" in caplog.messages[0]


def test_index_written_indexes_this_process_stores_and_the_paths_given(
    tmp_path, monkeypatch, caplog
):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    _mixed_store(mine)
    _mixed_store(theirs)
    store._WRITTEN.discard(os.path.abspath(theirs))  # as if another process had written it
    (mine / "trials" / "zz.parquet").write_text("garbage\n")
    index_written(tmp_path / "no store here")
    assert (mine / "index").is_dir() and not (theirs / "index").exists()
    assert not store._WRITTEN
    assert caplog.messages == []  # the damaged file is the load's to report
    index_written(theirs)
    reads = row_file_reads(monkeypatch)
    for path in (mine, theirs):
        assert load_results(path).trial_key.tolist() == ["a", "c", "b", "d"]
        assert load_layers(path).shape[0] == 12
    assert set(reads) == {"zz.parquet"} and "zz.parquet" in caplog.text  # at each load


def test_a_file_removed_between_listing_and_read_is_absent(tmp_path, monkeypatch, caplog):
    write_trial(tmp_path, {"trial_key": "a"})
    write_trial(tmp_path, {"trial_key": "b"})
    read = store._read_file

    def racing(file, strict, columns=None):
        if file.name == "b.parquet":
            file.unlink()
        return read(file, strict, columns)

    monkeypatch.setattr(store, "_read_file", racing)
    assert load_results(tmp_path).trial_key.tolist() == ["a"]
    assert caplog.messages == []


@pytest.mark.parametrize("strict", [False, True])
def test_a_value_that_cannot_take_its_type_names_its_file_from_the_index(tmp_path, caplog, strict):
    write_trial(tmp_path, {"trial_key": "a", "seed": 1})
    write_trial(tmp_path, {"trial_key": "b", "seed": "x"})
    load_results(tmp_path)  # the index now holds both rows
    caplog.clear()
    message = f"{tmp_path / 'trials' / 'b.parquet'}: column 'seed' holds string, not int64"
    if strict:
        with pytest.raises(ValueError, match=message):
            load_results(tmp_path, strict=True)
    else:
        assert load_results(tmp_path).seed.fillna(-1).tolist() == [1, -1]
        assert caplog.messages == [f"{message}; read as missing"]


def test_the_readers_own_columns_never_reach_the_frame(tmp_path):
    write_trial(tmp_path, {"trial_key": "a"}, [{"layer": "fc"}])
    for frame in (load_results(tmp_path), load_layers(tmp_path)):
        assert not [c for c in frame.columns if c.startswith("__")]
