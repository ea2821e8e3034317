"""The sweep's launcher composes each set of group choices once: every job's config must equal
the one Hydra's own launcher composes from the files."""

from __future__ import annotations

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.utils import create_automatic_config_search_path
from hydra.errors import ConfigCompositionException
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf

from sweep.search._launch import ComposingLauncher

# the sweep's command line; every job's overrides start with its task part, as the sweeper's do
FIXED = ["search=tradeoff", "store.path=/tmp/unused"]
SWEEP = [*FIXED, "hydra.sweeper.n_trials=4"]


def _master(*overrides: str):
    path = create_automatic_config_search_path(None, None, "pkg://sweep.conf")
    loader = ConfigLoaderImpl(config_search_path=path)
    cfg = loader.load_configuration("config", [*SWEEP, *overrides], run_mode=RunMode.MULTIRUN)
    return loader, cfg


def _launcher(loader, cfg) -> ComposingLauncher:
    context = HydraContext(config_loader=loader, callbacks=None)
    return ComposingLauncher(BasicLauncher(), context, None, cfg)


JOBS = [
    [*FIXED, "amount=0.5", "method=ln_structured", "optuna.trial=0"],
    [*FIXED, "amount=0.25", "method=ln_structured", "optuna.trial=1"],  # same choices: reused
    [*FIXED, "method=nm", "amount=0.9", "finetune.lr=0.01", "optuna.trial=2"],
    [*FIXED, "model=mlp", "++scope.amounts.layers.1=0.3", "+extra.key=1", "optuna.trial=3"],
    [*FIXED, "amount=0.5", "method.importance=taylor", "optuna.study=s", "optuna.storage='a=b'"],
]


@pytest.mark.parametrize("job", JOBS, ids=lambda j: " ".join(j[len(FIXED) :]))
def test_a_job_config_equals_hydras_composition(job):
    loader, master = _master()
    launcher = _launcher(loader, master)
    for earlier in JOBS:  # the cache holds other jobs' compositions first
        launcher.job_config(earlier)
    ours = launcher.job_config(job)
    hydras = loader.load_sweep_config(master, job)
    assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydras)
    assert list(ours.hydra.overrides.task) == job
    assert OmegaConf.is_struct(ours)


def test_jobs_with_the_same_group_choices_share_one_composition():
    loader, master = _master()
    launcher = _launcher(loader, master)
    configs = [launcher.job_config(job) for job in JOBS]
    assert len(launcher.composer._composed) == 4  # two jobs choose method=ln_structured only
    assert configs[0].amount == 0.5 and configs[1].amount == 0.25  # copies, not one object
    assert configs[0].method.name == configs[1].method.name == "ln_structured"
    assert len(launcher.composer._parsed) == len(
        {line for job in JOBS for line in job}
    )  # each line once


def test_parsed_lines_are_bounded_and_jobs_stay_equal(monkeypatch):
    monkeypatch.setattr("sweep._compose._KEPT_LINES", 8)
    loader, master = _master()
    launcher = _launcher(loader, master)
    for job in JOBS * 2:
        ours = launcher.job_config(job)
        assert len(launcher.composer._parsed) <= max(8, len(job))
        hydras = loader.load_sweep_config(master, job)
        assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydras)


def test_a_config_kept_for_its_launch_is_the_one_launched(monkeypatch):
    monkeypatch.setattr("sweep.search._launch._KEPT_JOBS", 2)
    loader, master = _master()
    launcher = _launcher(loader, master)
    kept = [launcher.job_config(job, keep=True) for job in JOBS[:3]]
    assert launcher.job_config(JOBS[0]) is not kept[0]  # dropped: the bound holds two
    assert launcher.job_config(JOBS[1]) is kept[1]  # composed once, for the check and the job
    assert launcher.job_config(JOBS[1]) is not kept[1]  # taken: the next job composes anew
    assert launcher.job_config(JOBS[2]) is kept[2]
    for job, cfg in zip(JOBS, kept, strict=False):
        hydras = loader.load_sweep_config(master, job)
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(hydras)


