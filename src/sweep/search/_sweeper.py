"""The Optuna sweep: ask a trial, launch it as a Hydra job, tell the study what it stored.

Many workers (local processes started with ``n_jobs``, or commands started by hand on other
machines) share one study through its storage; each asks for trials while the study's budget
(``n_trials`` counted trials) lasts. Asking is serialised by the study's lock, which lives in
the storage (`study_lock`), or checked by ticket where no lock passes (the gRPC proxy,
`keep_ticket`), so the budget is never overshot.

Around it: the sweep's settings come from `sweep.search._settings`; a trial is told its outcome
by `sweep.search._tell`, and told exactly once whatever dies by `sweep.search._recovery`
(heartbeats, stale and interrupted trials, requeues, repeats); what the sweep prints at its end
is `sweep.search._summary`.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import TrialState
from tqdm.auto import tqdm

from sweep._console import place_next_trial, show_progress
from sweep._env import STORAGE_ENV, WORKER_ENV
from sweep._signals import held, ignore_signals, released, signal_name, signals_raise
from sweep.errors import ConfigError
from sweep.hashing import mask_password
from sweep.search._launch import ComposingLauncher
from sweep.search._recovery import (
    fail_stale,
    first_heartbeat,
    give_back_repeat,
    heartbeat,
    heartbeat_interval,
    interrupt,
    recover_interrupted,
    repeated,
    requeue_stale,
)
from sweep.search._settings import check_unchanged, study_settings
from sweep.search._space import overrides, quoted
from sweep.search._study import (
    StudySettings,
    counted_trials,
    counts,
    create_study,
    gpu_for_worker,
    has_lock,
    keep_ticket,
    make_sampler,
    open_storage,
    stale_trials,
    study_lock,
    visible_gpus,
    worker_identity,
)
from sweep.search._summary import summary
from sweep.search._tell import FINISHED, failures_in_a_row, grid_done, tell
from sweep.search._workers import Workers, start_workers
from sweep.search._workers import threads as _threads
from sweep.store import clean, index_written

log = logging.getLogger(__name__)

# A study attribute per worker that ever started on it (`register_worker`)
WORKER_PREFIX = "worker-"
# Parameter sets in a row the sampler may propose that trials ran already (`repeated`) before
# the worker takes the search space for exhausted and stops asking
REPEATS_IN_A_ROW = 20
# The most seconds between a worker's looks for other workers' stale or unclaimed trials
STALE_EVERY_S = 10
# Once the budget is spent, a worker waits for the others' running trials (one may yet die and
# be queued again): first this long, then twice as long each time, up to IDLE_MAX_S (and the
# heartbeat interval)
IDLE_FIRST_S = 0.05
IDLE_MAX_S = 5


class OptunaSweep:
    """State and steps of one worker's sweep; the Hydra plugin is a thin shell around it."""

    def __init__(self, sweeper_cfg: DictConfig) -> None:
        self.sweeper_cfg = sweeper_cfg
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        if self.sweeper_cfg.get("reuse_composition", True) is True:  # checked in study_settings
            launcher = ComposingLauncher(launcher, hydra_context, task_function, config)
        self.launcher = launcher

    def sweep(self, arguments: Sequence[str]) -> list[Any]:
        from sweep.errors import fail

        try:
            settings, fixed = self._settings(arguments)
            if os.environ.get(WORKER_ENV, "0") != "0":
                # a local helper: the real storage URL comes from its parent, never from argv
                settings = dataclasses.replace(settings, storage=os.environ[STORAGE_ENV])
            # in-process jobs and helpers read the real URL here; nothing written holds it
            os.environ[STORAGE_ENV] = settings.storage
            _scrub_storage(self.config, settings.storage)
            store = Path(self.config.store.path).expanduser()
            storage = open_storage(
                settings.storage,
                settings.heartbeat_interval,
                settings.grace_period,
                on_stale=partial(requeue_stale, store=store, settings=settings),
            )
            worker = int(os.environ.get(WORKER_ENV, "0"))
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = create_study(settings, storage, seed_offset=0)
            lock = partial(study_lock, storage, settings.storage, settings.study_name)
            from sweep.plan import dataset_fingerprint

            fingerprint = dataset_fingerprint(self.config)  # outside the lock: it reads files
            with lock():
                loader = self.hydra_context.config_loader
                check_unchanged(
                    study,
                    settings,
                    fixed,
                    self.config,
                    lambda overrides: loader.load_sweep_config(self.config, overrides),
                    fingerprint,
                )
        except ConfigError as e:
            fail(str(e))
        offset = register_worker(study, lock)
        study.sampler = make_sampler(settings.sampler, settings.space, seed_offset=offset)
        clean(store)  # what killed writers left behind more than an hour ago
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        _limit_threads(settings.n_jobs)

        if worker == 0:
            # under the lock that asks are made under: workers restarted together recover
            # each dead trial once, and no worker asks while a trial is being requeued
            with lock():
                recovered = recover_interrupted(study, storage, store, settings)
            if recovered:
                print(
                    f"study {settings.study_name}: failed and requeued {recovered} trial(s) "
                    "left running by a worker that died"
                )
            workers = start_workers(self.launcher, self.config, settings, sweep_dir)
        else:
            workers = Workers()
        signum, ended_badly = None, None
        results, stop = [], None
        try:
            progress = worker == 0 and show_progress(self.config.progress)
            pin = self._gpu(worker)
            with signals_raise():
                if workers.here:  # else the workers are all jobs, and this waits for them
                    results, stop = self._work(
                        study, settings, [*fixed, *pin], store, lock, progress
                    )
                ended_badly = workers.wait()
        except KeyboardInterrupt as e:
            ignore_signals()  # the trial is failed already; the rest must not be cut short
            signum = getattr(e, "signum", signal.SIGINT)
            workers.signal(signum)
        finally:
            if ended_badly is None:  # stopped before it waited for them
                ended_badly = workers.wait()
        if signum is None:
            for line in ended_badly:
                print(line, file=sys.stderr)
        else:
            for line in workers.killed:
                print(line, file=sys.stderr)
            if workers.killed:  # they failed no trial: done here, as for any dead worker
                with lock():
                    recover_interrupted(study, storage, store, settings)
            fail(
                f"interrupted by {signal.Signals(signum).name}; its running trials are failed and "
                "queued again: rerun the command to go on",
                code=128 + signum,
            )
        if worker == 0:
            print(summary(study, settings, store))
            # every local worker has ended: their rows, indexed now for the first load
            index_written(store)
        if stop:
            fail(stop, code=1)
        if not workers.here and ended_badly:
            fail(f"{len(ended_badly)} worker job(s) did not end well (above)", code=1)
        return results

    def _settings(self, arguments: Sequence[str]) -> tuple[StudySettings, list[str]]:
        loader = self.hydra_context.config_loader
        return study_settings(self.sweeper_cfg, arguments, loader, self.config)

    def _gpu(self, worker: int) -> list[str]:
        """``device=cuda:K`` for this worker's jobs: local workers spread over the visible GPUs
        (`gpu_for_worker`), when the trial's device is ``auto`` or ``cuda``; with
        ``distributed.nproc`` N, the worker's block of N GPUs."""
        if str(self.config.device) not in ("auto", "cuda"):
            return []
        nproc = OmegaConf.select(self.config, "distributed.nproc", default=1) or 1
        gpu = gpu_for_worker(worker, visible_gpus(), nproc)
        return [] if gpu is None else [f"device=cuda:{gpu}"]

    def _work(self, study, settings: StudySettings, fixed, store: Path, lock, progress: bool):
        """Ask, run and tell trials while the budget lasts: one at a time, or ``fuse`` at a
        time (ask K, tell K), which the first job of the group runs fused (`sweep.fused`)."""
        uid = study.user_attrs["uid"]
        results = []
        bar = tqdm(
            total=settings.n_trials,
            desc=f"study {settings.study_name}",
            unit="trial",
            disable=not progress,
        )
        repeats = 0
        idle = 0.0  # the last wait for the other workers' trials (none yet)
        looked = -math.inf  # when this worker last looked for stale and unclaimed trials
        size = None  # the trials a group holds, known from the first trial's job config
        # a signal stops a trial while it computes, and waits while the worker talks to the
        # storage (`held`): a trial made but not yet returned, a lock or a session cut half way
        # would leave a trial RUNNING, or hang the worker on its way out
        with bar, held():
            while True:
                if progress:  # counting the study's trials is a storage round trip
                    bar.update(_finished(study) - bar.n)
                beats = heartbeat_interval(study._storage)
                # a trial goes stale after grace_period (> beats) seconds; looking once per
                # beat, at most every STALE_EVERY_S, finds it at most that much later, without
                # two locked scans of the study for every trial
                if beats and time.monotonic() - looked >= min(beats, STALE_EVERY_S):
                    looked = time.monotonic()
                    with lock():  # trials whose worker stopped beating, on any host, and
                        fail_stale(study, store, settings)
                        # those whose worker died before claiming them
                        recover_interrupted(study, study._storage, store, settings, dead=False)
                # asked and not told yet, each with its heartbeat: a signal fails them all
                running: dict[int, tuple[Any, ExitStack]] = {}
                # the trials to run, each with its job and the trials counted before it
                group: list[tuple[Any, list[str], int]] = []
                nothing_new = None
                try:
                    while len(group) < (size or 1):
                        if grid_done(study):  # no point left: asked, it would be a repeat
                            if counted_trials(study) < settings.n_trials:
                                nothing_new = _grid_done(settings)
                            break
                        trial, counted = ask_within_budget(study, settings, lock)
                        if trial is not None:
                            running[trial.number] = (trial, ExitStack())
                        if trial is None:
                            break
                        running[trial.number][1].enter_context(heartbeat(study, trial))
                        values = settings.space.sample(trial)
                        earlier = None if settings.allow_repeats else repeated(study, trial)
                        if earlier is not None:
                            give_back_repeat(study, trial, earlier)
                            running.pop(trial.number)[1].close()
                            repeats += 1
                            if repeats < REPEATS_IN_A_ROW:
                                continue
                            nothing_new = _nothing_new(settings, repeats)
                            break
                        repeats = 0
                        # claimed once sampled: a claimed trial's parameters are all there to rerun
                        trial.set_user_attr("worker", worker_identity())
                        job_overrides = [
                            *fixed,
                            *overrides(values),
                            # quoted: a name or uid such as 2024 or 5273e0162023 is text
                            f"optuna.study={quoted(settings.study_name)}",
                            f"optuna.uid={quoted(uid)}",
                            f"optuna.trial={trial.number}",
                            f"optuna.storage={quoted(mask_password(settings.storage))}",
                        ]
                        group.append((trial, job_overrides, counted))
                        if size is None:
                            size = self._group_size(job_overrides)
                    if not group:
                        if nothing_new is None and beats and _unfinished(study):
                            # the budget is spent, but another worker's trial may yet die: wait,
                            # so that the last worker standing leaves nothing RUNNING (a storage
                            # with no heartbeat could never tell a dead worker's trial); looking
                            # again soon at first, as the others' last trials often end soon
                            idle = min(2 * idle, beats, IDLE_MAX_S) if idle else IDLE_FIRST_S
                            with released():
                                time.sleep(idle)
                            continue
                        if nothing_new is not None:
                            print(nothing_new)
                        break
                    idle = 0.0
                    rets = self._launch(group, settings)
                    for _, beating in running.values():
                        beating.close()
                    states = []
                    for (trial, _, _), ret in zip(group, rets, strict=True):
                        try:
                            status, error = tell(study, uid, trial, ret, settings, store)
                        except OSError as e:
                            if e.errno != errno.ENOSPC:
                                raise
                            reason = f"no space left on device writing {e.filename or store}"
                            for other, _ in running.values():
                                interrupt(study, other, store, reason, settings)
                            return results, reason
                        running.pop(trial.number)
                        # without the job's configs: a long search would keep thousands alive
                        results.append(dataclasses.replace(ret, cfg=None, hydra_cfg=None))
                        states.append((status, error))
                except KeyboardInterrupt as e:  # SIGINT or SIGTERM (`signals_raise`)
                    ignore_signals()
                    for trial, beating in running.values():
                        beating.close()
                        interrupt(study, trial, store, f"interrupted by {signal_name(e)}", settings)
                    raise
                # in a row across every worker of the study, not only this one's trials
                failures = failures_in_a_row(study) if states[-1][0] == TrialState.FAIL else 0
                if failures >= settings.max_failures:
                    bar.update(_finished(study) - bar.n)
                    return results, (
                        f"stopped after {failures} failed trials in a row "
                        f"(hydra.sweeper.max_failures={settings.max_failures}); "
                        f"last: {states[-1][1]}"
                    )
                if nothing_new is not None:
                    print(nothing_new)
                    break
            if progress:
                bar.update(_finished(study) - bar.n)
        return results, None

    def _group_size(self, job_overrides: list[str]) -> int:
        """How many trials to ask and run together (the ``fuse`` key, `sweep.fused.group_size`):
        1 unless the jobs run in this process, where the first of a group can run the rest."""
        if self.config.fuse == 1:
            return 1
        if getattr(self.launcher, "composer", None) is None:  # not `ComposingLauncher`'s jobs
            log.info("fuse=%s: each trial runs alone under this launcher", self.config.fuse)
            return 1
        from sweep.fused import group_size

        return group_size(self.launcher.job_config(job_overrides, keep=True))

    def _launch(self, group: list[tuple[Any, list[str], int]], settings: StudySettings) -> list:
        """Launch each trial's job in turn; the first of a group of several runs them all fused
        (`sweep.fused.hand_over`), each later job returns its row."""
        handed = nullcontext()
        if len(group) > 1:
            from sweep.fused import hand_over

            handed = hand_over([self.launcher.job_config(ov) for _, ov, _ in group])
        rets = []
        with handed:
            for trial, job_overrides, counted in group:
                # its place in the budget, for the "[k/N, eta ...]" of its line
                place_next_trial(counted + 1, settings.n_trials, settings.n_jobs)
                with released():  # the trial computes: a signal stops it at once
                    [ret] = self.launcher.launch([job_overrides], initial_job_idx=trial.number)
                rets.append(ret)
        return rets


