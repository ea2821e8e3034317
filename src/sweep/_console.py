"""What a run shows on the console: one summary line per trial, progress bars on a terminal,
warnings. Everything else, tracebacks included, goes to the run's log (``sweep.log``)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = [
    "IN_LOG_ONLY",
    "PROGRESS",
    "GridCount",
    "LogOnly",
    "grid_jobs",
    "place_next_trial",
    "show_progress",
    "trial_count",
]

# the accepted values of the ``progress`` key
PROGRESS = "true | false | auto (bars on a terminal or in a notebook only)"

# Hydra's basic sweeper, and ours that composes its jobs once per set of group choices
_GRID_SWEEPERS = (
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    "hydra_plugins.prune_sweep.GridSweeper",
)
# This process's multirun: its grid's size (`GridCount`), the place of the trial a sweeper
# launches next (`place_next_trial`), the seconds each finished trial took. Jobs of Hydra's
# basic launcher and of the Optuna sweeper run in the process that started the sweep.
_SWEEP: dict[str, Any] = {"durations": []}

# ``extra=`` of a log record that belongs in the run's log and not on the console: a failed
# trial's traceback (the summary line already says FAILED with its last line).
IN_LOG_ONLY = {"console": False}


def show_progress(setting: Any) -> bool:
    """Whether to draw progress bars for the config's ``progress`` setting.

    ``auto`` draws them where someone watches: stderr (where tqdm writes) is a terminal, or
    the run is in a Jupyter kernel (tqdm.auto's widgets). Redirected to a file or a pipe, the
    bars would be hundreds of carriage-return frames. ``true`` draws them anyway.

    Example:
        >>> show_progress(False)
        False
    """
    if setting == "auto":
        return sys.stderr.isatty() or _in_notebook()
    return setting is True


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")  # never imported here: a plain run has none
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


class LogOnly(logging.Filter):
    """The console handler's filter (``conf/hydra/job_logging/sweep.yaml``): drops the records
    logged with ``extra=IN_LOG_ONLY``; the file handler keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


def trial_count(seconds: float) -> str:
    """``"[k/N, eta h:mm:ss] "`` before a multirun's summary line: the trial's place in the
    sweep and the time left at the mean duration of the trials this process finished (its
    ``seconds`` included); ``""`` outside a multirun, or where its jobs run elsewhere.

    Example:
        >>> place_next_trial(3, 20)
        >>> trial_count(2.5)
        '[3/20, eta 0:00:42] '
    """
    place = _SWEEP.pop("next", None) or _grid_place()
    if place is None:
        return ""
    number, total, workers = place
    _SWEEP["durations"].append(seconds)
    if total is None:
        return f"[{number}] "
    mean = sum(_SWEEP["durations"]) / len(_SWEEP["durations"])
    left = dt.timedelta(seconds=round(mean * max(0, total - number) / workers))
    return f"[{number}/{total}, eta {left}] "


def place_next_trial(number: int, total: int, workers: int = 1) -> None:
    """Called by a sweeper before it launches a trial: its place (``number`` of ``total``) and
    how many workers share what is left (the time left divides among them)."""
    _SWEEP["next"] = (number, total, max(1, workers))


class GridCount(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml): counts the jobs of a grid
    multirun (Hydra's basic sweeper) as it will, for `trial_count`."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _SWEEP.update(durations=[], total=None, grid=False, jobs=None)
        if config.hydra.sweeper.get("_target_") not in _GRID_SWEEPERS:
            return
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        params = config.hydra.sweeper.get("params") or {}
        arguments = [*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task]
        _SWEEP["grid"] = True
        hydra = GlobalHydra.instance()
        # the loader lists a group's options for glob(*), as the sweeper's own parser does
        loader = hydra.config_loader() if hydra.is_initialized() else None
        try:
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
            batches = BasicSweeper.split_arguments(parsed, None)
        except HydraException:
            return
        _SWEEP["jobs"] = [list(job) for batch in batches for job in batch]
        _SWEEP["total"] = len(_SWEEP["jobs"])


def grid_jobs() -> list[list[str]] | None:
    """The overrides of every job of this process's grid multirun, by job number; ``None``
    outside one (or where its values could not be listed)."""
    return _SWEEP.get("jobs") if _SWEEP.get("grid") else None


# what the trial line names anyway (`sweep.cli.summary`)
_NAMED = {"method", "amount", "method.importance", "schedule", "rewind"}


def swept_here() -> list[str]:
    """``key=value`` of this grid job for each key whose value differs between the grid's
    jobs, but for those the trial line names anyway: what tells apart the lines of jobs of one
    method and amount (``finetune.lr=0.01``); empty outside a grid."""
    jobs = grid_jobs()
    if not jobs:
        return []
    from hydra.core.hydra_config import HydraConfig

    number = HydraConfig.get().job.num
    if number >= len(jobs):
        return []
    values = [dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o) for job in jobs]
    return [
        f"{key}={value}"
        for key, value in values[number].items()
        if len({v.get(key) for v in values}) > 1
        if key not in _NAMED and not key.startswith("scope.amounts")
    ]


def _grid_place() -> tuple[int, int | None, int] | None:
    if not _SWEEP.get("grid"):
        return None
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.num + 1, _SWEEP.get("total"), 1
