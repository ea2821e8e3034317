"""Hydra discovers sweepers only under ``hydra_plugins``: shells that hand the work to sweep.search.

Kept free of heavy imports: Hydra imports every plugin module on every run.
"""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    """Optuna 4/5 sweeper for prune-sweep (``hydra/sweeper: optuna``)."""

    def __init__(self, **settings: Any) -> None:
        self._settings = OmegaConf.create(settings)
        self._sweep = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from sweep.search import OptunaSweep

        self._sweep = OptunaSweep(self._settings)
        self._sweep.setup(hydra_context, task_function, config)

    def sweep(self, arguments: list[str]) -> Any:
        return self._sweep.sweep(arguments)


class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper (``hydra/sweeper: grid``, the default of a multirun without a
    search) whose jobs are composed by `sweep.search._launch.ComposingLauncher`: once per set
    of group choices, not once to check each batch and again to launch each job. Under any
    other launcher than the basic one, that launcher composes and runs the jobs as before."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from sweep.search._launch import ComposingLauncher

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = ComposingLauncher(self.launcher, hydra_context, task_function, config)

    def sweep(self, arguments: list[str]) -> Any:
        from sweep.store import index_written

        returns = super().sweep(arguments)
        # the grid's rows, indexed now: the first load reads the index, not a file per trial
        index_written(self.config.store.path)
        return returns

    def validate_batch_is_legal(self, batch: Any) -> None:
        if self.launcher.composer is None:  # the launcher composes its own jobs
            super().validate_batch_is_legal(batch)
            return
        for overrides in batch:  # composing fails as Hydra's own composition does
            self.launcher.job_config(list(overrides), keep=True)
