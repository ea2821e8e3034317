"""Every trial told exactly once, whatever dies: its worker, its host, or the run itself.

A running trial beats (`heartbeat`); one whose beats stop (`fail_stale`), whose worker on this
host died (`recover_interrupted`), or that a signal or a full disk stops (`interrupt`) is told
from the row its job stored if that row landed (`finish_from_row`), else failed and queued
again (`requeue`). Parameters that trials ran already are given back unrun (`repeated`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.search._study import REPEAT_OF, STALE_PREFIX, StudySettings, is_dead
from sweep.search._tell import finish_trial, tell_row, write_failed_row
from sweep.store import decode_rows, encode_row, encode_rows, read_layers, read_row, row_id

log = logging.getLogger(__name__)

# A running trial whose worker never claimed it (it died between ask and the end of sampling)
# is given up after this long; asking and sampling take well under a second.
UNCLAIMED_AFTER = dt.timedelta(minutes=2)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every ``heartbeat_interval`` seconds while the block runs
    (storages with a heartbeat only), as ``Study.optimize`` does for its own trials; the first
    was recorded when the trial was asked (`ask_within_budget`)."""
    storage = study._storage
    interval = heartbeat_interval(storage)
    if not interval:
        yield
        return
    trial_id, number = trial._trial_id, trial.number
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


def first_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record the trial's first heartbeat (`ask_within_budget`): from then on it can go stale."""
    if heartbeat_interval(study._storage):
        study._storage.record_heartbeat(trial._trial_id)


def heartbeat_interval(storage) -> int | None:
    """The storage's heartbeat interval in seconds; ``None`` for a storage with no heartbeat."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)()


def fail_stale(study: optuna.Study, store: Path, settings: StudySettings) -> None:
    """Finish the study's trials whose heartbeat stopped (their worker died, on any host): from
    the row their job stored, when it reached ``store`` before the worker died (`finish_from_row`),
    else failed, and the storage's callback (`requeue_stale`) records why and queues their
    parameters again. Call it under the study's lock, as `recover_interrupted`: a trial is then
    finished once, and never both told from its row and requeued."""
    storage = study._storage
    if not heartbeat_interval(storage):
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
            finish_trial(study, t.number, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # failed meanwhile as stale by another worker, which requeued it
        write_failed_row(store, study, t, error)
        requeue(study, t)
        requeued += 1
    return requeued


def finish_from_row(study: optuna.Study, number: int, store: Path, settings: StudySettings) -> bool:
    """Tell trial ``number``, whose worker died after its job stored the row, from that row,
    as `tell` would have: the row and its layers go to the trial too, so that
    ``load_results(storage=, study=)`` has it. A row that is not in ``store`` (its worker
    wrote to a store of its own, on another host) is read from the trial, where its job put
    it just before writing it (`sweep.search.record_row`). ``False`` (nothing told) when
    neither has it; the caller fails and requeues it then.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: Another worker finished it meanwhile.
    """
    rid = row_id(None, study.study_name, number, study.user_attrs.get("uid"))
    row = read_row(store, rid)
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)

    def set_attr(key: str, value: Any) -> None:
        storage.set_trial_user_attr(trial_id, key, value)

    if row is None:
        recorded = storage.get_trial(trial_id).user_attrs.get("row")
        if recorded is None:
            return False
        [row] = decode_rows(recorded)
        log.info("trial %d: told from the row its job put on the trial (not in %s)", number, store)
        tell_row(study, number, row, settings, set_attr)
        return True
    set_attr("row", encode_row(row))
    set_attr("layers", encode_rows(read_layers(store, rid)))
    tell_row(study, number, row, settings, set_attr)
    return True


def interrupt(
    study: optuna.Study, trial: optuna.Trial, store: Path, error: str, settings: StudySettings
) -> None:
    """Fail ``trial``, which its worker stops running for a reason outside it (a full disk, a
    signal), as interrupted: it uses no budget, its parameters are queued again for the next
    run, and nothing is left RUNNING. Its failed row goes to the store if the store takes it.

    A trial whose job stored its row before the stop (a member of a fused group written
    before another's write failed, a signal just after the write) is told from that row
    instead (`finish_from_row`): failed and queued again, it would run and be stored twice."""
    try:
        if finish_from_row(study, trial.number, store, settings):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # finished meanwhile by another worker
    frozen = study._storage.get_trial(trial._trial_id)
    try:
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("error", error)
        finish_trial(study, trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # failed meanwhile as stale, and queued again
    with suppress(OSError):  # the disk that is full
        write_failed_row(store, study, frozen, error)
    requeue(study, frozen)


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


def claimed(trial: FrozenTrial) -> bool:
    """Whether a worker claimed ``trial``: it does so once the parameters are all sampled."""
    return "worker" in trial.user_attrs


def _rerun(trial: FrozenTrial) -> str:
    # what `requeue` runs again, for the reason an interrupted trial gives
    return "its parameters run again" if claimed(trial) else "it is asked again"


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


def give_back_repeat(study: optuna.Study, trial: optuna.Trial, earlier: int) -> None:
    """Fail ``trial`` unrun, as a repeat of trial ``earlier``: it uses no budget and has no row
    (`given_back`), and the sampler, which skips failed trials, draws again."""
    trial.set_user_attr(REPEAT_OF, earlier)
    trial.set_user_attr(
        "error",
        f"the parameters of trial {earlier} again: not run (hydra.sweeper.allow_repeats=true "
        "runs them)",
    )
    finish_trial(study, trial, state=TrialState.FAIL)
