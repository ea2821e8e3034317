"""A sweep worker's signals (`sweep._signals`): at once while a trial computes, never in
the middle of a storage call."""

from __future__ import annotations

import os
import signal

import pytest

from sweep._signals import Interrupted, held, ignore_signals, released, signals_raise


def _kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs in this (the main) thread, at once


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_raises_at_once_outside_a_held_block(signum):
    done, before = [], signal.getsignal(signum)
    with signals_raise(), pytest.raises(Interrupted) as e:
        _kill_self(signum)
        done.append("after")
    assert done == []
    assert e.value.signum == signum
    assert signal.getsignal(signum) == before  # restored on the way out


def test_a_signal_in_a_held_block_waits_for_its_end():
    """A storage call cut half way could leave a lock taken or a trial made but never
    returned: it ends first, then the signal raises."""
    steps = []
    with signals_raise(), pytest.raises(Interrupted) as e:
        with held():
            steps.append("call starts")
            _kill_self(signal.SIGTERM)
            _kill_self(signal.SIGINT)  # only the first is raised
            with held():  # nested: still held at its end
                steps.append("inner")
            steps.append("call ends")
        steps.append("after the block")
    assert steps == ["call starts", "inner", "call ends"]
    assert e.value.signum == signal.SIGTERM


def test_a_released_block_inside_a_held_one_raises_at_once():
    """The sweep's loop is held; its trial runs released: a signal held back during the ask
    raises as the trial starts, one during the trial at once, one in the trial's own storage
    call at that call's end."""
    steps = []
    with signals_raise():
        with pytest.raises(Interrupted), held():
            _kill_self(signal.SIGTERM)
            steps.append("asked")
            with released():
                steps.append("trial ran")  # never: raised as it starts
        with pytest.raises(Interrupted), held(), released():
            steps.append("trial starts")
            _kill_self(signal.SIGTERM)
            steps.append("trial ran on")
        with pytest.raises(Interrupted), held(), released():
            with held():
                _kill_self(signal.SIGTERM)
                steps.append("reported")
            steps.append("next epoch")
    assert steps == ["asked", "trial starts", "reported"]


def test_ignored_signals_stay_ignored_and_clear_what_was_held():
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with signals_raise(), held():
            _kill_self(signal.SIGTERM)
            ignore_signals()  # failing the trials: nothing more is raised
            _kill_self(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # for good
        with signals_raise():  # a worker whose parent ignores SIGTERM
            _kill_self(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def test_an_ignore_inside_the_block_holds_after_it():
    """`ignore_signals` is for good: the sweeper ignores a second Ctrl-C while it fails its
    trials, then exits through an outer `signals_raise` (python -m sweep's own), which put the
    default handlers back, and a second signal then cut the way out short."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with signals_raise():
            with signals_raise():
                ignore_signals()
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
