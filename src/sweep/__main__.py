"""``python -m sweep``: compose the config, run one trial, print one summary line.

python -m sweep method=ln_structured amount=0.5
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import time
from contextlib import nullcontext
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sweep._console import swept_here, trial_count
from sweep._env import WORKER_ENV
from sweep._signals import signals_raise
from sweep.cli import check_overrides, summary
from sweep.errors import ConfigError, fail

log = logging.getLogger("sweep")


@hydra.main(config_path="pkg://sweep.conf", config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> dict:
    # torch: imported once the command line is known good
    from sweep.fused import fused_row
    from sweep.trial import run_trial

    log.info("overrides: %s", " ".join(HydraConfig.get().overrides.task) or "(none)")
    on_epoch = on_start = on_row = callbacks = None
    if cfg.optuna.study is not None:
        from sweep.search import job_callbacks as callbacks

        on_epoch, on_start, on_row = callbacks(cfg)
    if cfg.optuna.study is None and HydraConfig.get().mode == RunMode.MULTIRUN:
        _clean_once(cfg.store.path)  # an Optuna sweep cleans its store as it starts
    started = time.perf_counter()
    try:
        row = fused_row(cfg, callbacks) or run_trial(
            cfg, on_epoch=on_epoch, on_start=on_start, on_row=on_row
        )
    except ConfigError as e:
        if cfg.optuna.study is not None:
            raise  # the sweeper fails this trial with the reason and goes on
        fail(str(e))
    except OSError as e:
        if e.errno != errno.ENOSPC or cfg.optuna.study is not None:
            raise  # an Optuna sweep says its own line, failing and requeueing what ran
        done = (
            "what finished is in the store; " if HydraConfig.get().mode == RunMode.MULTIRUN else ""
        )
        fail(
            f"no space left on device writing {e.filename or cfg.store.path}; {done}free space "
            "and rerun the command",
            code=1,
        )
    if "store_file" in row:  # not a DDP trial's rank other than 0: rank 0 prints its line
        print(trial_count(time.perf_counter() - started) + summary(row, swept_here()))
    if row["status"] == "failed" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)  # in a sweep the row says it; the other trials go on
    if row["status"] == "failed" and cfg.optuna.study is None:
        _failed.append(row["trial_key"])  # the grid's command fails once all have run
    return row


# the trials of a grid run in this process that failed (an Optuna study counts its own)
_failed: list[str] = []
# the stores a grid run in this process has cleaned
_cleaned: set[str] = set()


def _clean_once(store: str) -> None:
    """What killed writers left in ``store`` over an hour ago, removed once per grid."""
    from sweep.store import clean

    if store not in _cleaned:
        _cleaned.add(store)
        try:
            clean(store)
        except OSError as e:  # a store shared read-only: what is left there stays
            log.debug("store %s not cleaned: %s", store, e)


def main() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        _command(torchrun=False)
        return
    try:
        _command(torchrun=True)
    except SystemExit as e:
        _leave(e.code)
    _leave(0)


def _leave(code: int | str | None) -> NoReturn:
    """Exit a torchrun rank at once, its output flushed, without tearing the interpreter down.

    Once its trial is done a rank has nothing left to write, but the interpreter's teardown
    can meet gloo's threads still running and abort (``terminate called without an active
    exception``, SIGABRT, about 1 run in 30 on 2 busy cores): torchrun then fails the job and
    SIGTERMs the other ranks, though the trial's row was written.
    """
    if isinstance(code, str):
        print(code, file=sys.stderr)  # as sys.exit('message') prints it
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _command(torchrun: bool) -> None:
    if WORKER_ENV not in os.environ:  # a local helper's parent checked this command line
        check_overrides(sys.argv[1:])
    # SIGTERM too: a trial's files are cleaned up on the way out. Not in a torchrun rank:
    # one blocked in a collective must die at torchrun's SIGTERM, as it did
    try:
        with nullcontext() if torchrun else signals_raise():
            _main()
    except KeyboardInterrupt as e:  # an Optuna sweep says its own line and exits itself
        signum = getattr(e, "signum", signal.SIGINT)
        multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])
        fail(
            f"interrupted by {signal.Signals(signum).name}; "
            + (
                "what finished is in the store: rerun the command to go on (a grid reruns only "
                "what the store lacks with skip_completed=true)"
                if multirun
                else "the trial wrote no row"
            ),
            code=128 + signum,
        )
    if _failed:
        fail(
            f"{len(_failed)} trial(s) of the sweep failed ({', '.join(_failed[:3])}"
            f"{', ...' * (len(_failed) > 3)}): the lines above say why, sweep.log has the "
            "tracebacks",
            code=1,
        )


if __name__ == "__main__":
    main()
