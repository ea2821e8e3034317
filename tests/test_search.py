"""Optuna search spaces and study settings, checked in process."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from sweep.errors import ConfigError
from sweep.search import OBJECTIVES, SearchSpace, StudySettings, open_storage
from sweep.search._space import overrides
from sweep.store import encode_rows

SPACE = {
    "method": {"choices": ["l1_unstructured", "ln_structured", "global_unstructured"]},
    "amount": {"low": 0.1, "high": 0.9},
    "method.n": {"choices": [1, 2], "when": {"method": "ln_structured"}},
    "method.pruning_method": {
        "choices": ["l1", "random"],
        "when": {"method": ["global_unstructured"]},
    },
}


def settings(**changes) -> dict:
    base = {
        "study_name": "s",
        "storage": "sqlite:///x.db",
        "n_trials": 4,
        "n_jobs": 1,
        "objectives": ["acc_finetuned", "sparsity"],
        "directions": ["maximize", "maximize"],
        "sampler": {"name": "tpe", "seed": 0},
        "pruner": {"name": "none"},
        "max_failures": 3,
    }
    return {**base, **changes}


def test_conditional_params_exist_only_when_their_condition_holds():
    space = SearchSpace.from_config(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        values = space.sample(trial)
        study.tell(trial, 0.0)
        seen.add(values["method"])
        assert ("method.n" in values) == (values["method"] == "ln_structured")
        assert ("method.pruning_method" in values) == (values["method"] == "global_unstructured")
        assert 0.1 <= values["amount"] <= 0.9
    assert seen == {"l1_unstructured", "ln_structured", "global_unstructured"}


def test_kinds_grid_and_overrides():
    space = SearchSpace.from_config(
        {
            "amount": {"low": 0.25, "high": 0.75, "step": 0.25},
            "seed": {"low": 0, "high": 3},
            "finetune.lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "flag": {"choices": [True, None]},
        }
    )
    assert [p.kind for p in space.params] == ["float", "int", "float", "categorical"]
    assert space.params[0].grid() == [0.25, 0.5, 0.75]
    assert overrides({"amount": 0.5, "method.n": 2, "flag": True, "x": None}) == [
        "amount=0.5",
        "method.n=2",
        "flag=true",
        "x=null",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "l1_unstructured",
        "1e-3",
        "5273e0162023",
        "NULL",
        "Inf",
        "a,b",
        "a b",
        "it's",
        "back\\",
        "",
        [None, "1e3", True],
        {"a": "null", "b": [0.5]},
    ],
)
def test_a_sampled_value_reads_back_as_itself(value):
    """Hydra reads the override of a sampled categorical back as the value: a string that
    looks like a number, a constant or a sweep (``a,b``) stays that string."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = overrides({"x": value})
    assert OverridesParser.create().parse_override(override).value() == value


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "hydra.sweeper.params is empty"),
        (
            {"method": {"choices": []}},
            "hydra.sweeper.params.method.choices is empty; accepted: a non-empty list",
        ),
        (
            {"amount": {"low": 0.9, "high": 0.1}},
            "hydra.sweeper.params.amount: low=0.9 is greater than high=0.1; accepted: low <= high",
        ),
        ({"amount": {"low": 0.1}}, "hydra.sweeper.params.amount needs choices, or low and high"),
        (
            {"amount": {"low": 0.1, "high": 0.5, "typ": "float"}},
            "hydra.sweeper.params.amount has unknown key(s) ['typ']",
        ),
        (
            {"method.n": {"choices": [1], "when": {"method": "ln_structured"}}},
            "hydra.sweeper.params.method.n.when names 'method', not a param listed before it",
        ),
        ({"finetune.lr": {"low": 0.0, "high": 1.0, "log": True}}, "log=true needs low > 0"),
    ],
)
def test_bad_spaces(space, message):
    with pytest.raises(ConfigError) as e:
        SearchSpace.from_config(space)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"sampler": {"name": "cmaes2"}},
            "hydra.sweeper.sampler.name='cmaes2' is unknown; accepted: tpe | random | grid | nsga2 | qmc",
        ),
        (
            {"pruner": {"name": "early"}},
            "hydra.sweeper.pruner.name='early' is unknown; accepted: none | median | percentile | successive_halving | hyperband | threshold",
        ),
        (
            {"objectives": ["accuracy", "sparsity"]},
            "hydra.sweeper.objectives names 'accuracy', not a metric; accepted: amount, seed, acc_dense",
        ),
        ({"directions": ["maximize"]}, "hydra.sweeper.directions has 1 entries for 2 objectives"),
        (
            {"directions": ["maximize", "up"]},
            "hydra.sweeper.directions has 'up'; accepted: maximize | minimize",
        ),
        (
            {"pruner": {"name": "median"}},
            "hydra.sweeper.pruner.name='median' with 2 objectives: Optuna cannot prune multi-objective trials",
        ),
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0; accepted: an int >= 1"),
        ({"sampler": {"name": "tpe", "n_startup": 3}}, "hydra.sweeper.sampler (tpe): "),
        (
            {
                "pruner": {"name": "median", "n_startup_trials": -1},
                "objectives": ["acc_finetuned"],
                "directions": ["maximize"],
            },
            "hydra.sweeper.pruner (median): ",
        ),
        (
            {"sampler": {"name": "grid"}},
            "hydra.sweeper.params.amount has no step; the grid sampler accepts",
        ),
        ({"allow_repeats": "yes"}, "hydra.sweeper.allow_repeats='yes'; accepted: true | false"),
    ],
)
def test_bad_study_settings(changes, message):
    with pytest.raises(ConfigError) as e:
        StudySettings.from_config(settings(**changes), SearchSpace.from_config(SPACE))
    assert message in str(e.value)


