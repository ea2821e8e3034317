"""A grid multirun with ``fuse``: a job runs the next jobs of its group with it, fused.

Hydra's basic sweeper runs a grid's jobs one after another in one process. The first job of a
fusion group (`fusion_key`) composes the configs of the grid's later jobs, takes up to
``fuse`` of them that share its key (itself included) and runs them with `run_fused`; the
later jobs then find their rows here and only print and return them. Every job keeps its own
Hydra folder, its ``.hydra`` files and its line on the console.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from sweep._console import grid_jobs
from sweep.fused._key import fusion_key
from sweep.fused._run import run_fused
from sweep.fused._size import fuse_size

__all__ = ["fused_grid_row"]

log = logging.getLogger(__name__)

# Rows a fused group finished for the grid's later jobs, by job number.
_DONE: dict[int, dict[str, Any]] = {}


def fused_grid_row(cfg: DictConfig) -> dict[str, Any] | None:
    """This grid job's row when a fused group ran (or runs now) it; ``None``: run it alone.

    Args:
        cfg: The job's composed config (``hydra`` node and all, as ``@hydra.main`` gives it).
    """
    jobs = grid_jobs()
    if jobs is None or cfg.optuna.study is not None:
        return None
    number = HydraConfig.get().job.num
    if number in _DONE:
        return _DONE.pop(number)
    if cfg.fuse == 1:
        return None
    key, reason = fusion_key(cfg)
    if key is None:
        log.info("job %d runs alone: %s", number, reason)
        return None
    from sweep.trial import resolve_device

    size = fuse_size(cfg.fuse, resolve_device(cfg.device), _member_bytes(cfg))
    members = [(number, _trial_config(cfg))]
    config_name = HydraConfig.get().job.config_name
    for later in range(number + 1, len(jobs)):
        if len(members) >= size:
            break
        other = compose(config_name, overrides=list(jobs[later]))
        if other.fuse != 1 and fusion_key(other)[0] == key:
            members.append((later, other))
    if len(members) == 1:
        return None
    log.info("jobs %s finetune fused", ", ".join(str(n) for n, _ in members))
    rows = run_fused([c for _, c in members])
    for (later, _), row in zip(members[1:], rows[1:], strict=True):
        _DONE[later] = row
    return rows[0]


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
