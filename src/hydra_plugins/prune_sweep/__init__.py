"""Hydra discovers sweepers only under ``hydra_plugins``; this shell hands the work to sweep.search.

Kept free of heavy imports: Hydra imports every plugin module on every run.
"""

from __future__ import annotations

from typing import Any

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
