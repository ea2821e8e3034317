"""Telling a trial its outcome: from what its job returned, or from the row it stored.

Every outcome lands twice, in the study (its state, and the row as a user attribute) and in
the store (a failed row where the job wrote none), so that either one alone can be read back.
`failures_in_a_row` counts the study's last failures, for ``hydra.sweeper.max_failures``.
"""

from __future__ import annotations

import errno
import inspect
import logging
from pathlib import Path

import optuna
from hydra.core.utils import JobStatus
from optuna.trial import TrialState

from sweep._console import trial_count
from sweep.search._job import was_recorded
from sweep.search._rows import failed_row
from sweep.search._study import STALE_PREFIX, StudySettings, counts, stale_trials
from sweep.store import encode_row, encode_rows, read_layers, read_row, row_id, write_trial

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def tell(
    study: optuna.Study, uid: str, trial, ret, settings: StudySettings, store: Path
) -> tuple[TrialState, str]:
    """Tell the study (whose ``uid`` names its rows) what the job stored, or why it raised
    (then the store gets a row too).

    The row and its layers also go to the study, as the trial's user attribute ``row``
    (`sweep.load_results(storage=..., study=...)`), so that workers on machines with separate
    disks lose nothing. A trial failed meanwhile as stale (its heartbeat missed the grace
    period) stays failed: its parameters were queued again.
    """
    try:
        # bad input only this combination has (an interval's value): Hydra's `return_value`
        # would print its own "Error executing job" line and raise it
        if ret.status == JobStatus.FAILED:
            e = ret._return_value
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise e  # no row can be written: the sweep stops (`OptunaSweep._work`)
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            trial.set_user_attr("error", error)
            write_failed_row(store, study, trial, error)
            trial.set_user_attr("row", encode_rows([failed_row(study, trial, error)]))
            finish_trial(study, trial, state=TrialState.FAIL)
            print(f"{trial_count(0.0)}trial {trial.number}: FAILED: {error}")
            return TrialState.FAIL, error
        row = ret.return_value
        if not was_recorded(study.study_name, uid, trial.number):  # else its job did, in here
            rid = row_id(None, study.study_name, trial.number, uid)
            trial.set_user_attr("layers", encode_rows(read_layers(store, rid)))
            trial.set_user_attr("row", encode_row(row))
        return tell_row(study, trial, row, settings, trial.set_user_attr)
    # finished meanwhile by another worker: its attributes refused, or Optuna's tell itself
    # ("Cannot tell a COMPLETE trial.") where its job had put the row on it already
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        state = study._storage.get_trial(trial._trial_id).state
        if not state.is_finished():
            raise
        if state in (TrialState.COMPLETE, TrialState.PRUNED):  # stalled past the grace
            # period after `record_row`: another worker told it from the row on the trial
            log.info("trial %d was told from its row by another worker", trial.number)
            return state, ""
        error = "failed as stale while it ran (no heartbeat within the grace period)"
        log.warning("trial %d %s; its parameters were queued again", trial.number, error)
        if state == TrialState.FAIL:
            # its job stored it complete after another worker failed it (this worker stalled
            # past the grace period): the study's failed trial and the store's row must agree,
            # and its parameters run again as another trial
            why = study.user_attrs.get(f"{STALE_PREFIX}{trial.number}", error)
            rid = row_id(None, study.study_name, trial.number, uid)
            write_trial(store, failed_row(study, trial, why), row_id=rid, replace_complete=True)
        return TrialState.FAIL, error


def tell_row(
    study, trial: optuna.Trial | int, row: dict, settings: StudySettings, set_attr
) -> tuple[TrialState, str]:
    """Tell ``trial`` (live, or by number) the outcome its ``row`` says; ``set_attr(key,
    value)`` sets its user attributes (``error``)."""
    if row["status"] == "complete":
        values = [row.get(o) for o in settings.objectives]
        if all(isinstance(v, int | float) and v == v for v in values):
            # a noisy latency is told all the same: the trial warned, its row says
            # latency_noisy, and the study's closing table counts such trials
            finish_trial(study, trial, values)
            return TrialState.COMPLETE, ""
        error = f"objective(s) {list(settings.objectives)} missing from the row"
    elif row["status"] == "pruned":
        finish_trial(study, trial, state=TrialState.PRUNED)
        return TrialState.PRUNED, ""
    else:
        error = row.get("error") or "failed"
    set_attr("error", error)
    finish_trial(study, trial, state=TrialState.FAIL)
    return TrialState.FAIL, error


def finish_trial(study, trial, values=None, state=None) -> None:
    """``study.tell(trial, values, state=state)``, without what ``tell`` does after: reading
    the finished trial back from the storage to return a deep copy of it, which nobody reads
    here (a storage round trip per trial, in a search of many small ones).

    Told as inside ``Study.optimize``: a sampler that ends the study from its ``after_trial``
    (the grid sampler once every point has run) calls ``study.stop()``, which raises anywhere
    else, and sets the flag the sweep stops asking at (`grid_done`). The trial is stored as
    told either way (Optuna stores it in a ``finally``).
    """
    local = getattr(study, "_thread_local", None)
    was = getattr(local, "in_optimize_loop", False)
    if local is not None:
        local.in_optimize_loop = True
    try:
        if _TELL is None:
            study.tell(trial, values, state=state)
        else:
            _TELL(study=study, trial=trial, value_or_values=values, state=state)
    except RuntimeError as e:
        if "Study.stop" not in str(e):  # an Optuna without the flag: the trial is told
            raise
    finally:
        if local is not None:
            local.in_optimize_loop = was


def grid_done(study: optuna.Study) -> bool:
    """Whether the sampler ended the study (`finish_trial`): every point of a grid has run."""
    return bool(getattr(study, "_stop_flag", False))


def _tell_function():
    # Optuna's own body of Study.tell, where this Optuna has it as it is read here
    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:
        return None
    names = set(inspect.signature(_tell_with_warning).parameters)
    return _tell_with_warning if {"study", "trial", "value_or_values", "state"} <= names else None


_TELL = _tell_function()


def reads_latency(objective: str) -> bool:
    """Whether ``objective`` is a latency figure (``latency_ms``, ``speedup_low``...)."""
    return objective.startswith(("latency_ms", "speedup"))


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
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if t.datetime_complete is not None and counts(t, stale)
    ]
    done.sort(key=lambda t: t.datetime_complete)
    count = 0
    for t in reversed(done):
        if t.state != TrialState.FAIL:
            break
        count += 1
    return count
