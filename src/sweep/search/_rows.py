"""A study's rows in its own storage: every trial's row and layers as user attributes.

Workers write their rows to their own results store *and* to the trial in the study, so that
`sweep.load_results(storage=URL, study=NAME)` gives the rows of every worker, wherever their
disks were. A finished trial whose row never reached it (its worker died, or its job raised
before writing one) reads as the failed row a store holds for it (`failed_row`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.errors import ConfigError
from sweep.store import decode_rows, row_id

__all__ = ["failed_row", "study_rows"]


def failed_row(
    study: optuna.Study, trial: FrozenTrial | optuna.Trial, error: str
) -> dict[str, Any]:
    """The row of a trial whose job wrote none: what the study knows of it, ``status=failed``."""
    uid = study.user_attrs.get("uid")
    return {
        "trial_key": trial.user_attrs.get("trial_key"),
        "status": "failed",
        "error": error,
        "method": trial.params.get("method"),
        "amount": trial.params.get("amount"),
        "started_at": trial.datetime_start,
        **trial.params,
        "optuna.study": study.study_name,
        "optuna.uid": uid,
        "optuna.trial": trial.number,
    }


def _check_exists(url: str) -> None:
    """A reader opens no storage that is not there: opening a SQLite URL or a journal file
    creates an empty one."""
    path = url.removeprefix("sqlite:///").partition("?")[0] if url.startswith("sqlite:///") else ""
    if "://" not in url:
        path = url  # a journal file
    if "uri=true" in url or path.startswith("file:"):
        return  # SQLite's own URI form: sqlite:///file:x.db?mode=ro&uri=true
    if path and path != ":memory:" and not Path(path).expanduser().is_file():
        from sweep.hashing import mask_password

        raise ConfigError(
            f"storage={mask_password(url)!r}: there is no file {path!r}; accepted: the storage a "
            "study ran with (hydra.sweeper.storage; by default sqlite:///<store.path>/optuna.db)"
        )


def study_rows(
    storage: Any, study_name: str | None, attr: str
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(row id, rows) of every finished trial of the study, in trial order: its ``row`` or
    ``layers`` user attribute, or for ``row`` a failed row when the trial has none."""
    if study_name is None or storage is None:
        raise ConfigError("reading rows from a study needs both storage= and study=")
    if isinstance(storage, str):
        from sweep.search._study import open_storage

        _check_exists(storage)
        storage = open_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        raise ConfigError(
            f"study={study_name!r} is not in this storage; studies there: "
            f"{', '.join(names) or 'none'}"
        ) from None
    uid = study.user_attrs.get("uid")
    from sweep.search._study import given_back, stale_trials

    stale = stale_trials(study)
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished() or given_back(t):
            continue  # a running trial has no row in a store either, nor one given back unrun
        label = row_id(None, study.study_name, t.number, uid)
        encoded = t.user_attrs.get(attr)
        if encoded is not None:
            yield label, decode_rows(encoded)
        elif attr == "row" and t.state == TrialState.FAIL:
            error = t.user_attrs.get("error") or stale.get(t.number) or "failed"
            yield label, [failed_row(study, t, str(error))]