def register_worker(study: optuna.Study, lock: Callable[[], AbstractContextManager]) -> int:
    """Make sure the study has a uid, and return what this worker adds to the sampler's seed.

    The uid (a study attribute, made by the first worker) names the study's rows in the store,
    so a study of the same name in another storage, or after its storage was deleted, never
    replaces them. The study counts the workers that ever started on it: the first keeps the
    configured seed, so a one-worker sweep is reproducible; every later one (a local helper,
    a worker started by hand or by a scheduler, a resume) offsets it by a hash of its own
    process (host, pid, start time), which no other worker shares, so none draws alike.
    Both are read and written under the study's lock (`study_lock`). Without one (the gRPC
    proxy) each worker records itself before it counts the workers recorded: of workers
    starting together, at most one sees itself alone, so none draws alike there either.
    """
    identity = json.dumps(worker_identity(), sort_keys=True).encode()
    digest = hashlib.sha256(identity).digest()
    with lock():
        if "uid" not in study.user_attrs:
            study.set_user_attr("uid", uuid.uuid4().hex[:12])
        started = int(study.user_attrs.get("workers_started", 0))
        study.set_user_attr("workers_started", started + 1)
        study.set_user_attr(f"{WORKER_PREFIX}{digest.hex()[:16]}", worker_identity())
        workers = [k for k in study.user_attrs if k.startswith(WORKER_PREFIX)]
    if started == 0 and len(workers) == 1:
        return 0
    return int.from_bytes(digest[:4], "big") % 2**31


