from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sweep._env import STORAGE_ENV
from sweep._signals import held
from sweep.search._study import make_pruner, open_storage
from sweep.store import RowCallback, encode_row, encode_rows
from sweep.training import EpochCallback

log = logging.getLogger(__name__)

# (study, uid, trial number) of the trials whose rows `record_row` put on them in this process:
# the sweeper's tell, in the same process, need not put them there again (`was_recorded`).
_RECORDED: set[tuple[str, str | None, int]] = set()


def was_recorded(study_name: str, uid: str | None, number: int) -> bool:
    """Whether this process's job of the trial put its row on it (`record_row`); forgets it."""
    key = (study_name, uid, number)
    if key in _RECORDED:
        _RECORDED.discard(key)
        return True
    return False


def job_callbacks(
    cfg: DictConfig,
) -> tuple[EpochCallback | None, Callable[[str], None], RowCallback]:
    """``(reporter(cfg), record_key(cfg), record_row(cfg))``, with the job's trial looked up
    once: `run_trial`'s ``on_epoch``, ``on_start`` and ``on_row``.

    What they do in the storage, a signal does not cut short: it waits for the call's end
    (`sweep._signals.held`)."""
    ids = _trial(cfg)
    return reporter(cfg, ids), record_key(cfg, ids), record_row(cfg, ids)


def reporter(cfg: DictConfig, ids: _Ids | None = None) -> EpochCallback | None:
    """The job's side of an Optuna trial, rebuilt from the storage by study name and number
    (``ids``: its storage, study, trial and the study's directions, when already looked up).

    Returns a callback that reports each epoch's validation accuracy (its error, 1 - accuracy,
    when the study minimises) and raises ``optuna.TrialPruned`` when the trial pruner says so.
    Multi-objective studies get no callback: Optuna does not prune them. Works in any process
    that reaches the storage.
    """
    storage, _, trial_id, directions = ids or _trial(cfg)
    if len(directions) > 1:
        return None
    maximize = directions[0] == optuna.study.StudyDirection.MAXIMIZE
    # Optuna keeps no pruner in the storage: rebuild the sweep's own from its config.
    pruner = OmegaConf.to_container(HydraConfig.get().sweeper.pruner, resolve=True)
    trial = None  # loaded at the first epoch: a trial with none (a proxy) needs no study

    def on_epoch(epoch: int, acc: float) -> None:
        nonlocal trial
        with held():
            if trial is None:
                study = optuna.load_study(
                    study_name=cfg.optuna.study, storage=storage, pruner=make_pruner(pruner)
                )
                trial = optuna.Trial(study, trial_id)
            trial.report(acc if maximize else 1.0 - acc, epoch)
            prune = trial.should_prune()
        if prune:
            raise optuna.TrialPruned(
                f"stopped by the trial pruner after epoch {epoch} (validation accuracy {acc:.4f})"
            )

    return on_epoch


def record_key(cfg: DictConfig, ids: _Ids | None = None) -> Callable[[str], None]:
    """A callback that records the trial key on the job's Optuna trial: `run_trial` calls it
    once the key is known (the data's fingerprint and the checkpoint's digest in it), so that
    a trial whose job dies still names its key (`failed_row`)."""
    storage, _, trial_id, _ = ids or _trial(cfg)

    def record(key: str) -> None:
        with held():
            storage.set_trial_user_attr(trial_id, "trial_key", key)

    return record


def record_row(cfg: DictConfig, ids: _Ids | None = None) -> RowCallback:
    """A callback that puts the trial's row and per-layer rows on its Optuna trial (user
    attributes ``layers``, then ``row``): `run_trial` calls it just before it writes them to
    the store. A worker that dies between its write and its tell then leaves its outcome where
    every worker reads it, whatever store it wrote to: the trial is told from it
    (`finish_from_row`), never run twice. The sweeper's tell in this process leaves them as
    they are (`was_recorded`); in another process (a launcher's job) it sets them again."""
    storage, _, trial_id, _ = ids or _trial(cfg)

    def record(row: dict[str, Any], layers: Sequence[dict[str, Any]]) -> None:
        key = row.get("trial_key")
        try:
            with held():
                storage.set_trial_user_attr(
                    trial_id, "layers", encode_rows([{"trial_key": key, **r} for r in layers])
                )
                storage.set_trial_user_attr(trial_id, "row", encode_row(row))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # failed as stale meanwhile: the sweeper's tell stores its row as failed
        except Exception:  # a database hiccup: the row still goes to the store, and the tell
            log.warning("trial %s: its row did not reach the study yet", key, exc_info=True)
        else:
            _RECORDED.add((cfg.optuna.study, cfg.optuna.get("uid"), cfg.optuna.trial))

    return record


_Ids = tuple[Any, int, int, list]  # storage, study id, trial id, the study's directions


def _trial(cfg: DictConfig) -> _Ids:
    """The job's storage (the sweep set the real URL in the environment: the config's is
    masked), its study's id, its trial's id and the study's directions."""
    url = os.environ.get(STORAGE_ENV) or cfg.optuna.storage
    with held():
        storage = _storage(url)
        if cfg.optuna.get("uid"):  # one study, whatever was deleted and created under its name
            study_id, directions = _study(url, cfg.optuna.study, cfg.optuna.uid)
        else:
            study_id, directions = _study.__wrapped__(url, cfg.optuna.study, None)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, cfg.optuna.trial)
    return storage, study_id, trial_id, directions


@functools.lru_cache(maxsize=8)
def _study(url: str, name: str, uid: str | None) -> tuple[int, list]:
    """A study's id and directions: the same for every job of the study (``uid``) this
    process runs."""
    storage = _storage(url)
    study_id = storage.get_study_id_from_name(name)
    return study_id, storage.get_study_directions(study_id)


@functools.lru_cache(maxsize=8)
def _storage(url: str) -> Any:
    # one connection pool per process, shared by all the jobs it runs
    return open_storage(url)