def test_a_bad_value_fails_as_hydras_composition_does():
    loader, master = _master()
    launcher = _launcher(loader, master)
    with pytest.raises(ConfigCompositionException):
        loader.load_sweep_config(master, [*FIXED, "no_such_key=1"])
    with pytest.raises(ConfigCompositionException):
        launcher.job_config([*FIXED, "no_such_key=1"])


# the points `sweep.cli.check_overrides` composes before a grid starts: each must be the config
# Hydra's compose() gives, hydra node included, whatever the cache held before it
POINTS = [
    ["amount=0.1", "finetune.epochs=2"],
    ["amount=0.2", "finetune.epochs=2"],
    ["amount=0.1", "finetune.epochs=3"],
    ["method=ln_structured", "amount=0.3", "method.n=1"],
    ["++scope.amounts.layers.1=0.3", "+extra={a: 1}", "~latency"],
    ["model=mlp", "model.hidden=[8,8]", "hydra.job.chdir=true"],
    ["fuse=2", "tag=x"],
]


@pytest.mark.parametrize("point", POINTS, ids=" ".join)
def test_a_checked_grid_point_equals_hydras_compose(point):
    from hydra import compose

    from sweep.cli import _composer, _config_search_path, _parse_args

    with _config_search_path(_parse_args(["-m", *POINTS[0]])):
        composed = _composer("config", [])
        for earlier in POINTS:
            composed(earlier)
        ours = composed(point)
        hydras = compose("config", overrides=point, return_hydra_config=True)
    assert len(composed._composed) == 3  # none; method=; model= with a hydra key: once each
    assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydras)
    assert list(ours.hydra.overrides.task) == [p for p in point if not p.startswith("hydra.")]


def test_a_checked_point_refuses_a_bad_value_as_hydras_compose_does():
    from hydra import compose

    from sweep.cli import _composer, _config_search_path, _parse_args

    with _config_search_path(_parse_args(["-m", "amount=0.1"])):
        composed = _composer("config", [])
        composed(["amount=0.1"])
        errors = []
        for compose_ in (composed, lambda o: compose("config", overrides=o)):
            with pytest.raises(ConfigCompositionException) as e:
                compose_(["amount=abc"])
            errors.append((str(e.value), type(e.value.__cause__), e.value.__cause__.full_key))
    assert errors[0] == errors[1]
    assert errors[0][2] == "amount"


def test_another_launcher_composes_its_own_jobs():
    loader, master = _master()

    class Other:
        def launch(self, job_overrides, initial_job_idx):
            return [("launched", list(o), initial_job_idx) for o in job_overrides]

    context = HydraContext(config_loader=loader, callbacks=None)
    launcher = ComposingLauncher(Other(), context, None, master)
    assert launcher.launch([["amount=0.1"]], initial_job_idx=7) == [("launched", ["amount=0.1"], 7)]