def ask_within_budget(
    study: optuna.Study, settings: StudySettings, lock: Callable[[], AbstractContextManager]
) -> tuple[optuna.Trial | None, int]:
    """A new trial, or ``None`` when the study's budget is spent, checked and asked under the
    study's lock (`study_lock`), which lives in the storage: no worker can overshoot it.
    Through the gRPC proxy, which has no lock, the trial's number is its ticket (`keep_ticket`).
    Also returns the trials counted against the budget before it (`counted_trials`).
    """
    while True:
        with lock():
            counted = counted_trials(study)
            if counted >= settings.n_trials:
                return None, counted
            with warnings.catch_warnings():
                # Optuna warns that heartbeats are meant for Study.optimize; `heartbeat` beats
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = study.ask()
            if not has_lock(settings.storage) and not keep_ticket(
                study, trial.number, settings.n_trials
            ):
                continue  # given back unrun; the budget may yet have room (a failed ticket)
            first_heartbeat(study, trial)  # from now on the trial can go stale
            return trial, counted


def _nothing_new(settings: StudySettings, repeats: int) -> str:
    return (
        f"study {settings.study_name}: the sampler proposed only parameter sets that trials ran "
        f"already ({repeats} in a row); stopping before n_trials={settings.n_trials} "
        "(hydra.sweeper.allow_repeats=true runs them again)"
    )


