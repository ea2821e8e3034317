"""Multirun jobs that fuse: a job runs the other jobs of its group with it, fused.

Hydra's basic launcher and the Optuna sweeper's `ComposingLauncher` run a multirun's jobs one
after another in the process that started it. The first job of a fusion group runs every
member with `run_fused`; the later jobs then find their rows here and only print and return
them. Every job keeps its own Hydra folder, its ``.hydra`` files and its line on the console.

- **A grid** (Hydra's basic sweeper): the first job composes the configs of the grid's later
  jobs and takes up to ``fuse`` of them that share its `fusion_key` (itself included).
- **An Optuna search** (ask K, tell K): the sweeper asks up to ``fuse`` trials, composes their
  jobs' configs and hands them over with `hand_over` before it launches the first of them;
  `run_fused` groups them by key and runs alone those that cannot fuse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from sweep._console import grid_jobs
from sweep.fused._key import fusion_key
from sweep.fused._run import run_fused
from sweep.fused._size import fuse_size
from sweep.store import RowCallback
from sweep.training import EpochCallback

__all__ = ["fused_row", "group_size", "hand_over"]

log = logging.getLogger(__name__)

# a member's config -> its on_epoch, on_start and on_row callbacks (`sweep.trial.run_trial`)
Callbacks = Callable[
    [DictConfig], tuple[EpochCallback | None, Callable[[str], None] | None, RowCallback | None]
]

_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"

# Rows a fused group finished for its later jobs: ("grid", job number) or ("optuna", trial).
_DONE: dict[tuple[str, int], dict[str, Any]] = {}
# Optuna groups handed over by the sweeper, by the trial number of their first member.
_GROUPS: dict[int, list[DictConfig]] = {}


def fused_row(cfg: DictConfig, callbacks: Callbacks | None = None) -> dict[str, Any] | None:
    """This job's row when a fused group ran (or runs now) it; ``None``: run it alone.

    Args:
        cfg: The job's composed config (``hydra`` node and all, as ``@hydra.main`` gives it).
        callbacks: For an Optuna trial's job: a member's config -> its ``on_epoch``,
            ``on_start`` and ``on_row`` (`sweep.search.job_callbacks`).
    """
    if cfg.optuna.study is not None:
        return _optuna_row(cfg, callbacks or (lambda member: (None, None, None)))
    return _grid_row(cfg)


@contextmanager
def hand_over(cfgs: Sequence[DictConfig]) -> Iterator[None]:
    """While the block launches their jobs, have the job of the first of ``cfgs`` (an Optuna
    search's asked trials, each its job's composed config) run all of them fused, and each
    later job return its row. What a job that died left behind is forgotten at the end."""
    numbers = [c.optuna.trial for c in cfgs]
    _GROUPS[numbers[0]] = [_trial_config(c) for c in cfgs]
    try:
        yield
    finally:
        _GROUPS.pop(numbers[0], None)
        for number in numbers:
            _DONE.pop(("optuna", number), None)


def group_size(cfg: DictConfig) -> int:
    """How many trials a group of the job ``cfg`` holds: its ``fuse`` on its device (1 where
    its launcher runs jobs in other processes, which a group cannot reach)."""
    if cfg.fuse == 1:
        return 1
    launcher = _launcher(cfg)
    if launcher != _BASIC_LAUNCHER:
        log.info("fuse=%s: each job runs alone under the launcher %s", cfg.fuse, launcher)
        return 1
    from sweep.trial import resolve_device

    return fuse_size(cfg.fuse, resolve_device(cfg.device), _member_bytes(cfg))


def _launcher(cfg: DictConfig) -> str:
    if "hydra" in cfg:
        return str(cfg.hydra.launcher.get("_target_"))
    if HydraConfig.initialized():
        return str(HydraConfig.get().launcher.get("_target_"))
    return _BASIC_LAUNCHER  # run_fused from Python: one process


def _optuna_row(cfg: DictConfig, callbacks: Callbacks) -> dict[str, Any] | None:
    number = cfg.optuna.trial
    if ("optuna", number) in _DONE:
        return _DONE.pop(("optuna", number))
    members = _GROUPS.pop(number, None)
    if members is None:
        return None
    from sweep.errors import ConfigError

    log.info("trials %s run fused", ", ".join(str(m.optuna.trial) for m in members))
    on_epoch, on_start, on_row = zip(*map(callbacks, members), strict=True)
    try:
        rows = run_fused(members, on_epoch=on_epoch, on_start=on_start, on_row=on_row)
    except ConfigError as e:  # one member's bad value: each runs alone, and that one fails
        log.info("the group runs alone: %s", e)
        return None
    for member, row in zip(members[1:], rows[1:], strict=True):
        _DONE[("optuna", member.optuna.trial)] = row
    return rows[0]


def _grid_row(cfg: DictConfig) -> dict[str, Any] | None:
    jobs = grid_jobs()
    if jobs is None:
        launcher = _launcher(cfg)
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        if multirun and cfg.fuse != 1 and launcher != _BASIC_LAUNCHER:  # its own process
            log.info("fuse=%s: each job runs alone under the launcher %s", cfg.fuse, launcher)
        return None
    number = HydraConfig.get().job.num
    if ("grid", number) in _DONE:
        return _DONE.pop(("grid", number))
    if cfg.fuse == 1:
        return None
    key, reason = fusion_key(cfg)
    if key is None:
        log.info("job %d runs alone: %s", number, reason)
        return None
    if HydraConfig.get().job.chdir and not Path(str(cfg.store.path)).expanduser().is_absolute():
        # each job's relative store is in its own folder, where a group's first job is not
        log.info(
            "job %d runs alone: hydra.job.chdir=true with a relative store.path=%s (each job "
            "stores in its own folder); an absolute store.path fuses",
            number,
            cfg.store.path,
        )
        return None
    members = [(number, _trial_config(cfg))]
    if _in_the_store(members[0][1]):
        return None  # its own run reads it, and the next job not in the store starts a group
    size = group_size(cfg)
    config_name = HydraConfig.get().job.config_name
    for later in range(number + 1, len(jobs)):
        if len(members) >= size:
            break
        other = compose(config_name, overrides=list(jobs[later]))
        if other.fuse != 1 and fusion_key(other)[0] == key and not _in_the_store(other):
            members.append((later, other))
    if len(members) == 1:
        return None
    log.info("jobs %s finetune fused", ", ".join(str(n) for n, _ in members))
    rows = run_fused([c for _, c in members])
    for (later, _), row in zip(members[1:], rows[1:], strict=True):
        _DONE[("grid", later)] = row
    return rows[0]


def _in_the_store(cfg: DictConfig) -> bool:
    """Whether the grid job ``cfg`` reads its complete row from the store instead of running
    (``skip_completed=true``): a group counts only the trials it runs."""
    if not cfg.skip_completed:
        return False
    from sweep.store import read_row
    from sweep.trial import prepare

    done = read_row(cfg.store.path, prepare(cfg, check_store=False).key)
    return done is not None and done["status"] == "complete"


def _trial_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` without Hydra's own node, as `compose` gives the later jobs'."""
    trial_cfg = cfg.copy()
    with open_dict(trial_cfg):
        trial_cfg.pop("hydra", None)
    return trial_cfg


def _member_bytes(cfg: DictConfig) -> int:
    """An estimate of the device memory one member needs in training, for ``fuse=auto`` on
    CUDA: weights, gradients, masks and two optimizer states (5x the weights), and twice the
    activations of a ``finetune.batch_size`` batch (kept for the backward pass). Only built
    where it decides something: ``auto`` on a CUDA device."""
    from sweep.trial import resolve_device

    if cfg.fuse != "auto" or resolve_device(cfg.device).type != "cuda":
        return 1
    import torch

    from sweep.trial import prepare

    plan = prepare(_trial_config(cfg), check_store=False)
    weights = sum(p.numel() * p.element_size() for p in plan.model.parameters())
    activations = 0

    def count(module, inputs, output) -> None:
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in plan.model.modules()]
    try:
        with torch.no_grad():
            plan.model.eval()(plan.data.test.inputs(1).cpu())
    finally:
        for hook in hooks:
            hook.remove()
    return 5 * weights + 2 * activations * int(cfg.finetune.batch_size)