@pytest.mark.slow  # the same sweep twice (about 15 s)
def test_a_sweep_runs_the_same_jobs_with_or_without_reusing_composition(tmp_path):
    """End to end: every job folder's saved config (.hydra/config.yaml) and every row's trial
    key are the same whether the sweep reuses compositions or Hydra composes each job."""
    from sweep import load_results
    from tests.conftest import FAST, run_cli

    args = [
        "-m",
        "search=tradeoff",
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.params.method.choices=[l1_unstructured,ln_structured]",
        *FAST,
        "finetune.epochs=0",
        "store.models=none",
    ]
    for reuse in ("true", "false"):
        result = run_cli(
            *args,
            f"hydra.sweeper.reuse_composition={reuse}",
            f"hydra.sweep.dir=multirun/{reuse}",
            f"store.path=results-{reuse}",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
    keys = [list(load_results(tmp_path / f"results-{r}")["trial_key"]) for r in ("true", "false")]
    assert keys[0] == keys[1] and len(keys[0]) == 4
    for job in range(4):
        saved = [
            OmegaConf.load(tmp_path / f"multirun/{r}/{job}/.hydra/config.yaml")
            for r in ("true", "false")
        ]
        for cfg in saved:  # the only differences: where each sweep was told to write
            cfg.store.path = cfg.optuna.uid = cfg.optuna.storage = None
        assert saved[0] == saved[1]
        overrides = [
            OmegaConf.load(tmp_path / f"multirun/{r}/{job}/.hydra/overrides.yaml")
            for r in ("true", "false")
        ]
        kept = [
            [o for o in each if not o.startswith(("optuna.", "store.path="))] for each in overrides
        ]
        assert kept[0] == kept[1]


@pytest.mark.slow  # about 13 s: the default suite stays under 10 minutes
def test_a_grid_runs_the_same_jobs_as_hydras_basic_sweeper(tmp_path):
    """The grid sweeper (the default) composes each set of group choices once; its jobs, their
    folders, saved configs and rows are those of Hydra's basic sweeper (hydra/sweeper=basic)."""
    from sweep import load_results
    from tests.conftest import FAST, run_cli

    args = ["-m", "amount=0.2,0.6", "method=l1_unstructured,ln_structured", *FAST]
    args += ["finetune.epochs=0", "store.models=none"]
    runs = {"grid": [], "basic": ["hydra/sweeper=basic"]}
    for name, choice in runs.items():
        result = run_cli(
            *args, *choice, f"hydra.sweep.dir=multirun/{name}", f"store.path=r-{name}", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("[4/4") == 1  # the jobs were counted as a grid's
    assert "prune_sweep.GridSweeper" in (tmp_path / "multirun/grid/0/.hydra/hydra.yaml").read_text()
    rows = [load_results(tmp_path / f"r-{name}").sort_values("trial_key") for name in runs]
    assert len(rows[0]) == 4
    for column in ("trial_key", "method", "amount", "sparsity", "acc_pruned", "acc_finetuned"):
        assert list(rows[0][column]) == list(rows[1][column]), column
    for job in range(4):
        folders = [tmp_path / f"multirun/{name}/{job}/.hydra" for name in runs]
        for file in ("config.yaml", "overrides.yaml"):
            texts = [(f / file).read_text().replace("r-basic", "r-grid") for f in folders]
            assert texts[0] == texts[1], (job, file)


COUNTED = """
from pathlib import Path

import sweep.data


def digits(builds, **settings):
    with open(builds, "a") as f:
        f.write("built\\n")
    return sweep.data.digits(**settings)
"""


@pytest.mark.slow  # a sweep and single runs, counted (about 17 s)
def test_a_sweep_builds_its_dataset_once_and_a_single_run_every_time(tmp_path):
    """A worker's jobs share the dataset (the jobs of a multirun run in one process); a single
    run builds it afresh, as its files may have changed since the last."""
    from tests.conftest import FAST, run_cli

    (tmp_path / "counted.py").write_text(COUNTED)
    builds = tmp_path / "builds.txt"
    dataset = ["dataset._target_=counted.digits", f"+dataset.builds={builds}"]
    result = run_cli(
        "-m",
        "search=tradeoff",
        "hydra.sweeper.n_trials=3",
        *FAST,
        "finetune.epochs=0",
        *dataset,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # the command line's check before the sweep, then the worker's jobs: one build each
    assert builds.read_text().count("built") == 2
    builds.unlink()
    for _ in range(2):
        result = run_cli(*FAST, "finetune.epochs=0", *dataset, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert builds.read_text().count("built") == 4  # check and trial, each run


def test_a_sweeps_jobs_copy_our_model_built_once_and_build_a_users_every_time(
    tmp_path, monkeypatch
):
    """Within a multirun, a model of ours is built once and copied: the same weights and the
    same random state after it as a build; a user's builder runs every time (it may read files
    of its own); a single run always builds."""
    import torch

    import sweep.plan
    from tests.conftest import make_cfg

    builds = []
    real = sweep.plan.build_model
    monkeypatch.setattr(sweep.plan, "build_model", lambda *a: builds.append(a[0]) or real(*a))
    monkeypatch.setattr(sweep.plan, "_LAST_MODEL", {})
    cfg = make_cfg(tmp_path, "seed=3")

    alone = sweep.plan.prepare(cfg, check_store=False)  # not a multirun: built
    after_build = torch.rand(3)
    monkeypatch.setattr(sweep.plan, "_in_multirun", lambda: True)
    first = sweep.plan.prepare(cfg, check_store=False)
    second = sweep.plan.prepare(cfg, check_store=False)
    after_copy = torch.rand(3)
    assert len(builds) == 2  # the single run, then the multirun's first job
    assert second.model is not first.model
    for model in (first.model, second.model):
        state = model.state_dict()
        assert all(torch.equal(v, state[k]) for k, v in alone.model.state_dict().items())
    assert torch.equal(after_copy, after_build)
    next(second.model.parameters()).data.zero_()  # a trial prunes its copy, not the kept one
    third = sweep.plan.prepare(cfg, check_store=False)
    assert torch.equal(next(third.model.parameters()), next(alone.model.parameters()))
    other = sweep.plan.prepare(make_cfg(tmp_path, "seed=4"), check_store=False)
    assert len(builds) == 3 and not torch.equal(
        next(other.model.parameters()), next(alone.model.parameters())
    )

    builds.clear()
    custom = make_cfg(tmp_path, "model._target_=tests.custom_models.ChannelShuffleNet")
    for _ in range(2):
        sweep.plan.prepare(custom, check_store=False)
    assert len(builds) == 2


@pytest.mark.parametrize("job", JOBS, ids=lambda j: " ".join(j[len(FIXED) :]))
def test_a_job_runs_as_hydras_run_job_runs_it(job, tmp_path, monkeypatch):
    """Same folder, same .hydra files byte for byte, same config for the task, same Hydra
    config seen from inside it, same return, with fewer copies (issue 24)."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    from sweep.search._launch import _run_job

    monkeypatch.chdir(tmp_path)
    setup_globals()
    loader, master = _master("hydra.sweep.dir=multirun/${hydra.job.name}")
    context = HydraContext(config_loader=loader, callbacks=Callbacks(master))
    launcher = ComposingLauncher(BasicLauncher(), context, None, master)
    seen = []

    def task(cfg):
        hydra = HydraConfig.get()
        seen.append((OmegaConf.to_yaml(cfg), OmegaConf.get_type(cfg), OmegaConf.is_struct(cfg)))
        seen.append((hydra.runtime.output_dir, list(hydra.overrides.task), hydra.job.num))
        return {"amount": cfg.amount}

    returns = []
    for n, run in enumerate((run_job, _run_job)):
        cfg = launcher.job_config(list(job))
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = n
            cfg.hydra.sweep.subdir = "job"
            cfg.hydra.sweep.dir = f"multirun/{n}"
        if run is run_job:
            returns.append(run(task, cfg, "hydra.sweep.dir", "hydra.sweep.subdir", context))
        else:
            returns.append(run(context, task, cfg))
    ours, hydras = returns[1], returns[0]
    folders = [tmp_path / f"multirun/{n}/job/.hydra" for n in (0, 1)]
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        expected = (folders[0] / name).read_text().replace("multirun/0", "multirun/1")
        expected = expected.replace("num: 0", "num: 1").replace("id: '0'", "id: '1'")
        assert (folders[1] / name).read_text() == expected, name
    assert seen[2][0] == seen[0][0] and seen[2][1:] == seen[0][1:]
    assert seen[3] == (str(folders[1].parent), seen[1][1], 1)
    assert (ours.status, ours.return_value, ours.task_name) == (
        hydras.status,
        hydras.return_value,
        hydras.task_name,
    )
    assert ours.overrides == hydras.overrides
    assert ours.working_dir == hydras.working_dir.replace("multirun/0", "multirun/1")
    assert OmegaConf.to_yaml(ours.cfg) == OmegaConf.to_yaml(hydras.cfg)
    assert HydraConfig.instance().cfg is None or HydraConfig.get().job.num != 1
