"""The Optuna sweep: ask a trial, launch it as a Hydra job, tell the study what it stored.

Many workers (local processes started with ``n_jobs``, or commands started by hand on other
machines) share one study through its storage; each asks for trials while the study's budget
(``n_trials`` counted trials) lasts. Asking is serialised by the study's lock, which lives in
the storage (`study_lock`), or checked by ticket where no lock passes (the gRPC proxy,
`keep_ticket`), so the budget is never overshot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from sweep._console import place_next_trial, show_progress
from sweep._env import STORAGE_ENV, WORKER_ENV
from sweep.errors import ConfigError
from sweep.hashing import NOT_IN_KEY, mask_password
from sweep.search._launch import ComposingLauncher
from sweep.search._layerwise import AMOUNTS, amounts_text, layer_params
from sweep.search._rows import failed_row, study_rows
from sweep.search._space import SearchSpace, overrides
from sweep.search._study import (
    REPEAT_OF,
    STALE_PREFIX,
    StudySettings,
    check_storage_folder,
    counted_trials,
    counts,
    create_study,
    given_back,
    gpu_for_worker,
    has_lock,
    is_dead,
    keep_ticket,
    make_sampler,
    open_storage,
    stale_trials,
    study_lock,
    visible_gpus,
    worker_identity,
)
from sweep.store import (
    DEFAULT_PATH,
    clean,
    encode_rows,
    load_results,
    read_layers,
    read_row,
    results_frame,
    row_id,
    rows_table,
    write_trial,
)

log = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# A study attribute per worker that ever started on it (`register_worker`)
WORKER_PREFIX = "worker-"
# A running trial whose worker never claimed it (it died between ask and the end of sampling)
# is given up after this long; asking and sampling take well under a second.
UNCLAIMED_AFTER = dt.timedelta(minutes=2)
# Parameter sets in a row the sampler may propose that trials ran already (`repeated`) before
# the worker takes the search space for exhausted and stops asking
REPEATS_IN_A_ROW = 20


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
            store = Path(self.config.store.path)
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
            with lock():
                check_unchanged(study, settings, fixed)
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
            helpers = self._spawn_workers(settings.n_jobs - 1, sweep_dir)
        else:
            helpers = []
        signum = None
        try:
            progress = worker == 0 and show_progress(self.config.progress)
            pin = self._gpu(worker)
            with _sigterm_raises():
                results, stop = self._work(study, settings, [*fixed, *pin], store, lock, progress)
        except KeyboardInterrupt as e:
            _ignore_signals()  # the trial is failed already; the rest must not be cut short
            signum = getattr(e, "signum", signal.SIGINT)
            for proc in helpers:  # helpers started by a terminal got a Ctrl-C themselves
                with suppress(ProcessLookupError):
                    proc.send_signal(signum)
        finally:
            for i, proc in enumerate(helpers, start=1):
                if proc.wait() != 0 and signum is None:
                    print(
                        f"worker {i} exited with code {proc.returncode}; its output is in "
                        f"{sweep_dir / f'worker-{i}.log'}",
                        file=sys.stderr,
                    )
        if signum is not None:
            fail(
                f"interrupted by {signal.Signals(signum).name}; its running trials are failed and "
                "queued again: rerun the command to go on",
                code=128 + signum,
            )
        if worker == 0:
            print(summary(study, settings, store))
        if stop:
            fail(stop, code=1)
        return results

    def _settings(self, arguments: Sequence[str]) -> tuple[StudySettings, list[str]]:
        loader = self.hydra_context.config_loader
        return study_settings(self.sweeper_cfg, arguments, loader, self.config)

    def _gpu(self, worker: int) -> list[str]:
        """``device=cuda:K`` for this worker's jobs: local workers spread over the visible GPUs
        (`gpu_for_worker`), when the trial's device is ``auto`` or ``cuda``."""
        if str(self.config.device) not in ("auto", "cuda"):
            return []
        gpu = gpu_for_worker(worker, visible_gpus())
        return [] if gpu is None else [f"device=cuda:{gpu}"]

    def _work(self, study, settings: StudySettings, fixed, store: Path, lock, progress: bool):
        uid = study.user_attrs["uid"]
        results = []
        bar = tqdm(
            total=settings.n_trials,
            desc=f"study {settings.study_name}",
            unit="trial",
            disable=not progress,
        )
        repeats = 0
        with bar:
            while True:
                if progress:  # counting the study's trials is a storage round trip
                    bar.update(_finished(study) - bar.n)
                beats = _heartbeat_interval(study._storage)
                if beats:
                    with lock():  # trials whose worker stopped beating, on any host, and
                        fail_stale(study, store, settings)
                        # those whose worker died before claiming them
                        recover_interrupted(study, study._storage, store, settings, dead=False)
                trial = ask_within_budget(study, settings, lock)
                if trial is None:
                    if beats and _unfinished(study):
                        # the budget is spent, but another worker's trial may yet die: wait, so
                        # that the last worker standing leaves nothing RUNNING (a storage with
                        # no heartbeat could never tell a dead worker's trial: none waits)
                        time.sleep(min(beats, 5))
                        continue
                    break
                try:
                    # its place in the budget, for the "[k/N, eta ...]" of its line
                    place_next_trial(counted_trials(study), settings.n_trials, settings.n_jobs)
                    with heartbeat(study, trial.number):
                        values = settings.space.sample(trial)
                        earlier = None if settings.allow_repeats else repeated(study, trial)
                        if earlier is not None:
                            give_back_repeat(study, trial, earlier)
                            repeats += 1
                            if repeats < REPEATS_IN_A_ROW:
                                continue
                            print(_nothing_new(settings, repeats))
                            break
                        repeats = 0
                        # claimed once sampled: a claimed trial's parameters are all there to rerun
                        trial.set_user_attr("worker", worker_identity())
                        job_overrides = [
                            *fixed,
                            *overrides(values),
                            f"optuna.study={settings.study_name}",
                            f"optuna.uid={uid}",
                            f"optuna.trial={trial.number}",
                            f"optuna.storage={_quoted(mask_password(settings.storage))}",
                        ]
                        [ret] = self.launcher.launch([job_overrides], initial_job_idx=trial.number)
                    try:
                        status, error = tell(study, trial, ret, settings, store)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        reason = f"no space left on device writing {e.filename or store}"
                        interrupt(study, trial, store, reason)
                        return results, reason
                except KeyboardInterrupt as e:  # SIGINT, or SIGTERM (`_sigterm_raises`)
                    _ignore_signals()
                    interrupt(study, trial, store, f"interrupted by {_signal_name(e)}")
                    raise
                results.append(ret)
                # in a row across every worker of the study, not only this one's trials
                failures = failures_in_a_row(study) if status == TrialState.FAIL else 0
                if failures >= settings.max_failures:
                    bar.update(_finished(study) - bar.n)
                    return results, (
                        f"stopped after {failures} failed trials in a row "
                        f"(hydra.sweeper.max_failures={settings.max_failures}); last: {error}"
                    )
            if progress:
                bar.update(_finished(study) - bar.n)
        return results, None

    def _spawn_workers(self, count: int, sweep_dir: Path) -> list[subprocess.Popen]:
        if count <= 0:
            return []
        task = list(self.config.hydra.overrides.task)
        hydra_args = [
            o
            for o in self.config.hydra.overrides.hydra
            if not o.startswith(("hydra.sweeper.n_jobs=", "hydra.mode=", "hydra.sweep.dir="))
        ]
        cmd = [
            sys.executable,
            "-m",
            "sweep",
            "--multirun",
            *task,
            *hydra_args,
            f"hydra.sweep.dir='{sweep_dir}'",
        ]
        procs = []
        for i in range(1, count + 1):
            env = {**os.environ, WORKER_ENV: str(i), "SWEEP_THREADS": str(_threads(count + 1))}
            out = open(sweep_dir / f"worker-{i}.log", "w")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
        return procs