def _grid_done(settings: StudySettings) -> str:
    return (
        f"study {settings.study_name}: every point of the sampler's grid has run; stopping "
        f"before n_trials={settings.n_trials}"
    )


def _scrub_storage(config: DictConfig, url: str) -> None:
    """Mask the storage URL's secrets in the sweep's config, before anything saves it.

    Hydra recomposes every job from this config's recorded overrides and saves them in the
    job's folder (``.hydra/hydra.yaml``); multirun.yaml and helper workers' command lines
    come from it too. The real URL travels in the environment instead (``STORAGE_ENV``).
    """
    masked = mask_password(url)
    if masked == url:
        return
    with read_write(config), open_dict(config):
        config.hydra.sweeper.storage = masked
        config.hydra.overrides.hydra = [
            f"hydra.sweeper.storage={quoted(masked)}"
            if o.startswith("hydra.sweeper.storage=")
            else o
            for o in config.hydra.overrides.hydra
        ]


def _unfinished(study: optuna.Study) -> bool:
    """Whether any trial of the study is RUNNING or WAITING (queued again)."""
    states = (TrialState.RUNNING, TrialState.WAITING)
    return bool(study.get_trials(deepcopy=False, states=states))


def _finished(study: optuna.Study) -> int:
    stale = stale_trials(study)
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return sum(1 for t in trials if counts(t, stale))


def _limit_threads(n_jobs: int) -> None:
    threads = int(os.environ.get("SWEEP_THREADS", _threads(n_jobs)))
    if n_jobs > 1 or "SWEEP_THREADS" in os.environ:
        import torch

        torch.set_num_threads(threads)
