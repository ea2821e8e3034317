"""SIGINT and SIGTERM in a sweep's worker: the trial that runs stops at once, but never in the
middle of a storage call or of the study's lock.

A signal's Python handler runs between two bytecodes of the main thread, wherever it is. Raised
from there, an exception can leave a lock taken and never released (one taken by ``acquire()``
just before its ``try``), a database session half closed, a trial made but not yet returned;
the worker then hangs on its way out, or leaves a trial RUNNING. So a worker raises at once only
while its trial computes (`released`); while it talks to the storage (`held`), the first signal
waits for the block's end.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_held = 0  # how deep the main thread is in `held` blocks (0 in a `released` one)
_caught: list[int] = []  # the signals that came while held, first first


class Interrupted(KeyboardInterrupt):
    """What SIGINT or SIGTERM raises in a worker (`signals_raise`): a trial stops without a row
    either way (`sweep.trial.run_trial`), and the sweep fails it on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` while the block runs, at once outside `held`
    blocks, at the end of the outermost one inside. A signal ignored stays ignored."""

    def handler(signum: int, frame: Any) -> None:
        if _held:
            _caught.append(signum)
            return
        raise Interrupted(signum)

    previous = {
        signum: signal.signal(signum, handler)
        for signum in SIGNALS
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, before in previous.items():
            if signal.getsignal(signum) is not signal.SIG_IGN:  # `ignore_signals` is for good
                signal.signal(signum, before)
        _caught.clear()


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (in the main thread: only there do
    handlers run), and raise the first that came once the outermost block ends well."""
    global _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
    if not _held:
        check()


@contextmanager
def released() -> Iterator[None]:
    """Let SIGINT and SIGTERM raise at once while the block runs, inside a `held` one: the block
    is a trial's computing, or a wait. A signal held back until now raises as it starts."""
    global _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    depth, _held = _held, 0
    try:
        check()
        yield
    finally:
        _held = depth


def check() -> None:
    """Raise the first signal held back, if one came."""
    if _caught:
        signum = _caught[0]
        _caught.clear()
        raise Interrupted(signum)


def ignore_signals() -> None:
    """Ignore SIGINT and SIGTERM from now on: a second Ctrl-C, or the signal a helper gets from
    its terminal and from its parent both, must not cut short the failing of a trial."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    _caught.clear()


def signal_name(e: KeyboardInterrupt) -> str:
    return signal.Signals(getattr(e, "signum", signal.SIGINT)).name