class Interrupted(KeyboardInterrupt):
    """What SIGTERM raises in a worker, as SIGINT raises ``KeyboardInterrupt``: a trial stops
    without a row either way (`sweep.trial.run_trial`), and the sweep fails it on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ignore_signals() -> None:
    # a second Ctrl-C, or the signal a helper gets from its terminal and from its parent both,
    # must not cut short the failing of a trial
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _signal_name(e: KeyboardInterrupt) -> str:
    return signal.Signals(getattr(e, "signum", signal.SIGINT)).name


def study_settings(
    sweeper: DictConfig,
    arguments: Sequence[str],
    config_loader: Any = None,
    trial_cfg: DictConfig | None = None,
) -> tuple[StudySettings, list[str]]:
    """The study's settings from ``hydra.sweeper`` and the command line's sweeps, checked.

    Sweeps on the command line (``finetune.lr=choice(0.001,0.01)``) join the search space;
    the other overrides are returned as the fixed part of every job. ``hydra.sweeper.
    layerwise`` adds one amount per layer that ``trial_cfg`` (the composed config) prunes.

    Raises:
        ConfigError: A setting or search dimension that cannot work.
    """
    node = OmegaConf.to_container(sweeper, resolve=True)
    reuse = node.get("reuse_composition", True)
    if not isinstance(reuse, bool):
        raise ConfigError(f"hydra.sweeper.reuse_composition={reuse!r}; accepted: true | false")
    params = dict(node.get("params") or {})
    if node.get("layerwise"):
        if trial_cfg is None:
            raise ConfigError("hydra.sweeper.layerwise needs the composed config to list layers")
        for name, spec in layer_params(node["layerwise"], trial_cfg).items():
            params.setdefault(name, spec)
    fixed = []
    parser = OverridesParser.create(config_loader=config_loader)  # it expands glob(...) sweeps
    for o in parser.parse_overrides(list(arguments)):
        if o.is_sweep_override():
            params[o.get_key_element()] = _param_from_sweep(o)
        else:
            fixed.append(o.input_line)
    space = SearchSpace.from_config(params)
    settings = StudySettings.from_config(node, space)
    if trial_cfg is not None:
        check_storage_folder(settings.storage, trial_cfg.store.path)
    return settings, fixed


def check_unchanged(study: optuna.Study, settings: StudySettings, fixed: Sequence[str]) -> None:
    """Refuse to resume a study with other objectives, directions or fixed overrides.

    Its trials would not be comparable (the study would judge new rows by other measures, or
    mix finetuning budgets); the first worker records what the study runs with.

    Raises:
        ConfigError: Naming the first difference, and how to start a new study instead.
    """
    name = settings.study_name
    new_study = "or another hydra.sweeper.study_name for a new study"
    directions = [d.name.lower() for d in study.directions]
    if directions != list(settings.directions):
        raise ConfigError(
            f"study {name!r} has directions {directions}; this run asks "
            f"{list(settings.directions)}; accepted: the study's directions, {new_study}"
        )
    wanted = {"objectives": list(settings.objectives), "fixed": _computing(fixed)}
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", wanted)
        return
    if recorded["objectives"] != wanted["objectives"]:
        raise ConfigError(
            f"study {name!r} has objectives {recorded['objectives']}; this run asks "
            f"{wanted['objectives']}; accepted: the study's objectives, {new_study}"
        )
    old, new = recorded["fixed"], wanted["fixed"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            before = f"{key}={old[key]}" if key in old else f"no {key} override"
            now = f"{key}={new[key]}" if key in new else f"no {key} override"
            raise ConfigError(
                f"study {name!r} was run with {before}; this run has {now}; "
                f"accepted: the study's overrides, {new_study}"
            )


def _computing(fixed: Sequence[str]) -> dict[str, str]:
    # the overrides that change what a trial computes (not where it writes or how it looks)
    pairs = (o.lstrip("+~").partition("=") for o in fixed)
    return {
        key: value for key, _, value in pairs if key.split(".")[0] not in (*NOT_IN_KEY, "hydra")
    }


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
):
    """A new trial, or ``None`` when the study's budget is spent, checked and asked under the
    study's lock (`study_lock`), which lives in the storage: no worker can overshoot it.
    Through the gRPC proxy, which has no lock, the trial's number is its ticket (`keep_ticket`).
    """
    while True:
        with lock():
            if counted_trials(study) >= settings.n_trials:
                return None
            with warnings.catch_warnings():
                # Optuna warns that heartbeats are meant for Study.optimize; `heartbeat` beats
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = study.ask()
            if not has_lock(settings.storage) and not keep_ticket(
                study, trial.number, settings.n_trials
            ):
                continue  # given back unrun; the budget may yet have room (a failed ticket)
            _beat(study, trial.number)  # from now on the trial can go stale
            return trial


@contextmanager
def heartbeat(study: optuna.Study, number: int) -> Iterator[None]:
    """Record the trial's heartbeat every ``heartbeat_interval`` seconds while the block runs
    (storages with a heartbeat only), as ``Study.optimize`` does for its own trials; the first
    was recorded when the trial was asked (`ask_within_budget`)."""
    storage = study._storage
    interval = _heartbeat_interval(storage)
    if not interval:
        yield
        return
    trial_id = _trial_id(study, number)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a database hiccup; the next beat may get through
                log.warning("heartbeat of trial %d failed", number, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _heartbeat_interval(storage) -> int | None:
    return getattr(storage, "get_heartbeat_interval", lambda: None)()


def _trial_id(study: optuna.Study, number: int) -> int:
    storage = study._storage
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def _beat(study: optuna.Study, number: int) -> None:
    if _heartbeat_interval(study._storage):
        study._storage.record_heartbeat(_trial_id(study, number))


def fail_stale(study: optuna.Study, store: Path, settings: StudySettings) -> None:
    """Finish the study's trials whose heartbeat stopped (their worker died, on any host): from
    the row their job stored, when it reached ``store`` before the worker died (`finish_from_row`),
    else failed, and the storage's callback (`requeue_stale`) records why and queues their
    parameters again. Call it under the study's lock, as `recover_interrupted`: a trial is then
    finished once, and never both told from its row and requeued."""
    storage = study._storage
    if not _heartbeat_interval(storage):
        return
    # Optuna's own pass fails every stale trial, and a failed trial can no longer be told
    # complete: those whose row landed are finished first.
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        number = storage.get_trial_number_from_id(trial_id)
        with suppress(optuna.exceptions.UpdateFinishedTrialError):
            finish_from_row(study, number, store, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def requeue_stale(study: optuna.Study, trial, *, store: Path, settings: StudySettings) -> None:
    """Called by `fail_stale` for each trial it failed: say why, write its failed row, and
    queue its parameters again (another worker, or this one, runs them)."""
    worker = trial.user_attrs.get("worker") or {}
    grace = settings.grace_period or 2 * (settings.heartbeat_interval or 0)  # Optuna's default
    error = (
        f"interrupted: worker {worker.get('host', '?')}:{worker.get('pid', '?')} sent no "
        f"heartbeat for {grace} s; {_rerun(trial)}"
    )
    # the trial is finished already, and Optuna keeps a finished trial's attributes as they are
    study.set_user_attr(f"{STALE_PREFIX}{trial.number}", error)
    write_failed_row(store, study, trial, error)
    requeue(study, trial)
    log.warning("trial %d: %s", trial.number, error)


def repeated(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of a trial that ran, or runs, the parameters ``trial`` was just sampled with:
    complete, pruned or claimed by a running worker. Failed trials may run their parameters
    again (an interrupted trial's are queued again; a failure may not recur)."""
    params = trial.params
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    for t in study.get_trials(deepcopy=False, states=states):
        ran = t.state != TrialState.RUNNING or claimed(t)  # else still being sampled
        if t.number != trial.number and ran and t.params == params:
            return t.number
    return None


