"""Workers and grid jobs started by Hydra's submitit launchers (hydra/launcher=submitit_*).

submitit_local runs real jobs on this machine; SLURM is not installed, so the submitit_slurm
test puts stand-ins for its commands on PATH (sbatch keeps the script it is given, sacct says
the jobs failed) and checks what submitit would submit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from shutil import which

import optuna
import pytest
from optuna.trial import TrialState

from sweep import load_results
from sweep.search._workers import SubmititWorker, worker_arguments
from tests.conftest import FAST, run_cli

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

OPTUNA = ["-m", "search=tradeoff", *FAST, "finetune.epochs=1"]
LOCAL = ["hydra/launcher=submitit_local", "hydra.sweep.dir=sweep"]


def study(path: Path, name: str = "tradeoff") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}/results/optuna.db")


@pytest.mark.slow
def test_submitit_local_workers_run_the_study(tmp_path):
    result = run_cli(
        *OPTUNA, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", *LOCAL, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("started 2 worker(s) as submitit local job(s) ")
    assert "study tradeoff: 4 trials (4 complete) in sqlite:///results/optuna.db" in result.stdout
    s = study(tmp_path)
    assert [t.state for t in s.trials] == [TrialState.COMPLETE] * 4
    df = load_results(tmp_path / "results")
    assert len(df) == 4 and sorted(df["optuna.trial"]) == [0, 1, 2, 3]
    assert (df.status == "complete").all()
    # every trial ran in a job's own process, none in the command's
    logs = sorted((tmp_path / "sweep" / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 2
    lines = [ln for log in logs for ln in log.read_text().splitlines() if ": complete," in ln]
    assert len(lines) == 4
    assert ": complete," not in result.stdout
    pids = {t.user_attrs["worker"]["pid"] for t in s.trials}
    assert 1 <= len(pids) <= 2


def test_submitit_slurm_settings_reach_the_sbatch_script(tmp_path):
    bin_dir = _fake_slurm(tmp_path / "bin")
    result = run_cli(
        *OPTUNA,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=3",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=8",
        "hydra.launcher.tasks_per_node=8",
        "hydra.launcher.timeout_min=720",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    script = (bin_dir / "submitted.sh").read_text().splitlines()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --time=720",
        "#SBATCH --array=0-2%3",  # one array of n_jobs workers
    ):
        assert line in script
    assert any(ln.startswith("srun ") and "-m submitit.core._submit" in ln for ln in script)
    # what each array task runs: an ordinary worker with the basic launcher, and its number
    from submitit.core.utils import pickle_load

    submitted = [
        pickle_load(tmp_path / "sweep" / ".submitit" / f"4242_{i}" / f"4242_{i}_submitted.pkl")
        for i in range(3)
    ]
    worker = submitted[0].function
    assert isinstance(worker, SubmititWorker) and worker.sharing == 0
    assert worker.arguments[-1] == "hydra/launcher=basic"
    assert not any(
        a.startswith(("hydra.launcher.", "hydra/launcher=submitit")) for a in worker.arguments
    )
    # 8 workers (tasks) per job, task K pinned to GPU K: worker numbers 8-15, 16-23, 24-31
    assert [d.args for d in submitted] == [(8,), (16,), (24,)]
    assert "#SBATCH --signal=USR2@120" in script  # the worker's notice of its time limit
    # the stand-in sacct says every job failed: the command says so, and nothing is left running
    assert result.returncode == 1
    assert result.stderr.count("worker job 4242_") == 3
    assert (
        result.stderr.strip().splitlines()[-1] == "error: 3 worker job(s) did not end well (above)"
    )
    assert study(tmp_path).trials == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["hydra/launcher=submitit_local", "hydra.sweeper.storage=sqlite:///:memory:"],
            "error: hydra.sweeper.storage='sqlite:///:memory:' is in memory, which each part of "
            "a sweep (the sweeper, its jobs, its workers) would open anew and empty; accepted: a "
            "database URL (postgresql://, mysql://) or a sqlite:/// file on a file system every "
            "job sees",
        ),
        (
            ["hydra.sweeper.storage=sqlite:///:memory:"],
            "error: hydra.sweeper.storage='sqlite:///:memory:' is in memory, which each part of "
            "a sweep (the sweeper, its jobs, its workers) would open anew and empty; accepted: a "
            "database URL (postgresql://, mysql://) or a sqlite:/// file on disk",
        ),
        (
            ["hydra/launcher=submitit_slurm", "hydra.sweeper.storage=journal.log"],
            "error: hydra/launcher=submitit_slurm with a journal file: a worker SLURM stops on "
            "another node would leave its trial RUNNING, as only heartbeats tell it; accepted: a "
            "database URL (postgresql://, mysql://, or sqlite:/// on a shared file system) with "
            "hydra.sweeper.heartbeat_interval set",
        ),
        (
            ["hydra/launcher=submitit_slurm", "hydra.sweeper.heartbeat_interval=null"],
            "error: hydra/launcher=submitit_slurm with hydra.sweeper.heartbeat_interval=null: a "
            "worker SLURM stops on another node would leave its trial RUNNING, as only heartbeats "
            "tell it; accepted: a database URL (postgresql://, mysql://, or sqlite:/// on a shared "
            "file system) with hydra.sweeper.heartbeat_interval set",
        ),
        (
            ["hydra/launcher=submitit_slurm"],
            "error: hydra/launcher=submitit_slurm needs SLURM's srun and sbatch, not found on "
            "PATH; accepted: a SLURM login node, or hydra/launcher=submitit_local on one machine",
        ),
    ],
)
def test_a_storage_submitit_workers_cannot_share_is_refused(tmp_path, args, message):
    if args == ["hydra/launcher=submitit_slurm"] and (which("srun") or which("sbatch")):
        pytest.skip("SLURM's commands are on this machine's PATH")
    result = run_cli(*OPTUNA, "hydra.sweeper.n_jobs=2", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == message
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, database or folder


def test_worker_arguments_keep_the_command_but_the_workers_own_settings(tmp_path):
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "hydra": {
                "overrides": {
                    "task": ["search=tradeoff", "amount=0.5"],
                    "hydra": [
                        "hydra.sweeper.n_jobs=4",
                        "hydra.mode=MULTIRUN",
                        "hydra/launcher=submitit_slurm",
                        "hydra.sweeper.n_trials=32",
                    ],
                }
            }
        }
    )
    assert worker_arguments(config, tmp_path) == [
        "--multirun",
        "search=tradeoff",
        "amount=0.5",
        "hydra/launcher=submitit_slurm",
        "hydra.sweeper.n_trials=32",
        f"hydra.sweep.dir='{tmp_path}'",
    ]


@pytest.mark.slow
def test_a_killed_submitit_worker_is_recovered_by_the_other(tmp_path):
    args = [
        *OPTUNA,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        *LOCAL,
        "finetune.epochs=30",
    ]
    proc = _start(tmp_path, args)
    victim = _running_trial(tmp_path)
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)  # as SLURM kills at the limit
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1] == "error: 1 worker job(s) did not end well (above)"
    s = study(tmp_path)
    states = [t.state for t in s.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    failed = s.trials[victim.number]
    assert failed.state == TrialState.FAIL
    assert "sent no heartbeat" in s.user_attrs[f"interrupted-{victim.number}"]
    [retry] = [t for t in s.trials if t.user_attrs.get("retry_of") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert states.count(TrialState.COMPLETE) == 3
    df = load_results(tmp_path / "results")
    assert df.status.value_counts().to_dict() == {"complete": 3, "failed": 1}


@pytest.mark.slow
def test_a_worker_at_its_time_limit_fails_its_trial_and_queues_it_again(tmp_path):
    # submitit signals a job signal_delay_s before its time limit (SLURM: USR2, then SIGTERM
    # at the limit): the worker fails its running trial as interrupted and queues it again
    args = [
        *OPTUNA,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        *LOCAL,
        # submitit_local signals 30 s before the limit (submitit's default; its Hydra config
        # has no signal_delay_s): 30 s after the job starts
        "hydra.launcher.timeout_min=1",
        "finetune.epochs=5000",
    ]
    proc = _start(tmp_path, args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "exited with code 143" in err  # 128 + SIGTERM
    s = study(tmp_path)
    [trial, retry] = s.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] is True
    assert trial.user_attrs["error"] == "interrupted by SIGTERM"
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == trial.number
    # the next run of the command runs it; the failed row says why it stopped
    df = load_results(tmp_path / "results")
    assert df.error.tolist() == ["interrupted by SIGTERM"]


@pytest.mark.slow
def test_grid_jobs_run_through_submitit_local_each_alone(tmp_path):
    result = run_cli(
        "-m",
        "amount=0.25,0.5",
        *FAST,
        "fuse=2",  # under the basic launcher, these two jobs finetune fused
        *LOCAL,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    jobs = list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))
    assert len(jobs) == 2  # a job per grid point
    df = load_results(tmp_path / "results")
    assert len(df) == 2 and (df.status == "complete").all()
    assert sorted(df.amount) == [0.25, 0.5]
    assert (df.fused == 1).all()  # each job in its own process: nothing to fuse with
    logs = sorted((tmp_path / "sweep").glob("*/sweep.log"))
    assert len(logs) == 2
    for log in logs:  # each job says why it ran alone
        assert "fuse=2: each job runs alone under the launcher hydra_plugins." in log.read_text()


def _start(path: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweep", *args],
        cwd=path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(path)},
    )


def _running_trial(path: Path) -> optuna.trial.FrozenTrial:
    """A trial a worker has claimed and runs, once one has run a second or more."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if (path / "results" / "optuna.db").exists():
            try:
                running = study(path).get_trials(states=(TrialState.RUNNING,))
            # the study is not made yet, or its schema is being made (opening the database
            # races the workers on creating it)
            except Exception:
                running = []
            claimed = [t for t in running if "worker" in t.user_attrs]
            if claimed:
                time.sleep(1.0)
                return claimed[0]
        time.sleep(0.2)
    raise AssertionError("no trial ran within 180 s")


def _fake_slurm(bin_dir: Path) -> Path:
    """sbatch, srun and sacct stand-ins: sbatch keeps the script and answers a job id."""
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" {bin_dir}/submitted.sh\necho "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 1\n",
        "sacct": '#!/bin/sh\necho "JobID|State|NodeList"\necho "4242_[0-2]|FAILED|node1"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir
