"""The workers a sweep starts for ``hydra.sweeper.n_jobs``: local processes, or submitit jobs.

Every worker is an ordinary one: ``python -m sweep --multirun`` with the command's own
overrides, asking and telling the shared study. With Hydra's basic launcher (or any launcher
but submitit's), the command's own process is worker 0 and starts ``n_jobs - 1`` local helper
processes beside it (`LocalWorkers`). With ``hydra/launcher=submitit_slurm`` (or
``submitit_local``), all ``n_jobs`` workers are submitit jobs (one SLURM array, its
``hydra.launcher.*`` settings as the jobs' resources), each task of a job one worker running
its trials in its own process; the command waits for them and prints the study's summary
(`SubmititWorkers`). The study's storage is all they share, so it must be one every job
reaches, and on a cluster one whose heartbeats tell a worker SLURM killed (`check_storage`).
"""

from __future__ import annotations

import dataclasses
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep._env import STORAGE_ENV, WORKER_ENV, stop_grace_s
from sweep.errors import ConfigError
from sweep.search._study import GRPC, StudySettings

__all__ = [
    "LocalWorkers",
    "SubmititWorker",
    "SubmititWorkers",
    "check_storage",
    "start_workers",
    "submitit_executor",
]

# hydra/launcher=submitit_slurm and submitit_local, by the launchers they name
_SUBMITIT_TARGETS = {
    f"hydra_plugins.hydra_submitit_launcher.submitit_launcher.{name}Launcher": name.lower()
    for name in ("Slurm", "Local")
}
# What a worker started by the sweep leaves out of the command's Hydra overrides: each worker
# is one (n_jobs), a multirun (mode), and writes where the command writes (sweep.dir).
_NOT_FOR_WORKERS = ("hydra.sweeper.n_jobs=", "hydra.mode=", "hydra.sweep.dir=")


class Workers:
    """The workers a sweep started; ``here``: the command's own process is a worker too."""

    here = True
    # after a signal, a line for each worker that had not stopped in time and was killed
    killed: tuple[str, ...] | list[str] = ()

    def signal(self, signum: int) -> None:
        """Pass on a signal the command got, so that every worker fails its running trial."""

    def wait(self) -> list[str]:
        """Wait for every worker to end; one line for each that did not end well."""
        return []


def start_workers(
    launcher: Any, config: DictConfig, settings: StudySettings, sweep_dir: Path
) -> Workers:
    """Start the sweep's workers: submitit jobs under a submitit launcher, else local helpers.

    Args:
        launcher: The launcher Hydra configured (or the sweep's `ComposingLauncher` around it).
        config: The sweep's config, its storage URL masked already (`_scrub_storage`): the
            workers' command line comes from its recorded overrides.
        settings: The study's settings; the real storage URL is in ``STORAGE_ENV`` already.
        sweep_dir: ``hydra.sweep.dir``; the workers write their folders and logs under it.
    """
    if submitit_executor(config) is not None:
        launcher = getattr(launcher, "fallback", launcher)
        return SubmititWorkers.start(launcher, config, settings.n_jobs, sweep_dir)
    return LocalWorkers.start(config, settings.n_jobs - 1, sweep_dir)


def check_storage(config: DictConfig, settings: StudySettings) -> None:
    """Refuse a storage that the workers ``config``'s launcher starts as submitit jobs cannot
    share or recover on; called with the study's settings (`study_settings`), before anything
    is written.

    Raises:
        ConfigError: An in-memory SQLite database (each part of the sweep would have its own);
            under ``submitit_slurm``: a storage without heartbeats (a journal
            file, the gRPC proxy, or ``heartbeat_interval=null``), on which the trial of a
            worker SLURM kills on another node would stay RUNNING; SLURM's commands not on
            PATH.
    """
    url, executor = settings.storage, submitit_executor(config)
    if url.partition("?")[0] in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url:
        shared = "a file system every job sees" if executor else "disk"
        raise ConfigError(
            f"hydra.sweeper.storage={url!r} is in memory, which each part of a sweep (the "
            "sweeper, its jobs, its workers) would open anew and empty; accepted: a database "
            f"URL (postgresql://, mysql://) or a sqlite:/// file on {shared}"
        )
    if executor is None:
        return
    kind = f"hydra/launcher=submitit_{executor}"
    if executor != "slurm":
        return  # one machine: a dead worker is told by its pid (`recover_interrupted`)
    if "://" not in url or url.startswith(GRPC) or settings.heartbeat_interval is None:
        if "://" not in url:
            what = "a journal file"
        elif url.startswith(GRPC):
            what = "the gRPC storage proxy"
        else:
            what = "hydra.sweeper.heartbeat_interval=null"
        raise ConfigError(
            f"{kind} with {what}: a worker SLURM stops on another node would leave its trial "
            "RUNNING, as only heartbeats tell it; accepted: a database URL (postgresql://, "
            "mysql://, or sqlite:/// on a shared file system) with hydra.sweeper."
            "heartbeat_interval set"
        )
    missing = [c for c in ("srun", "sbatch") if shutil.which(c) is None]
    if missing:  # submitit's own "Could not detect srun" came after the study was made
        raise ConfigError(
            f"{kind} needs SLURM's {' and '.join(missing)}, not found on PATH; accepted: a "
            "SLURM login node, or hydra/launcher=submitit_local on one machine"
        )


def submitit_executor(config: DictConfig) -> str | None:
    """``slurm`` or ``local`` when ``config``'s Hydra launcher is hydra-submitit-launcher's
    (``hydra/launcher=submitit_slurm`` or ``submitit_local``); ``None`` for any other."""
    target = OmegaConf.select(config, "hydra.launcher._target_", default=None)
    return _SUBMITIT_TARGETS.get(target)


def worker_arguments(config: DictConfig, sweep_dir: Path) -> list[str]:
    """``python -m sweep`` arguments of a worker of the sweep ``config`` runs."""
    hydra_args = [o for o in config.hydra.overrides.hydra if not o.startswith(_NOT_FOR_WORKERS)]
    return [
        "--multirun",
        *config.hydra.overrides.task,
        *hydra_args,
        f"hydra.sweep.dir='{sweep_dir}'",
    ]


@dataclasses.dataclass
class LocalWorkers(Workers):
    """Helper processes beside the command's own, which is worker 0."""

    procs: list[subprocess.Popen]
    sweep_dir: Path
    grace: float  # seconds a helper has to stop after a signal (`stop_grace_s`)
    stop_by: float | None = None  # after a signal: when a helper that has not stopped is killed
    killed: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def start(cls, config: DictConfig, count: int, sweep_dir: Path) -> LocalWorkers:
        grace = stop_grace_s()  # a bad value is told now, not once a signal came
        cmd = [sys.executable, "-m", "sweep", *worker_arguments(config, sweep_dir)]
        procs = []
        for i in range(1, count + 1):
            env = {**os.environ, WORKER_ENV: str(i), "SWEEP_THREADS": str(threads(count + 1))}
            out = open(sweep_dir / f"worker-{i}.log", "w")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
        if count:
            logs = "worker-1.log" if count == 1 else f"worker-1.log ... worker-{count}.log"
            print(f"started {count} helper worker(s); their trial lines: {sweep_dir}/{logs}")
        return cls(procs, sweep_dir, grace)

    def signal(self, signum: int) -> None:
        self.stop_by = time.monotonic() + self.grace
        for proc in self.procs:  # helpers started by a terminal got a Ctrl-C themselves
            with suppress(ProcessLookupError):
                proc.send_signal(signum)

    def wait(self) -> list[str]:
        lines = []
        for i, proc in enumerate(self.procs, start=1):
            log = self.sweep_dir / f"worker-{i}.log"
            try:
                timeout = None if self.stop_by is None else max(0, self.stop_by - time.monotonic())
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:  # stuck: a second Ctrl-C is ignored, so kill it
                proc.kill()
                proc.wait()
                self.killed.append(
                    f"worker {i} had not stopped {self.grace:g} s after the signal: killed; "
                    f"its output is in {log}"
                )
                continue
            if code != 0:
                lines.append(f"worker {i} exited with code {code}; its output is in {log}")
        return lines


@dataclasses.dataclass
class SubmititWorkers(Workers):
    """``n_jobs`` submitit jobs (one array), every task of each a worker; the command waits."""

    jobs: list[Any]
    executor: str
    here = False

    @classmethod
    def start(
        cls, launcher: Any, config: DictConfig, n_jobs: int, sweep_dir: Path
    ) -> SubmititWorkers:
        executor = make_executor(launcher)
        tasks = int(launcher.params.get("tasks_per_node", 1)) * int(launcher.params.get("nodes", 1))
        worker = SubmititWorker(
            # trials run in the worker's own process: Hydra's basic launcher, whatever the
            # command's configs choose
            arguments=(
                *(a for a in worker_arguments(config, sweep_dir) if not _launcher_override(a)),
                "hydra/launcher=basic",
            ),
            cwd=os.getcwd(),
            # workers that share one machine share its cores (all of them, on one's own)
            sharing=n_jobs * tasks if launcher._EXECUTOR == "local" else 0,
        )
        # worker numbers from `tasks` on (0 is the command): task K of a job is worker K mod
        # `tasks`, which pins it to GPU K when a node has as many GPUs as tasks
        jobs = executor.map_array(worker, [(i + 1) * tasks for i in range(n_jobs)])
        kind = "SLURM" if launcher._EXECUTOR == "slurm" else "submitit local"
        print(
            f"started {n_jobs} worker(s) as {kind} job(s) {', '.join(j.job_id for j in jobs)}; "
            f"their logs: {jobs[0].paths.folder.parent}"
        )
        return cls(jobs, launcher._EXECUTOR)

    def signal(self, signum: int) -> None:
        for job in self.jobs:
            if self.executor != "local":
                job.cancel(check=False)  # scancel: SIGTERM to every task, as a time limit
                continue
            # the job's controller passes SIGTERM on to its tasks and waits for them (after a
            # SIGINT, which `cancel` sends, it kills them a second later)
            with suppress(ProcessLookupError):
                job._process.send_signal(signal.SIGTERM)

    def wait(self) -> list[str]:
        lines = []
        for job in self.jobs:
            job.wait()
            state = job.state.split()[0]  # sacct's, such as "CANCELLED by 1000"
            if self.executor == "slurm" and state != "COMPLETED":
                # TIMEOUT, CANCELLED, NODE_FAIL...: SLURM ended it, and it left no result
                lines.append(f"worker job {job.job_id} ended {state}; " + _log(job))
                continue
            try:
                code = job.result()
            except Exception as e:  # submitit's: no result (killed), or the job's traceback
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                lines.append(
                    f"worker job {job.job_id} ended without a result ({reason}); {_log(job)}"
                )
                continue
            if code != 0:
                lines.append(f"worker job {job.job_id} exited with code {code}; {_log(job)}")
        return lines


@dataclasses.dataclass(frozen=True)
class SubmititWorker:
    """What a submitit job runs: one ordinary worker per task, in the task's own process.

    Pickled into the job's folder: it holds the command line (the storage URL masked) and
    never the URL itself, which reaches the job through the environment (``STORAGE_ENV``),
    as sbatch and submitit's local executor pass on the submitting process's.
    """

    arguments: tuple[str, ...]
    cwd: str
    # workers on this machine (submitit_local), whose cores they share; 0: a node of its own
    sharing: int

    def __call__(self, first: int) -> int:
        """Run worker ``first`` + the task's rank; its exit status (0: it ended well)."""
        import submitit

        job = submitit.JobEnvironment()
        if STORAGE_ENV not in os.environ:
            print(
                f"error: {STORAGE_ENV} did not reach this job; accepted: jobs that get the "
                "submitting command's environment (sbatch --export=ALL, SLURM's default)",
                file=sys.stderr,
            )
            return 2
        os.chdir(self.cwd)  # relative store and storage paths, as the command had them
        os.environ[WORKER_ENV] = str(first + job.global_rank)
        os.environ.setdefault("SWEEP_THREADS", str(self._threads(job.num_tasks)))
        # submitit's signal before the time limit: the trial in flight is failed and queued
        # again, as at the SIGTERM that follows it (`OptunaSweep.sweep`)
        signal.signal(job._usr_sig(), lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))
        # ``python -m sweep`` in this process (the worker sits below the command line)
        sys.argv = ["sweep", *self.arguments]
        try:
            runpy.run_module("sweep", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 1
        return 0

    def _threads(self, tasks: int) -> int:
        cores = len(os.sched_getaffinity(0))
        if self.sharing:
            return max(1, cores // self.sharing)
        return int(os.environ.get("SLURM_CPUS_PER_TASK") or max(1, cores // tasks))


def make_executor(launcher: Any) -> Any:
    """The submitit executor ``launcher`` (``submitit_slurm``/``_local``) submits with: its
    ``hydra.launcher.*`` settings as the jobs' resources, as the launcher passes them."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    kind, params = launcher._EXECUTOR, dict(launcher.params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{kind}_max_num_timeout"] = params.pop("max_num_timeout")
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(cluster=kind, **init)
    executor.update_parameters(
        **{k if k in shared else f"{kind}_{k}": v for k, v in params.items()}
    )
    return executor


def threads(workers: int) -> int:
    """Threads for each of ``workers`` processes on this machine."""
    return max(1, (os.cpu_count() or 1) // workers)


def _launcher_override(argument: str) -> bool:
    key = argument.lstrip("+~").partition("=")[0]
    return key == "hydra/launcher" or key.startswith("hydra.launcher.")


def _log(job: Any) -> str:
    return f"its log: {job.paths.stdout}"