def _nothing_new(settings: StudySettings, repeats: int) -> str:
    return (
        f"study {settings.study_name}: the sampler proposed only parameter sets that trials ran "
        f"already ({repeats} in a row); stopping before n_trials={settings.n_trials} "
        "(hydra.sweeper.allow_repeats=true runs them again)"
    )


def give_back_repeat(study: optuna.Study, trial: optuna.Trial, earlier: int) -> None:
    """Fail ``trial`` unrun, as a repeat of trial ``earlier``: it uses no budget and has no row
    (`given_back`), and the sampler, which skips failed trials, draws again."""
    trial.set_user_attr(REPEAT_OF, earlier)
    trial.set_user_attr(
        "error",
        f"the parameters of trial {earlier} again: not run (hydra.sweeper.allow_repeats=true "
        "runs them)",
    )
    study.tell(trial, state=TrialState.FAIL)


def claimed(trial: FrozenTrial) -> bool:
    """Whether a worker claimed ``trial``: it does so once the parameters are all sampled."""
    return "worker" in trial.user_attrs


def _rerun(trial: FrozenTrial) -> str:
    # what `requeue` runs again, for the reason an interrupted trial gives
    return "its parameters run again" if claimed(trial) else "it is asked again"


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue an interrupted trial again, as Optuna's ``RetryFailedTrialCallback`` does: a waiting
    trial with its system attributes (a grid point stays that point, an enqueued trial keeps its
    fixed parameters) and, if its worker had claimed it, all its parameters fixed. A trial that
    died while it was being sampled has only some; those not fixed in advance are sampled anew."""
    system_attrs = dict(trial.system_attrs)
    if claimed(trial):
        system_attrs["fixed_params"] = trial.params
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            system_attrs=system_attrs,
            user_attrs={"retry_of": trial.number},
        )
    )


def tell(
    study: optuna.Study, trial, ret, settings: StudySettings, store: Path
) -> tuple[TrialState, str]:
    """Tell the study what the job stored, or why it raised (then the store gets a row too).

    The row and its layers also go to the study, as the trial's user attribute ``row``
    (`sweep.load_results(storage=..., study=...)`), so that workers on machines with separate
    disks lose nothing. A trial failed meanwhile as stale (its heartbeat missed the grace
    period) stays failed: its parameters were queued again.
    """
    try:
        try:
            row = ret.return_value
        except Exception as e:  # bad input only this combination has (an interval's value)
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise  # no row can be written: the sweep stops (`OptunaSweep._work`)
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            trial.set_user_attr("error", error)
            write_failed_row(store, study, trial, error)
            trial.set_user_attr("row", encode_rows([failed_row(study, trial, error)]))
            study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL, error
        rid = row_id(None, study.study_name, trial.number, study.user_attrs.get("uid"))
        layers = read_layers(store, rid)
        trial.set_user_attr(
            "row", encode_rows([{k: v for k, v in row.items() if k != "store_file"}])
        )
        trial.set_user_attr("layers", encode_rows(layers))
        return tell_row(study, trial.number, row, settings, trial.set_user_attr)
    except optuna.exceptions.UpdateFinishedTrialError:
        error = "failed as stale while it ran (no heartbeat within the grace period)"
        log.warning("trial %d %s; its parameters were queued again", trial.number, error)
        return TrialState.FAIL, error


def interrupt(study: optuna.Study, trial: optuna.Trial, store: Path, error: str) -> None:
    """Fail ``trial``, which its worker stops running for a reason outside it (a full disk, a
    signal), as interrupted: it uses no budget, its parameters are queued again for the next
    run, and nothing is left RUNNING. Its failed row goes to the store if the store takes it."""
    frozen = study._storage.get_trial(trial._trial_id)
    try:
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # failed meanwhile as stale, and queued again
    with suppress(OSError):  # the disk that is full
        write_failed_row(store, study, frozen, error)
    requeue(study, frozen)


def write_failed_row(store: Path, study: optuna.Study, trial, error: str) -> None:
    """A failed row for a trial whose job wrote none; ``trial`` is live or frozen."""
    uid = study.user_attrs.get("uid")
    rid = row_id(None, study.study_name, trial.number, uid)
    if read_row(store, rid) is not None:
        return
    write_trial(store, failed_row(study, trial, error), row_id=rid)


def failures_in_a_row(study: optuna.Study) -> int:
    """How many of the study's last finished trials failed, by the time they finished."""
    stale = stale_trials(study)
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=_FINISHED)
        if t.datetime_complete is not None and counts(t, stale)
    ]
    done.sort(key=lambda t: t.datetime_complete)
    count = 0
    for t in reversed(done):
        if t.state != TrialState.FAIL:
            break
        count += 1
    return count


