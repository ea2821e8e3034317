"""Sweeps whose workers share only the database: heartbeats, a budget kept in the storage, rows
in the study."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from sweep import load_layers, load_results
from sweep.errors import ConfigError
from sweep.search import SearchSpace, StudySettings
from sweep.search._study import driver_url
from tests.conftest import FAST, run_cli

OPTUNA_FAST = [*FAST, "finetune.epochs=1"]


def _sweep(tmp_path, *args: str, threads: int | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "sweep", "-m", "search=tradeoff", *OPTUNA_FAST, *args]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    if threads is not None:  # many workers on few cores: one torch thread each
        env["SWEEP_THREADS"] = str(threads)
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _workers(tmp_path, count: int, *args: str, timeout: float) -> None:
    """``count`` workers of one study started together, each with its own store (as on
    machines with separate disks) and one torch thread; every one must exit 0."""
    procs = [
        _sweep(tmp_path, *args, f"store.path=store-{i}", "store.models=none", threads=1)
        for i in range(count)
    ]
    outs = [p.communicate(timeout=timeout) for p in procs]
    assert [p.returncode for p in procs] == [0] * count, [err for _, err in outs]


def test_rows_reach_the_study_and_read_back_as_the_store_has_them(tmp_path):
    result = run_cli(
        "-m", "search=tradeoff", "hydra.sweeper.n_trials=3", *OPTUNA_FAST, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    storage = f"sqlite:///{tmp_path}/results/optuna.db"
    store = tmp_path / "results"
    pd.testing.assert_frame_equal(
        load_results(storage=storage, study="tradeoff"), load_results(store)
    )
    pd.testing.assert_frame_equal(
        load_layers(storage=storage, study="tradeoff"), load_layers(store).reset_index(drop=True)
    )
    with pytest.raises(
        ConfigError, match=r"^study='nope' is not in this storage; studies there: tradeoff$"
    ):
        load_results(storage=storage, study="nope")
    rows = load_results(store)
    if not torch.cuda.is_available():
        assert rows["gpu"].isna().all() and (rows["device"] == "cpu").all()


def test_a_journal_under_home_is_read_where_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x.log").write_bytes(b"")  # an empty journal: no study yet
    with pytest.raises(
        ConfigError, match=r"^study='s' is not in this storage; studies there: none$"
    ):
        load_results(storage="~/x.log", study="s")


@pytest.mark.parametrize("url", ["sqlite:///{}/nothere/x.db", "{}/nothere.log"])
def test_reading_a_storage_that_is_not_there_creates_nothing(tmp_path, url):
    """A reader's typo created an empty database, then said its study was not in it."""
    url = url.format(tmp_path)
    path = url.removeprefix("sqlite:///")
    with pytest.raises(
        ConfigError,
        match=rf"^storage='{re.escape(url)}': there is no file '{re.escape(path)}'; accepted: "
        r"the storage a study ran with \(hydra.sweeper.storage; by default "
        r"sqlite:///<store.path>/optuna.db\)$",
    ):
        load_results(storage=url, study="s")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grace_period": 5}, "grace_period=5 without a heartbeat_interval"),
        (
            {"heartbeat_interval": 10, "grace_period": 10},
            "grace_period=10 is not longer than heartbeat_interval=10",
        ),
        ({"heartbeat_interval": 0}, "heartbeat_interval=0; accepted: an int >= 1 (seconds)"),
    ],
)
def test_bad_heartbeat_settings(changes, message):
    node = {
        "study_name": "s",
        "storage": "sqlite:///x.db",
        "n_trials": 3,
        "n_jobs": 1,
        "objectives": ["acc_finetuned"],
        "directions": ["maximize"],
        "max_failures": 3,
        **changes,
    }
    with pytest.raises(ConfigError, match=re.escape(message)):
        StudySettings.from_config(node, SearchSpace.from_config({"amount": {"low": 0, "high": 1}}))


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_recovered_by_one_still_running(tmp_path):
    """No restart: the survivor fails the dead worker's trial when its heartbeat stops, runs
    its parameters again, and waits for it before exiting; nothing is left RUNNING."""
    storage = f"sqlite:///{tmp_path}/results/optuna.db"
    args = [
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        "finetune.epochs=30",  # trials of a few seconds: long enough to die in one
    ]
    survivor = _sweep(tmp_path, *args)
    victim = _sweep(tmp_path, *args)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            study = optuna.load_study(study_name="tradeoff", storage=driver_url(storage))
        except Exception:  # the database or the study is not there yet
            continue
        trials = study.get_trials(deepcopy=False)
        pids = {(t.user_attrs.get("worker") or {}).get("pid") for t in trials}
        if survivor.pid not in pids:
            continue  # both sweeps past their start (which recovers dead same-host trials)
        for t in trials:
            if (
                t.state == TrialState.RUNNING
                and t.user_attrs.get("worker", {}).get("pid") == victim.pid
            ):
                os.kill(victim.pid, signal.SIGKILL)
                killed = t.number
                break
    assert killed is not None, "the second worker never ran a trial"
    victim.wait()
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err

    study = optuna.load_study(study_name="tradeoff", storage=driver_url(storage))
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    dead = study.trials[killed]
    error = study.user_attrs[f"interrupted-{killed}"]
    assert dead.state == TrialState.FAIL
    assert error.startswith("interrupted: worker ")
    assert f":{victim.pid} sent no heartbeat for 3 s; its parameters run again" in error
    [retry] = [t for t in study.trials if t.user_attrs.get("retry_of") == killed]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    counted = [t for t in study.trials if t.number != killed]
    assert len(counted) == 6 and all(t.state == TrialState.COMPLETE for t in counted)
    df = load_results(tmp_path / "results")
    assert sorted(df["optuna.trial"]) == sorted(t.number for t in study.trials)
    assert df.set_index("optuna.trial").loc[killed, ["status", "error"]].tolist() == [
        "failed",
        error,
    ]
    pd.testing.assert_frame_equal(load_results(storage=storage, study="tradeoff"), df)


@pytest.mark.slow
def test_eight_workers_with_separate_disks_share_a_postgresql_study(tmp_path, postgres_url):
    """Optuna's own scale, the database the only shared thing: each worker has its own store
    (as on machines with separate disks); 160 trials, no more, none twice, none left RUNNING,
    and the study's rows are the union of the stores."""
    _workers(
        tmp_path,
        8,
        f"hydra.sweeper.storage={postgres_url}",
        "hydra.sweeper.study_name=scale",
        "hydra.sweeper.n_trials=160",
        "hydra/sweeper/sampler=random",
        "latency.repeats=1",
        timeout=1200,
    )

    study = optuna.load_study(study_name="scale", storage=driver_url(postgres_url))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 160
    stores = [load_results(tmp_path / f"store-{i}") for i in range(8)]
    assert sum(len(s) > 0 for s in stores) >= 2  # the work was shared
    union = pd.concat(stores).sort_values("optuna.trial")
    assert list(union["optuna.trial"]) == list(range(160))  # each trial once, in one store
    rows = load_results(storage=postgres_url, study="scale")
    assert sorted(rows["optuna.trial"]) == list(range(160))
    assert (rows["status"] == "complete").all()
    assert set(rows["trial_key"]) == set(union["trial_key"])


def test_local_workers_spread_over_the_visible_gpus():
    from sweep.search._study import gpu_for_worker

    assert [gpu_for_worker(i, 4) for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert gpu_for_worker(3, 0) is None  # no GPU: the trial's own device
    # trials of nproc ranks: worker K takes block K of nproc GPUs (device=cuda:K)
    assert [gpu_for_worker(i, 8, nproc=4) for i in range(4)] == [0, 1, 0, 1]
    assert [gpu_for_worker(i, 8, nproc=8) for i in (1, 2, 9)] == [0, 0, 0]  # submitit's numbers
    assert gpu_for_worker(0, 2, nproc=4) is None


def test_n_jobs_auto_is_workers_per_gpu_times_the_gpus():
    from sweep.search._study import visible_gpus

    node = {
        "study_name": "s",
        "storage": "sqlite:///x.db",
        "n_trials": 3,
        "objectives": ["acc_finetuned"],
        "directions": ["maximize"],
        "max_failures": 3,
    }
    space = SearchSpace.from_config({"amount": {"low": 0, "high": 1}})
    settings = StudySettings.from_config({**node, "n_jobs": "auto", "workers_per_gpu": 2}, space)
    assert settings.n_jobs == max(1, 2 * visible_gpus())
    with pytest.raises(ConfigError, match=re.escape("workers_per_gpu=0; accepted: an int >= 1")):
        StudySettings.from_config({**node, "n_jobs": 1, "workers_per_gpu": 0}, space)
    with pytest.raises(
        ConfigError, match=re.escape("n_jobs='many'; accepted: an int >= 1, or auto")
    ):
        StudySettings.from_config({**node, "n_jobs": "many"}, space)


def test_tickets_keep_the_budget_without_a_lock():
    """Through the gRPC proxy no lock serialises asking: trial numbers are the tickets. Two
    workers that both saw room for one more trial both ask; the later number is given back
    unrun, counts for nothing, and has no row."""
    from sweep.search._study import counted_trials, keep_ticket, over_budget

    study = optuna.create_study()
    study.tell(study.ask(), 0.5)  # trial 0
    study.enqueue_trial({"x": 0.1})  # trial 1, waiting: it will run, so it counts below
    first, second = study.ask(), study.ask()  # trial 1 popped from the queue, trial 2 new
    assert (first.number, second.number) == (1, 2)
    assert keep_ticket(study, first.number, n_trials=2)
    assert not keep_ticket(study, second.number, n_trials=2)
    trials = study.get_trials()
    assert trials[2].state == TrialState.FAIL and over_budget(trials[2])
    assert "over budget" in trials[2].user_attrs["error"]
    assert counted_trials(study) == 2  # 0 complete, 1 running; 2 given back
    third = study.ask()
    assert not keep_ticket(study, third.number, n_trials=2)  # still no room
    assert counted_trials(study) == 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a proxy process and two workers (about 16 s)
def test_workers_through_the_grpc_storage_proxy(tmp_path):
    """Three workers started together on ``grpc://`` (python -m sweep.proxy in front of the
    database): the budget holds with no lock, nothing is left running, every trial ran once,
    and the study's rows are the union of the workers' stores."""
    port = _free_port()
    database = f"sqlite:///{tmp_path}/study.db"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "sweep.proxy", database, "--host", "127.0.0.1", f"--port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert f"hydra.sweeper.storage=grpc://127.0.0.1:{port}" in proxy.stdout.readline()
        url = f"grpc://127.0.0.1:{port}"
        _workers(
            tmp_path,
            3,
            f"hydra.sweeper.storage={url}",
            "hydra.sweeper.n_trials=9",
            "hydra/sweeper/sampler=random",
            "finetune.epochs=0",
            timeout=600,
        )
        rows = load_results(storage=url, study="tradeoff")
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)

    from sweep.search._study import over_budget

    study = optuna.load_study(study_name="tradeoff", storage=driver_url(database))
    ran = [t for t in study.trials if not over_budget(t)]
    assert [t.state for t in ran] == [TrialState.COMPLETE] * 9
    assert all(t.state == TrialState.FAIL for t in study.trials if over_budget(t))
    union = pd.concat([load_results(tmp_path / f"store-{i}") for i in range(3)])
    assert sorted(union["optuna.trial"]) == [t.number for t in ran]  # each once, in one store
    assert sorted(rows["optuna.trial"]) == [t.number for t in ran]
    assert (rows["status"] == "complete").all()


