"""How long a trial's model takes: the dense model timed against the pruned one in alternating
rounds (`metrics.paired_latency`), N:M layers on 2:4 kernels when they can run.

`sweep.trial` asks `_measures_latency` whether to time at all, `_semi_structured_plan` whether
the 2:4 kernels run, and `_latency` for the row's latency columns.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweep import metrics
from sweep.data import Dataset
from sweep.plan import Plan
from sweep.pruning import semi_structured, semi_structured_unavailable

log = logging.getLogger(__name__)


def _measures_latency(cfg: DictConfig) -> bool:
    """``latency.measure``, with ``auto`` resolved: where latency means something (a model
    compacted for it) or a sweep optimises it."""
    if cfg.latency.measure != "auto":
        return bool(cfg.latency.measure)
    if cfg.compact:
        return True
    if not HydraConfig.initialized():
        return False
    objectives = OmegaConf.select(HydraConfig.get(), "sweeper.objectives", default=None)
    return any(str(o).startswith(("latency", "speedup")) for o in objectives or ())


def _semi_structured_plan(cfg: DictConfig, plan: Plan, row: dict[str, Any]) -> bool:
    """Whether this trial runs its N:M layers on 2:4 kernels (``compact=true``, a CUDA GPU of
    compute capability >= 8.0); if it cannot, ``compact_error`` says why."""
    if plan.method.nm is None or not cfg.compact:
        return False
    row["compact_error"] = semi_structured_unavailable(plan.device, *plan.method.nm)
    return row["compact_error"] is None


def _latency(
    reference: nn.Module,
    model: nn.Module,
    layers: Mapping[str, Any],
    data: Dataset,
    cfg: DictConfig,
    row: dict[str, Any],
    semi: bool,
) -> dict[str, Any]:
    """``latency_ms_dense``, ``latency_ms`` and ``speedup`` with their intervals: the dense
    ``reference`` against the model a user deploys, timed in alternating rounds
    (`metrics.paired_latency`); with ``semi``, both in fp16, the 2:4 layers among ``layers``
    on semi-structured kernels."""
    batch = _latency_batch(data, cfg.latency.batch_size)
    if semi:
        batch, reference = batch.half(), _half(reference)
        model = _semi_structured(model, layers, batch, row)
    settings = cfg.latency
    timed = metrics.paired_latency(
        reference,
        model,
        batch,
        warmup=settings.warmup,
        repeats=settings.repeats,
        max_repeats=max(settings.repeats, settings.max_repeats),
        width=settings.width,
        confidence=settings.confidence,
    )
    if timed.noisy:
        low, speedup, high = timed.speedup
        log.warning(
            "latency is noisy: speedup %.3g, between %.3g and %.3g after %d rounds (wider than "
            "latency.width=%g of it); pin the threads on an idle machine for stable figures",
            speedup,
            low,
            high,
            timed.rounds,
            settings.width,
        )
    return timed.columns()


def _semi_structured(
    model: nn.Module, layers: Mapping[str, Any], batch: torch.Tensor, row: dict[str, Any]
) -> nn.Module:
    """``model`` in fp16 with the 2:4 Linear layers among ``layers`` on semi-structured kernels
    (``torch.sparse.to_sparse_semi_structured``), or on the masks where they cannot run;
    ``compacted`` tells whether any layer does."""
    fast, converted = semi_structured(model, layers, torch.float16)
    if not converted:
        row["compact_error"] = (
            "no layer in scope is a 2:4 Linear whose size the semi-structured kernels take; "
            "latency measured on the masks in fp16"
        )
        return fast
    try:
        with torch.no_grad():
            fast.eval()(batch)
    except Exception as e:  # a kernel that refuses this batch's shape, say: keep the masks
        row["compact_error"] = f"2:4 kernels failed ({type(e).__name__}: {e})".splitlines()[0]
        log.warning("%s; latency measured on the masks in fp16", row["compact_error"])
        return _half(model)
    row["compacted"] = True
    return fast


def _half(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(torch.float16)


def _latency_batch(data: Dataset, batch_size: int) -> torch.Tensor:
    x = data.test.inputs(batch_size)
    reps = -(-batch_size // len(x))
    return x.repeat(reps, 1, 1, 1)[:batch_size] if reps > 1 else x[:batch_size]
