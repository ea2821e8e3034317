"""What a run shows on the console: one summary line per trial, progress bars on a terminal,
warnings. Everything else, tracebacks included, goes to the run's log (``sweep.log``)."""

from __future__ import annotations

import logging

__all__ = ["IN_LOG_ONLY", "LogOnly"]

# ``extra=`` of a log record that belongs in the run's log and not on the console: a failed
# trial's traceback (the summary line already says FAILED with its last line).
IN_LOG_ONLY = {"console": False}


class LogOnly(logging.Filter):
    """The console handler's filter (``conf/hydra/job_logging/sweep.yaml``): drops the records
    logged with ``extra=IN_LOG_ONLY``; the file handler keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)