@pytest.mark.parametrize(
    "url, message",
    [
        ("grpc://nohost", "names no host:port"),
        ("grpc://127.0.0.1:1", "no proxy answered at 127.0.0.1:1 within 1 s"),
    ],
)
def test_bad_grpc_storage(url, message):
    from sweep.search._study import _grpc_proxy

    with pytest.raises(ConfigError, match=re.escape(message)):
        _grpc_proxy(url, timeout=1)


def test_proxy_refuses_what_is_not_a_database(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sweep.proxy", str(tmp_path / "journal.log")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: storage=")
    assert "is not a database URL; accepted: postgresql://" in result.stderr
    assert not (tmp_path / "journal.log").exists()


def test_proxy_names_the_url_it_was_given(tmp_path):
    """Not hydra.sweeper.storage, which the proxy's user never passed."""
    result = subprocess.run(
        [sys.executable, "-m", "sweep.proxy", "foo://x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: storage='foo://x' cannot be opened (")  # SQLAlchemy's reason
    assert line.endswith(
        "; accepted: postgresql://user:pass@host/db, mysql://..., sqlite:///file.db"
    )


@pytest.mark.parametrize(
    "device, worker, gpus, pinned",
    [
        ("auto", 3, 2, ["device=cuda:1"]),
        ("cuda", 0, 4, ["device=cuda:0"]),
        ("auto", 5, 0, []),  # no GPU: the trial's own device
        ("cpu", 1, 2, []),  # a device the user chose stays
        ("cuda:1", 0, 2, []),
    ],
)
def test_each_local_worker_runs_its_jobs_on_its_gpu(monkeypatch, device, worker, gpus, pinned):
    from omegaconf import OmegaConf

    from sweep.search import _sweeper

    monkeypatch.setattr(_sweeper, "visible_gpus", lambda: gpus)
    sweep = _sweeper.OptunaSweep(OmegaConf.create({}))
    sweep.config = OmegaConf.create({"device": device})
    assert sweep._gpu(worker) == pinned
