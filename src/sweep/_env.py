"""What a sweep hands its jobs and local helper workers through the environment."""

from __future__ import annotations

import os

from sweep.errors import ConfigError

# The storage URL: the environment, never a file or a command line (the URL may hold a password).
STORAGE_ENV = "SWEEP_OPTUNA_STORAGE"
# Set for the local helper workers a sweep starts (hydra.sweeper.n_jobs): their number.
WORKER_ENV = "SWEEP_WORKER"
# Seconds the command waits for its local helpers to stop after Ctrl-C or SIGTERM before it
# kills them (default 60).
STOP_GRACE_ENV = "SWEEP_STOP_GRACE_S"


def stop_grace_s() -> float:
    """How long the command waits for its helpers to stop after a signal before it kills them
    (``SWEEP_STOP_GRACE_S``, default 60): a helper fails its trial at once, unless it hangs.

    Raises:
        ConfigError: The variable is not a number of seconds >= 0 (checked with the command line).
    """
    value = os.environ.get(STOP_GRACE_ENV, "60")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{STOP_GRACE_ENV}={value!r} is not valid; accepted: seconds >= 0")
    return seconds