def tell_row(
    study, number: int, row: dict, settings: StudySettings, set_attr
) -> tuple[TrialState, str]:
    if row["status"] == "complete":
        values = [row.get(o) for o in settings.objectives]
        if all(isinstance(v, int | float) and v == v for v in values):
            study.tell(number, values)
            return TrialState.COMPLETE, ""
        error = f"objective(s) {list(settings.objectives)} missing from the row"
    elif row["status"] == "pruned":
        study.tell(number, state=TrialState.PRUNED)
        return TrialState.PRUNED, ""
    else:
        error = row.get("error") or "failed"
    set_attr("error", error)
    study.tell(number, state=TrialState.FAIL)
    return TrialState.FAIL, error


def recover_interrupted(
    study: optuna.Study, storage, store: Path, settings: StudySettings, *, dead: bool = True
) -> int:
    """Fail (in study and store) and requeue trials whose worker on this host has died
    (``dead``), and trials no worker claimed within `UNCLAIMED_AFTER` (any host).

    A trial whose row reached the store before the worker died is told from that row instead.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    requeued = 0
    now = dt.datetime.now()  # Optuna's trial times are naive local times
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if worker is None:
            # asked, but its worker died before it could say who it was
            if not (t.datetime_start and now - t.datetime_start > UNCLAIMED_AFTER):
                continue
            error = f"interrupted: its worker died before it started the trial; {_rerun(t)}"
        elif dead and is_dead(worker):
            error = f"interrupted: worker {worker['host']}:{worker['pid']} died while the trial ran"
        else:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            if finish_from_row(study, t.number, store, settings):
                continue
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_user_attr(trial_id, "error", error)
            study.tell(t.number, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # failed meanwhile as stale by another worker, which requeued it
        write_failed_row(store, study, t, error)
        requeue(study, t)
        requeued += 1
    return requeued


def finish_from_row(study: optuna.Study, number: int, store: Path, settings: StudySettings) -> bool:
    """Tell trial ``number``, whose worker died after its job stored the row, from that row,
    as `tell` would have: the row and its layers go to the trial too, so that
    ``load_results(storage=, study=)`` has it. ``False`` (nothing told) when ``store`` has no
    row for it; the caller fails and requeues it then.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: Another worker finished it meanwhile.
    """
    rid = row_id(None, study.study_name, number, study.user_attrs.get("uid"))
    row = read_row(store, rid)
    if row is None:
        return False
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)

    def set_attr(key: str, value: Any) -> None:
        storage.set_trial_user_attr(trial_id, key, value)

    set_attr("row", encode_rows([{k: v for k, v in row.items() if k != "store_file"}]))
    set_attr("layers", encode_rows(read_layers(store, rid)))
    tell_row(study, number, row, settings, set_attr)
    return True


def summary(study: optuna.Study, settings: StudySettings, store: Path) -> str:
    """The best trial (one objective) or the Pareto front, as a table with the store's columns."""
    states = [t.state for t in study.get_trials(deepcopy=False) if not given_back(t)]
    counts = ", ".join(
        f"{states.count(s)} {s.name.lower()}"
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        if states.count(s)
    )
    head = (
        f"study {settings.study_name}: {len(states)} trials ({counts or 'none finished'}) "
        f"in {mask_password(settings.storage)}"
    )
    if TrialState.COMPLETE not in states:
        return head
    best = study.best_trials if settings.multi_objective else [study.best_trial]
    title = "Pareto front" if settings.multi_objective else "best trial"
    pairs = list(zip(settings.objectives, settings.directions, strict=True))
    goals = ", ".join(f"{d} {o}" for o, d in pairs)
    df = _study_rows(study, store)
    df = df.drop_duplicates("optuna.trial", keep="last").set_index("optuna.trial")
    df = df.reindex([t.number for t in best])
    df, amounts = _searched_amounts(df)
    columns = ["trial_key", "method", *amounts, "sparsity", "acc_finetuned", *settings.objectives]
    first, direction = pairs[0]
    table = df[list(dict.fromkeys(columns))].sort_values(first, ascending=direction == "minimize")
    table.index.name = "trial"
    text = f"{head}\n{title} ({goals}):\n{table.to_string(float_format=lambda v: f'{v:.4f}')}"
    kept = df.loc[table.index, "model_file"].notna() if "model_file" in df else None
    if kept is not None and kept.any():
        key = table["trial_key"][kept].iloc[0]
        path = "" if str(store) == DEFAULT_PATH else f", path={str(store)!r}"
        text += f"\nload a trial's pruned model: sweep.load_model({key!r}{path})"
    return text