def test_objectives_are_the_numeric_metric_columns():
    assert {"acc_finetuned", "sparsity", "latency_ms", "flops", "params_nonzero"} <= set(OBJECTIVES)
    assert "method" not in OBJECTIVES and "status" not in OBJECTIVES


def test_single_objective_may_use_a_trial_pruner():
    s = StudySettings.from_config(
        settings(objectives=["acc_finetuned"], directions=["maximize"], pruner={"name": "median"}),
        SearchSpace.from_config(SPACE),
    )
    assert not s.multi_objective


def test_a_sqlite_storage_under_home_is_in_the_home_folder(tmp_path, monkeypatch):
    """The default storage of store.path='~/st' is sqlite:///~/st/optuna.db: SQLAlchemy made
    a folder named ~ in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    spec = settings(storage="sqlite:///~/st/optuna.db")
    url = StudySettings.from_config(spec, SearchSpace.from_config(SPACE)).storage
    assert url == f"sqlite:///{tmp_path}/home/st/optuna.db"
    optuna.create_study(storage=open_storage("sqlite:///~/st/optuna.db"), study_name="s")
    assert (tmp_path / "home" / "st" / "optuna.db").is_file()
    assert not (tmp_path / "~").exists()


def test_a_resumed_study_compares_its_composed_config_but_not_an_upgrades_settings():
    from omegaconf import OmegaConf

    from sweep.errors import ConfigError
    from sweep.search._settings import check_unchanged

    spec = StudySettings.from_config(settings(), SearchSpace.from_config(SPACE))
    study = optuna.create_study(directions=["maximize", "maximize"])
    ran = {
        "finetune": {"weight_decay": 0.0},
        "latency": {"width": 0.1},
        "store": {"path": "a"},
        "schedule": {"name": "one_shot", "steps": 1},
    }
    check_unchanged(study, spec, [], OmegaConf.create(ran))
    check_unchanged(study, spec, [], OmegaConf.create({**ran, "store": {"path": "b"}}))
    # an older prune-sweep had no latency.width in its schema, nor schedule.name in its
    # preset (it is keyed only unless one_shot, as before): the study resumes, and records them
    for added in ("latency.width", "schedule.name"):
        recorded = study.user_attrs["settings"]
        del recorded["composed"][added]
        study.set_user_attr("settings", recorded)
        check_unchanged(study, spec, [], OmegaConf.create(ran))
        assert added in study.user_attrs["settings"]["composed"]
    with pytest.raises(ConfigError) as e:  # recorded: a later change is one
        check_unchanged(
            study, spec, [], OmegaConf.create({**ran, "schedule": {"name": "agp", "steps": 1}})
        )
    assert "was run with schedule.name=one_shot (its composed config)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        check_unchanged(
            study, spec, [], OmegaConf.create({**ran, "finetune": {"weight_decay": 0.1}})
        )
    assert str(e.value).startswith(
        "study 's' was run with finetune.weight_decay=0.0 (its composed config); this run has "
        "finetune.weight_decay=0.1: a config file or your code changed between runs; "
    )


def test_a_resumed_study_compares_values_not_how_the_command_line_spells_them():
    """Joining a study with seed=0 (the default) spelled out, the data mounted at another
    path on this machine, or another loader setting was refused: the overrides were compared
    as text. What a trial computes decides; a changed value on the command line is still
    named as an override."""
    from omegaconf import OmegaConf

    from sweep.search._settings import check_unchanged

    spec = StudySettings.from_config(settings(), SearchSpace.from_config(SPACE))
    study = optuna.create_study(directions=["maximize", "maximize"])
    ran = {
        "seed": 0,
        "dataset": {"root": "/mnt/a", "num_workers": 0},
        "finetune": {"epochs": 1},
        "model": {"_target_": "sweep.models.small_cnn"},
    }
    check_unchanged(study, spec, ["dataset.root=/mnt/a"], OmegaConf.create(ran))
    elsewhere = {**ran, "dataset": {"root": "/data/a", "num_workers": 4}}
    same = ["seed=0", "dataset.root=/data/a", "dataset.num_workers=4"]
    check_unchanged(study, spec, same, OmegaConf.create(elsewhere))
    with pytest.raises(ConfigError) as e:
        more = {**ran, "finetune": {"epochs": 2}}
        check_unchanged(study, spec, ["finetune.epochs=2"], OmegaConf.create(more))
    assert str(e.value) == (
        "study 's' was run with no finetune.epochs override; this run has finetune.epochs=2; "
        "accepted: the study's overrides, or another hydra.sweeper.study_name for a new study"
    )
    # a group chosen on the command line changes values under it: named as the override
    with pytest.raises(ConfigError) as e:
        other = {**ran, "model": {"_target_": "sweep.models.mlp"}}
        check_unchanged(study, spec, ["model=mlp"], OmegaConf.create(other))
    assert str(e.value).startswith(
        "study 's' was run with no model override; this run has model=mlp; "
    )


def test_a_resumed_study_compares_what_its_data_holds_unless_the_dataset_is_swept():
    """An image folder changed between two runs of a study resumed it: each row's key held the
    fingerprint, but the sampler learnt from trials on two datasets."""
    from omegaconf import OmegaConf

    from sweep.search._settings import check_unchanged

    spec = StudySettings.from_config(settings(), SearchSpace.from_config(SPACE))
    study = optuna.create_study(directions=["maximize", "maximize"])
    ran = OmegaConf.create({"dataset": {"root": "/data/a"}, "finetune": {"epochs": 1}})
    check_unchanged(study, spec, [], ran)  # a study from before the fingerprint was recorded
    assert "dataset.fingerprint" not in study.user_attrs["settings"]["composed"]
    check_unchanged(study, spec, [], ran, fingerprint="f1")  # resumes, and records it
    assert study.user_attrs["settings"]["composed"]["dataset.fingerprint"] == "f1"
    check_unchanged(study, spec, [], ran, fingerprint="f1")
    check_unchanged(study, spec, [], ran)  # data without files: nothing to compare
    with pytest.raises(ConfigError) as e:
        check_unchanged(study, spec, [], ran, fingerprint="f2")
    assert str(e.value) == (
        "study 's' was run on data with dataset.fingerprint=f1; the data this run reads has "
        "dataset.fingerprint=f2: files under the dataset's folder were added, removed or "
        "changed between runs; accepted: the data as it was, or another "
        "hydra.sweeper.study_name for a new study"
    )
    space = {**SPACE, "dataset.root": {"choices": ["/data/a", "/data/b"]}}
    swept = StudySettings.from_config(settings(), SearchSpace.from_config(space))
    other = optuna.create_study(directions=["maximize", "maximize"])
    check_unchanged(other, swept, [], ran, fingerprint="f1")
    check_unchanged(other, swept, [], ran, fingerprint="f2")  # each trial's key holds its own
    assert "dataset.fingerprint" not in other.user_attrs["settings"]["composed"]


def test_a_resumed_study_compares_the_code_of_each_swept_option(tmp_path, monkeypatch):
    """With method=choice(every_other, l1_unstructured) the method group is swept, and its
    code was never compared: an edited method file resumed the study, mixing two versions."""
    import sys

    from omegaconf import OmegaConf

    from sweep.search._settings import check_unchanged

    monkeypatch.syspath_prepend(str(tmp_path))
    method = (Path(__file__).parent / "custom_methods.py").read_text()

    def edit(text):
        (tmp_path / "every_other_file.py").write_text(text)
        sys.modules.pop("every_other_file", None)

    def compose(overrides):
        target = {
            "method=every_other": "every_other_file.EveryOther",
            "method=l1_unstructured": "torch.nn.utils.prune.L1Unstructured",
        }[overrides[0]]
        return OmegaConf.create({"method": {"_target_": target}})

    space = {"method": {"choices": ["every_other", "l1_unstructured"]}, "amount": SPACE["amount"]}
    spec = StudySettings.from_config(settings(), SearchSpace.from_config(space))
    study = optuna.create_study(directions=["maximize", "maximize"])
    ran = OmegaConf.create({"method": {"_target_": "torch.nn.utils.prune.L1Unstructured"}})
    edit(method)
    check_unchanged(study, spec, [], ran, compose)
    assert list(study.user_attrs["settings"]["composed"]) == ["method[every_other].code_sha256"]
    check_unchanged(study, spec, [], ran, compose)
    edit(method.replace("alive[::2]", "alive[::3]"))
    with pytest.raises(ConfigError) as e:
        check_unchanged(study, spec, [], ran, compose)
    assert str(e.value).startswith("study 's' was run with method[every_other].code_sha256=")
    assert "a config file or your code changed between runs" in str(e.value)


def test_journal_lock_points_at_the_journal_from_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = open_storage("results/optuna.journal")
    optuna.create_study(storage=storage, study_name="s")
    lock = storage._backend._lock
    assert lock.acquire()
    try:
        # the symlink resolves: a killed holder's lock ages out instead of spinning stat()
        assert (tmp_path / "results/optuna.journal.lock").resolve() == (
            tmp_path / "results/optuna.journal"
        )
        assert (tmp_path / "results/optuna.journal.lock").exists()
    finally:
        lock.release()


@pytest.mark.slow
def test_journal_sweep_recovers_from_a_worker_killed_holding_the_lock(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import FAST, run_cli

    hold = (
        "import time, sys; from sweep.search import open_storage; "
        "s = open_storage('results/optuna.journal'); s._backend._lock.acquire(); "
        "print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "results/optuna.journal.lock").is_symlink()
    result = run_cli(
        "-m",
        "search=tradeoff",
        "hydra.sweeper.storage=results/optuna.journal",
        "hydra.sweeper.n_trials=1",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr  # released after Optuna's 30 s grace period


# a race between processes (26 s): with the scale and fault tests
@pytest.mark.slow
def test_workers_opening_a_new_sqlite_file_together_all_succeed(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/new.db"
    code = f"from sweep.search import open_storage; open_storage({url!r})"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors


def _recovery_settings(space):
    return StudySettings.from_config(
        {
            "study_name": "s",
            "storage": "x",
            "n_trials": 4,
            "n_jobs": 1,
            "objectives": ["acc_finetuned"],
            "directions": ["maximize"],
            "max_failures": 3,
        },
        space,
    )


def _recover_unclaimed(study, storage, store, settings, monkeypatch) -> None:
    import datetime as dt

    from sweep.search import _recovery

    assert _recovery.recover_interrupted(study, storage, store, settings) == 0  # may be starting
    monkeypatch.setattr(_recovery, "UNCLAIMED_AFTER", dt.timedelta(0))
    assert _recovery.recover_interrupted(study, storage, store, settings) == 1
    assert _recovery.recover_interrupted(study, storage, store, settings) == 0  # once only


def test_a_trial_its_worker_never_claimed_is_recovered_and_sampled_anew(tmp_path, monkeypatch):
    from optuna.trial import TrialState

    from sweep import load_results

    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(storage=storage, study_name="s")
    space = SearchSpace.from_config({"amount": {"low": 0.1, "high": 0.9}})
    settings = _recovery_settings(space)
    space.sample(study.ask())  # its worker dies before claiming it
    store = tmp_path / "results"
    _recover_unclaimed(study, storage, store, settings, monkeypatch)
    [failed, retry] = study.trials
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert "fixed_params" not in retry.system_attrs  # nothing ran: its parameters are drawn anew
    assert retry.user_attrs["retry_of"] == failed.number
    row = load_results(store).iloc[0]
    assert (row.status, row.error) == (
        "failed",
        "interrupted: its worker died before it started the trial; it is asked again",
    )


def test_a_grid_point_whose_worker_died_while_sampling_it_runs_again(tmp_path, monkeypatch):
    """The dead trial had drawn one of its two parameters: the retry still runs its grid
    point, so the grid is covered exactly once."""
    from optuna.trial import TrialState

    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    space = SearchSpace.from_config(
        {"amount": {"choices": [0.25, 0.5]}, "method": {"choices": ["l1_unstructured", "random"]}}
    )
    grid = optuna.samplers.GridSampler(space.grid(), seed=0)
    study = optuna.create_study(storage=storage, study_name="s", sampler=grid)
    settings = _recovery_settings(space)
    dead = study.ask()
    dead.suggest_categorical("amount", [0.25, 0.5])  # and dies before "method"
    _recover_unclaimed(study, storage, tmp_path / "results", settings, monkeypatch)
    points = []
    for _ in range(4):
        trial = study.ask()
        values = space.sample(trial)
        points.append((values["amount"], values["method"]))
        if len(points) < 4:  # the grid sampler stops the study after the last
            study.tell(trial, 0.0)
    assert study.trials[1].user_attrs["retry_of"] == 0
    assert sorted(points) == sorted(
        (a, m) for a in (0.25, 0.5) for m in ("l1_unstructured", "random")
    )
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[1].params["amount"] == dead.params["amount"]


def test_a_claimed_trial_whose_worker_died_runs_its_parameters_again(tmp_path):
    from optuna.trial import TrialState

    from sweep.search import _recovery

    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(storage=storage, study_name="s")
    space = SearchSpace.from_config({"amount": {"low": 0.1, "high": 0.9}})
    trial = study.ask()
    space.sample(trial)
    trial.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "start": 0.0})
    _recovery.requeue(study, study.trials[0])
    [running, retry] = study.trials
    assert running.state == TrialState.RUNNING and retry.state == TrialState.WAITING
    assert retry.system_attrs["fixed_params"] == running.params
    assert retry.user_attrs == {"retry_of": 0}


def _complete_row(study, number: int, acc: float) -> dict:
    return {
        "trial_key": f"key{number}",
        "status": "complete",
        "acc_finetuned": acc,
        "optuna.study": study.study_name,
        "optuna.uid": study.user_attrs["uid"],
        "optuna.trial": number,
    }


def _dead_worker() -> dict:
    import subprocess
    import sys

    from sweep.search._study import worker_identity

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return {**worker_identity(), "pid": proc.pid}


def _stored_trial(study, store, number: int, acc: float) -> None:
    """Trial ``number``: asked, claimed, its row and layers stored; its worker never told it."""
    from sweep.store import row_id, write_trial

    trial = study.ask()
    assert trial.number == number
    trial.suggest_float("amount", 0.1, 0.9)
    trial.set_user_attr("worker", _dead_worker())
    rid = row_id(None, study.study_name, number, study.user_attrs["uid"])
    write_trial(
        store, _complete_row(study, number, acc), [{"layer": "fc", "sparsity": 0.5}], row_id=rid
    )


def test_a_trial_whose_worker_died_after_its_row_landed_keeps_its_row_in_the_study(tmp_path):
    """Issue 22: told from its row on the restart, the trial carries that row, as a normal tell
    does: the study's rows are the store's, none missing (the Pareto table read them NaN)."""
    import pandas as pd
    from optuna.trial import TrialState

    from sweep import load_layers, load_results
    from sweep.search import _recovery

    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.set_user_attr("uid", "u1")
    store = tmp_path / "results"
    settings = _recovery_settings(SearchSpace.from_config({"amount": {"low": 0.1, "high": 0.9}}))
    _stored_trial(study, store, 0, 0.75)
    _stored_trial(study, store, 1, 0.5)

    assert _recovery.recover_interrupted(study, storage, store, settings) == 0  # none requeued
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert [t.values for t in study.trials] == [[0.75], [0.5]]
    rows = load_results(storage=url, study="s")
    assert rows["acc_finetuned"].tolist() == [0.75, 0.5]
    pd.testing.assert_frame_equal(rows, load_results(store))
    assert load_layers(storage=url, study="s")["sparsity"].tolist() == [0.5, 0.5]


# the test asks outside Study.optimize, as a sweep's own workers do (`ask_within_budget`)
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_stale_trial_whose_row_landed_is_finished_from_it_not_run_again(tmp_path):
    """Issue 22: a worker frozen after its row landed (then killed) loses its heartbeat; the
    trial is told from its row, as on a restart, not failed and queued again (a second run)."""
    import time
    from functools import partial

    from optuna.trial import TrialState

    from sweep import load_results
    from sweep.search import _recovery

    url = f"sqlite:///{tmp_path}/optuna.db"
    store = tmp_path / "results"
    settings = _recovery_settings(SearchSpace.from_config({"amount": {"low": 0.1, "high": 0.9}}))
    on_stale = partial(_recovery.requeue_stale, store=store, settings=settings)
    storage = open_storage(url, heartbeat_interval=1, grace_period=2, on_stale=on_stale)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.set_user_attr("uid", "u1")
    _stored_trial(study, store, 0, 0.75)
    storage.record_heartbeat(study.trials[0]._trial_id)
    trial = study.ask()  # trial 1: stale too, with no row: failed and run again
    trial.suggest_float("amount", 0.1, 0.9)
    trial.set_user_attr("worker", _dead_worker())
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3.5)  # past the grace period

    _recovery.fail_stale(study, store, settings)
    [told, failed, retry] = study.trials
    assert (told.state, told.values) == (TrialState.COMPLETE, [0.75])
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == 1
    for df in (load_results(store), load_results(storage=url, study="s")):
        assert df.set_index("optuna.trial")["status"].to_dict() == {0: "complete", 1: "failed"}

    # trial 1's worker was only stalled (SIGSTOP, swapping): it wakes, its job stores the row
    # complete and tells it. The study keeps it failed (its parameters run again as trial 2),
    # and so must the store: it read complete there and failed in the study
    from hydra.core.utils import JobReturn, JobStatus

    from sweep.search import _tell
    from sweep.store import row_id, write_trial

    rid = row_id(None, "s", 1, "u1")
    (store / "models").mkdir(exist_ok=True)
    (store / "models" / f"{rid}.pt").write_bytes(b"weights")
    row = {**_complete_row(study, 1, 0.6), "model_file": f"models/{rid}.pt"}
    write_trial(store, row, [{"layer": "fc", "sparsity": 0.5}], row_id=rid)
    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=row)
    assert _tell.tell(study, "u1", trial, ret, settings, store)[0] == TrialState.FAIL
    for df in (load_results(store), load_results(storage=url, study="s")):
        statuses = df.set_index("optuna.trial")["status"].to_dict()
        assert statuses == {0: "complete", 1: "failed"}
    stale = load_results(store).set_index("optuna.trial").loc[1, "error"]
    assert re.match(r"interrupted: worker \S+ sent no heartbeat for \d+ s; ", stale), stale
    assert not (store / "models" / f"{rid}.pt").exists()


# the test asks outside Study.optimize, as a sweep's own workers do (`ask_within_budget`)
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_dead_workers_row_in_a_store_of_its_own_is_told_from_the_study_not_run_again(tmp_path):
    """Workers with stores of their own (a disk each): one dies after its job wrote the row,
    before its tell. Another worker, whose store lacks the row, failed the trial and ran it
    again; the job now puts its row on the trial just before writing it to its store."""
    import time
    from functools import partial

    from optuna.trial import TrialState

    from sweep import load_layers, load_results
    from sweep.search import _recovery
    from sweep.search._job import record_row

    url = f"sqlite:///{tmp_path}/optuna.db"
    here, there = tmp_path / "here" / "results", tmp_path / "there" / "results"
    settings = _recovery_settings(SearchSpace.from_config({"amount": {"low": 0.1, "high": 0.9}}))
    on_stale = partial(_recovery.requeue_stale, store=here, settings=settings)
    storage = open_storage(url, heartbeat_interval=1, grace_period=2, on_stale=on_stale)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.set_user_attr("uid", "u1")
    trial = study.ask()
    trial.suggest_float("amount", 0.1, 0.9)
    trial.set_user_attr("worker", _dead_worker())
    storage.record_heartbeat(trial._trial_id)
    # the dying worker's job: its row goes to the trial, then to its own store
    ids = (storage, study._study_id, trial._trial_id, study.directions)
    job = OmegaConf.create({"optuna": {"study": "s", "uid": "u1", "trial": 0}})
    record_row(job, ids)(_complete_row(study, 0, 0.75), [{"layer": "fc", "sparsity": 0.5}])
    assert study.trials[0].state == TrialState.RUNNING  # not told: the worker died first
    time.sleep(3.5)  # past the grace period

    _recovery.fail_stale(study, here, settings)
    [told] = study.trials  # nothing queued again
    assert (told.state, told.values) == (TrialState.COMPLETE, [0.75])
    rows = load_results(storage=url, study="s")
    assert rows[["optuna.trial", "status", "acc_finetuned"]].values.tolist() == [
        [0, "complete", 0.75]
    ]
    assert load_layers(storage=url, study="s")[["trial_key", "sparsity"]].values.tolist() == [
        ["key0", 0.5]
    ]
    assert not here.exists() and not there.exists()  # neither store was written here

    # had its worker only stalled, it now stores the row and tells: the study's outcome stands
    from hydra.core.utils import JobReturn, JobStatus

    from sweep.search import _tell
    from sweep.store import row_id, write_trial

    row = _complete_row(study, 0, 0.75)
    write_trial(there, row, [{"layer": "fc", "sparsity": 0.5}], row_id=row_id(None, "s", 0, "u1"))
    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=row)
    assert _tell.tell(study, "u1", trial, ret, settings, there) == (TrialState.COMPLETE, "")
    assert load_results(there)["status"].tolist() == ["complete"]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://u:pw@db/s", "postgresql://u:***@db/s"),
        # issue 22: an empty user name (the user in the query) left the password in 7 files
        ("postgresql://:pw@db/s?user=postgres", "postgresql://:***@db/s?user=postgres"),
        # issue 22: a password holding '@' was cut at its first '@', the rest shown
        ("postgresql://u:p@ss@w@db:5432/s", "postgresql://u:***@db:5432/s"),
        ("mysql+pymysql://u:p%40ss@db/s", "mysql+pymysql://u:***@db/s"),
        ("postgresql://u:p/w:x@db/s", "postgresql://u:***@db/s"),
        (
            "postgresql://db/s?user=u&password=pw&sslmode=require",
            "postgresql://db/s?user=u&password=***&sslmode=require",
        ),
        (
            "postgresql://u@db/s?PWD=pw&sslpassword=pw",
            "postgresql://u@db/s?PWD=***&sslpassword=***",
        ),
        (
            "postgresql://u:pw@/s?host=/var/run/postgresql",
            "postgresql://u:***@/s?host=/var/run/postgresql",
        ),
        ("sqlite:///results/optuna.db", "sqlite:///results/optuna.db"),
        ("grpc://proxy:13000", "grpc://proxy:13000"),
        ("results/it's.journal", "results/it's.journal"),
    ],
)
def test_storage_passwords_are_masked_in_every_form_sqlalchemy_accepts(url, masked):
    from sweep.hashing import mask_password

    assert mask_password(url) == masked


def test_a_row_with_noisy_latency_is_told_without_a_second_warning(caplog):
    from optuna.trial import TrialState

    from sweep.search._tell import tell_row

    spec = settings(objectives=["acc_finetuned", "latency_ms"], directions=["maximize", "minimize"])
    study_settings = StudySettings.from_config(spec, SearchSpace.from_config(SPACE))
    study = optuna.create_study(directions=["maximize", "minimize"])
    row = {
        "status": "complete",
        "acc_finetuned": 0.9,
        "latency_ms": 2.0,
        "speedup": 1.1,
        "speedup_low": 0.6,
        "speedup_high": 1.9,
        "latency_noisy": True,
    }
    for noisy in (True, False):
        trial = study.ask()
        caplog.clear()
        state, _ = tell_row(
            study,
            trial.number,
            {**row, "latency_noisy": noisy},
            study_settings,
            trial.set_user_attr,
        )
        assert state == TrialState.COMPLETE
        assert caplog.messages == []  # the trial warned once, where it measured
    assert [t.values for t in study.trials] == [[0.9, 2.0], [0.9, 2.0]]


@pytest.mark.parametrize(
    ("row", "state", "values"),
    [
        ({"status": "complete", "acc_finetuned": 0.75}, "COMPLETE", [0.75]),
        ({"status": "pruned"}, "PRUNED", None),
        ({"status": "failed", "error": "boom"}, "FAIL", None),
        ({"status": "complete"}, "FAIL", None),  # its objective missing
    ],
)
def test_a_row_is_told_as_study_tell_tells_it(tmp_path, row, state, values):
    from optuna.trial import TrialState

    from sweep.search._tell import tell_row

    spec = settings(objectives=["acc_finetuned"], directions=["maximize"])
    study_settings = StudySettings.from_config(spec, SearchSpace.from_config(SPACE))
    storage = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    study = optuna.create_study(storage=storage, study_name="s")
    live, by_number = study.ask(), study.ask()
    tell_row(study, live, row, study_settings, live.set_user_attr)
    tell_row(study, by_number.number, row, study_settings, by_number.set_user_attr)
    reloaded = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in reloaded] == [TrialState[state]] * 2
    assert [t.values for t in reloaded] == [values] * 2
    # told again: refused as study.tell refuses it (a failure's error attribute first)
    refusal = optuna.exceptions.UpdateFinishedTrialError if state == "FAIL" else ValueError
    with pytest.raises(refusal, match=r"Cannot tell a .* trial|has already finished"):
        tell_row(study, live, row, study_settings, live.set_user_attr)


def test_a_jobs_trial_is_found_again_in_a_study_made_anew_under_its_name(tmp_path):
    from omegaconf import OmegaConf

    from sweep.search._job import _trial

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study_ids = []
    for uid in ("first", "second"):  # the second study replaces the first under one name
        if study_ids:
            optuna.delete_study(study_name="s", storage=url)
        study = optuna.create_study(storage=url, study_name="s", directions=["maximize"] * 2)
        optuna.create_study(storage=url, study_name=uid)  # the next "s" gets another id
        study.ask(), study.ask()
        for number in (0, 1):
            cfg = OmegaConf.create(
                {"optuna": {"storage": url, "study": "s", "uid": uid, "trial": number}}
            )
            _, study_id, trial_id, directions = _trial(cfg)
            assert study_id == study._study_id
            assert trial_id == study.trials[number]._trial_id
            assert directions == study.directions
        study_ids.append(study_id)
    assert study_ids[0] != study_ids[1]


def _journal_mode(database) -> str:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(database)) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]


def test_sqlite_logs_ahead_on_a_local_file_system_and_keeps_a_rollback_journal_elsewhere(
    tmp_path, monkeypatch
):
    from sweep.search import _study

    where = {"kind": "ext4"}
    monkeypatch.setattr(_study, "file_system", lambda path: where["kind"])
    database = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{database}")
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert _journal_mode(database) == "wal"
    storage.engine.dispose()

    where["kind"] = "nfs4"  # the same file, now on a file system other machines see
    storage = open_storage(f"sqlite:///{database}")
    assert _journal_mode(database) == "delete"
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
    assert not (tmp_path / "study.db-wal").exists()

    where["kind"] = "fuse.sshfs"
    open_storage(f"sqlite:///{tmp_path / 'new.db'}")
    assert _journal_mode(tmp_path / "new.db") == "delete"


def test_the_file_system_of_a_path_is_its_deepest_mount(tmp_path):
    from pathlib import Path

    from sweep.search._study import file_system

    table = tmp_path / "mounts"
    table.write_text(
        "/dev/vda / ext4 rw,relatime 0 0\n"
        "server:/export /mnt/shared nfs4 rw 0 0\n"
        "tmpfs /mnt/shared/scratch\\040space tmpfs rw 0 0\n"
        "other:/export /mnt/shared nfs rw 0 0\n"
    )
    assert file_system(Path("/mnt/shared/study/optuna.db"), table) == "nfs"  # mounted last
    assert file_system(Path("/mnt/shared/scratch space/optuna.db"), table) == "tmpfs"
    assert file_system(Path("/mnt/sharedx/optuna.db"), table) == "ext4"
    assert file_system(Path("/mnt"), tmp_path / "no-such-table") is None


def test_the_closing_hint_names_a_model_this_store_holds_or_the_host_that_does(tmp_path):
    """Workers with stores of their own each printed load_model of the study's best trial
    with their own store's path, where only one of them holds its model."""
    from sweep.search._summary import summary
    from sweep.store import row_id, write_trial

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("uid", "u1")
    settings = _recovery_settings(SearchSpace.from_config({"amount": {"low": 0.1, "high": 0.9}}))
    here, there = tmp_path / "here", tmp_path / "there"
    for number, acc, store in ((0, 0.9, there), (1, 0.8, here)):
        trial = study.ask()
        trial.suggest_float("amount", 0.1, 0.9)
        trial.set_user_attr("worker", {"host": "node7" if store == there else "node1"})
        rid = row_id(None, "s", number, "u1")
        (store / "models").mkdir(parents=True, exist_ok=True)
        (store / "models" / f"{rid}.pt").write_bytes(b"weights")
        row = {**_complete_row(study, number, acc), "model_file": f"models/{rid}.pt"}
        row.update(method="l1_unstructured", amount=0.5, sparsity=0.5)
        write_trial(store, row, row_id=rid)
        trial.set_user_attr("row", encode_rows([row]))
        study.tell(trial, acc)
    assert summary(study, settings, there).endswith(
        f"load a trial's pruned model: sweep.load_model('key0', path={str(there)!r})"
    )
    # the best trial's model is on node7: this store holds none of the table's
    assert summary(study, settings, here).endswith(
        "the pruned models are in the stores of the workers that ran them: trial 0's on node7: "
        "sweep.load_model('key0', path=<that worker's store.path>) there"
    )


