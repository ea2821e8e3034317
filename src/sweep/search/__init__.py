"""Optuna-driven sweeps: search spaces in YAML, samplers and trial pruners by name, shared storages.

The Hydra sweeper plugin (``hydra/sweeper=optuna``, selected by ``search=<name>``) runs
`OptunaSweep`; each job rebuilds its trial from the storage with `reporter`.
"""

from sweep.search._job import job_callbacks, record_key, reporter
from sweep.search._settings import study_settings
from sweep.search._space import Param, SearchSpace
from sweep.search._study import OBJECTIVES, PRUNERS, SAMPLERS, StudySettings, open_storage
from sweep.search._sweeper import OptunaSweep

__all__ = [
    "OBJECTIVES",
    "PRUNERS",
    "SAMPLERS",
    "OptunaSweep",
    "Param",
    "SearchSpace",
    "StudySettings",
    "job_callbacks",
    "open_storage",
    "record_key",
    "reporter",
    "study_settings",
]