def _searched_amounts(df):
    """The summary's amount column(s): ``amount``, and beside it the per-layer amounts
    (``scope.amounts``, as `amounts_text` writes them) of rows that have them, in its place
    when ``amount`` is 0 in every row (``search=layerwise``: it applies to no layer)."""
    per_layer = [c for c in df.columns if c.startswith(AMOUNTS)]
    if not per_layer:
        return df, ["amount"]
    text = [amounts_text(r) for r in df[per_layer].to_dict("records")]
    df = df.assign(**{"scope.amounts": text})
    return df, ["scope.amounts"] if (df["amount"] == 0).all() else ["amount", "scope.amounts"]


def _study_rows(study: optuna.Study, store: Path):
    """The study's rows: from the study itself (every worker's, whatever disk it wrote to),
    or from the local store for a study whose trials hold none (written before they did)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if any("row" in t.user_attrs for t in done):
        rows = study_rows(study._storage, study.study_name, "row")
        return results_frame(rows_table(rows, "row"))
    df = load_results(store)
    uid = study.user_attrs.get("uid")
    return df[(df["optuna.study"] == study.study_name) & (df.get("optuna.uid") == uid)]


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
            f"hydra.sweeper.storage={_quoted(masked)}"
            if o.startswith("hydra.sweeper.storage=")
            else o
            for o in config.hydra.overrides.hydra
        ]


def _quoted(value: str) -> str:
    """A Hydra override value that stays one string whatever quotes it holds."""
    # Hydra unescapes backslashes only before a quote or at the end of a quoted string
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"


def _param_from_sweep(o) -> dict[str, Any]:
    if o.is_choice_sweep() or o.is_range_sweep():
        return {"choices": list(o.sweep_iterator())}
    if o.is_interval_sweep():
        interval = o.value()
        return {"low": interval.start, "high": interval.end}
    raise ConfigError(
        f"{o.input_line}: accepted sweeps are a,b,c | choice(...) | range(...) | interval(a,b)"
    )


def _unfinished(study: optuna.Study) -> bool:
    """Whether any trial of the study is RUNNING or WAITING (queued again)."""
    states = (TrialState.RUNNING, TrialState.WAITING)
    return bool(study.get_trials(deepcopy=False, states=states))


def _finished(study: optuna.Study) -> int:
    stale = stale_trials(study)
    trials = study.get_trials(deepcopy=False, states=_FINISHED)
    return sum(1 for t in trials if counts(t, stale))


def _threads(n_jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // n_jobs)


def _limit_threads(n_jobs: int) -> None:
    threads = int(os.environ.get("SWEEP_THREADS", _threads(n_jobs)))
    if n_jobs > 1 or "SWEEP_THREADS" in os.environ:
        import torch

        torch.set_num_threads(threads)
