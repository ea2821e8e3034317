from __future__ import annotations

import functools
import os
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sweep._env import STORAGE_ENV
from sweep.search._study import make_pruner, open_storage
from sweep.training import EpochCallback


def reporter(cfg: DictConfig) -> EpochCallback | None:
    """The job's side of an Optuna trial, rebuilt from the storage by study name and number.

    Records the trial key on the trial, and returns a callback that reports each epoch's
    validation accuracy (its error, 1 - accuracy, when the study minimises) and raises
    ``optuna.TrialPruned`` when the trial pruner says so. Multi-objective studies get no
    callback: Optuna does not prune them. Works in any process that reaches the storage.
    """
    from sweep.trial import resolve_device, trial_key

    # the row's optuna.storage is masked; the sweep that launched this job set the real URL
    storage = _storage(os.environ.get(STORAGE_ENV) or cfg.optuna.storage)
    study_id = storage.get_study_id_from_name(cfg.optuna.study)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, cfg.optuna.trial)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    storage.set_trial_user_attr(
        trial_id, "trial_key", trial_key(resolved, resolve_device(cfg.device))
    )
    directions = storage.get_study_directions(study_id)
    if len(directions) > 1:
        return None
    # Optuna keeps no pruner in the storage: rebuild the sweep's own from its config.
    pruner = make_pruner(OmegaConf.to_container(HydraConfig.get().sweeper.pruner, resolve=True))
    study = optuna.load_study(study_name=cfg.optuna.study, storage=storage, pruner=pruner)
    trial = optuna.Trial(study, trial_id)
    maximize = directions[0] == optuna.study.StudyDirection.MAXIMIZE

    def on_epoch(epoch: int, acc: float) -> None:
        trial.report(acc if maximize else 1.0 - acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"stopped by the trial pruner after epoch {epoch} (validation accuracy {acc:.4f})"
            )

    return on_epoch


@functools.lru_cache(maxsize=8)
def _storage(url: str) -> Any:
    # one connection pool per process, shared by all the jobs it runs
    return open_storage(url)
