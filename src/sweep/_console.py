"""What a run shows on the console: one summary line per trial, progress bars on a terminal,
warnings. Everything else, tracebacks included, goes to the run's log (``sweep.log``)."""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["IN_LOG_ONLY", "PROGRESS", "LogOnly", "show_progress"]

# the accepted values of the ``progress`` key
PROGRESS = "true | false | auto (bars on a terminal or in a notebook only)"

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
