"""Errors a user can act on.

`ConfigError` is bad input: the command line prints its message as one line and exits non-zero
before anything is written. `TrialFailed` ends a running trial: its row is written with
``status=failed`` and the message as the reason.
"""

from __future__ import annotations

import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the value and what is accepted."""


class TrialFailed(RuntimeError):
    """A trial that started but could not finish (for example a NaN loss)."""


def fail(message: str, code: int = 2) -> NoReturn:
    """End a command with one line, ``error: <message>``, on stderr and exit status ``code``."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