def test_a_worker_in_another_pid_namespace_of_this_host_is_never_taken_for_dead():
    """A worker in a container sharing the host's name (host networking) has pids this
    process cannot see: its live trial was failed and run again as a dead worker's."""
    from sweep.search._study import is_dead, worker_identity

    alive, dead = worker_identity(), _dead_worker()
    assert alive["pidns"].startswith("pid:[") and len(alive["boot"]) == 36
    assert not is_dead(alive) and is_dead(dead)
    assert not is_dead({**dead, "pidns": "pid:[4026532999]"})  # not ours to see: heartbeats
    assert is_dead({**alive, "boot": "0" * 36})  # the machine booted since: gone
    assert not is_dead({**dead, "host": "elsewhere"})
    legacy = {k: v for k, v in dead.items() if k not in ("boot", "pidns")}
    assert is_dead(legacy)  # recorded before these were: as before


def test_a_postgresql_url_opens_with_the_driver_the_postgres_extra_installs():
    """SQLAlchemy 2.0, the newest on Python 3.10, reads postgresql:// as psycopg2, which the
    ``postgres`` extra does not install: every PostgreSQL study failed there, 'No module named
    psycopg2'. SQLAlchemy 2.1 reads it as psycopg 3."""
    pytest.importorskip("psycopg")
    import sqlalchemy

    from sweep.search._study import driver_url

    url = "postgresql://user:pass@127.0.0.1:1/db"
    engine = sqlalchemy.create_engine(driver_url(url))  # imports the driver, connects to nothing
    assert engine.dialect.driver in ("psycopg", "psycopg2")  # psycopg2: the user installed it
    assert engine.url.render_as_string(hide_password=False).endswith("://user:pass@127.0.0.1:1/db")
    for other in ("sqlite:///x.db", "postgresql+psycopg2://u@h/db", "mysql://u@h/db"):
        assert driver_url(other) == other
