"""Run composed trial configs as fused groups: each trial's row, layers and model file as
`sweep.trial.run_trial` writes them, its finetuning shared with the others of its group.

The steps before and after the finetuning are the trial's own (`sweep.trial`), run member by
member: the baseline is trained by the first member and found in the cache by the others, the
dataset is built once for all.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from omegaconf import DictConfig

from sweep import devices, trial
from sweep._console import show_progress
from sweep._signals import held
from sweep.data import Dataset
from sweep.errors import TrialFailed
from sweep.fused._engine import evaluate_fused, finetune_fused
from sweep.fused._key import fusion_key
from sweep.plan import Plan, prepare
from sweep.store import RowCallback, row_id, write_trial
from sweep.training import EpochCallback, import_optimizer_modules

__all__ = ["run_fused"]

log = logging.getLogger(__name__)


def run_fused(
    cfgs: Sequence[DictConfig],
    on_epoch: Sequence[EpochCallback | None] | None = None,
    on_start: Sequence[Callable[[str], None] | None] | None = None,
    on_row: Sequence[RowCallback | None] | None = None,
) -> list[dict[str, Any]]:
    """Run the trials ``cfgs``, those with one `fusion_key` finetuned and evaluated together.

    Each trial gets its own row, per-layer rows and model file, under its own trial key, as if
    it ran alone (`sweep.trial.run_trial`); its row's ``fused`` says the size of the group it
    finetuned in (1: alone). A trial that cannot be fused runs alone, with the reason in the
    log. Every config is checked before anything is trained or written: a bad value raises
    `ConfigError` and leaves the store untouched.

    Args:
        cfgs: Composed ``conf/config.yaml`` configs.
        on_epoch: One callback per trial (or ``None``), as for `run_trial`; raising
            ``optuna.TrialPruned`` stops that trial only.
        on_start: One callback per trial (or ``None``), as for `run_trial`: each receives its
            trial's key once every config is checked.
        on_row: One callback per trial (or ``None``), as for `run_trial`: each receives its
            trial's row and per-layer rows just before they are written.

    Returns:
        The rows as written, in the order of ``cfgs``.

    Example:
        >>> from hydra import compose, initialize_config_module
        >>> with initialize_config_module("sweep.conf", version_base="1.3"):  # doctest: +SKIP
        ...     rows = run_fused([compose("config", [f"amount={a}"]) for a in (0.3, 0.5, 0.7)])
        >>> [row["fused"] for row in rows]  # doctest: +SKIP
        [3, 3, 3]
    """
    callbacks = list(on_epoch) if on_epoch is not None else [None] * len(cfgs)
    writing = list(on_row) if on_row is not None else [None] * len(cfgs)
    datasets: dict[str, Dataset] = {}  # each dataset built once for all the groups
    plans = [prepare(cfg, datasets=datasets) for cfg in cfgs]  # all checked first
    for plan, started in zip(plans, on_start or [None] * len(cfgs), strict=True):
        if started is not None:
            started(plan.key)
    groups: dict[str, list[int]] = {}
    alone: list[int] = []
    for i, plan in enumerate(plans):
        key, reason = fusion_key(plan.resolved)  # with a checkpoint's (data's) digest
        if key is None:
            log.info("trial %s runs alone: %s", plan.key, reason)
            alone.append(i)
        else:
            groups.setdefault(key, []).append(i)
    rows: list[dict[str, Any]] = [{}] * len(cfgs)
    for members in groups.values():
        if len(members) == 1:
            alone.append(members[0])
            continue
        done = _run_group([_Member(cfgs[i], plans[i], callbacks[i], writing[i]) for i in members])
        for i, row in zip(members, done, strict=True):
            rows[i] = row
    for i in sorted(alone):
        # its key was recorded above
        rows[i] = trial.run_trial(cfgs[i], callbacks[i], on_row=writing[i])
    return rows


class _Member:
    """One trial of a group, from its plan to its row."""

    def __init__(
        self,
        cfg: DictConfig,
        plan: Plan,
        on_epoch: EpochCallback | None,
        on_row: RowCallback | None = None,
    ) -> None:
        self.cfg, self.plan, self.on_epoch, self.on_row = cfg, plan, on_epoch, on_row
        c = cfg.optuna
        self.rid = row_id(plan.key, c.study, c.trial, c.uid)
        self.row: dict[str, Any] = {}
        self.layers: list[dict[str, Any]] = []
        self.pruned: trial._Pruned | None = None


def _run_group(members: Sequence[_Member]) -> list[dict[str, Any]]:
    """Each member loaded and pruned as alone; one batched finetuning and test evaluation of
    those that got there; each member measured, kept and written as alone."""
    if members[0].cfg.finetune.epochs > 0:  # the group's key: every member's epochs
        import_optimizer_modules()
    started_at = dt.datetime.now(dt.timezone.utc)
    start = time.perf_counter()
    todo = []
    shared = None
    first: dict[str, _Member] = {}  # a trial twice in a group (amount=0.3,0.3; method none at
    repeats: list[tuple[_Member, _Member]] = []  # every amount) runs once, as one row
    for m in members:
        if m.rid in first:
            repeats.append((m, first[m.rid]))
            continue
        first[m.rid] = m
        done = trial._completed(m.cfg, m.plan, m.rid)
        if done is not None:
            m.row = done
            continue
        m.row = trial._new_row(m.cfg, m.plan, started_at)
        m.pruned = trial._or_failed(
            m.plan, m.row, lambda m=m: trial._until_finetune(m.cfg, m.plan, m.row)
        )
        if m.pruned is not None and shared is not None:
            m.pruned.data = shared  # one device copy (the key fixes data, device and layout)
        elif m.pruned is not None:
            shared = m.pruned.data
        todo.append(m)
    live = [m for m in todo if m.pruned is not None]
    alone = _finetune_together(live) if len(live) > 1 else live
    _finetune_alone(alone)
    for m in todo:
        m.row["fused"] = len(live) if m in live and m not in alone else 1
        m.row["time_total_s"] = (time.perf_counter() - start) / len(todo)
        with held():  # as `run_trial`: the study's copy and the store's, or neither
            if m.on_row is not None:
                m.on_row(m.row, m.layers)
            m.row["store_file"] = str(write_trial(m.cfg.store.path, m.row, m.layers, row_id=m.rid))
    for m, same in repeats:
        m.row = {**same.row, "store_file": "already in the store"}  # as `trial._completed`
    return [m.row for m in members]


def _finetune_together(live: Sequence[_Member]) -> list[_Member]:
    """Finetune ``live`` as one model and test them in one pass, then finish each as alone;
    return those left to finetune alone: where the batched model cannot run (an operation
    vmap cannot batch, the GPU's memory), every member but those it had stopped already (a
    trial pruner, a NaN loss), which keep that outcome."""
    first = live[0].cfg
    data = live[0].pruned.data
    t = time.perf_counter()
    devices.manual_seed(first.seed, live[0].plan.device)  # as before each finetuning alone
    try:
        outcomes = finetune_fused(
            [m.pruned.model for m in live],
            data.train,
            first.finetune,
            [m.cfg.finetune.lr for m in live],
            seed=first.seed,
            val_split=data.val,
            on_epoch=[m.on_epoch for m in live],
            progress=show_progress(first.progress),
        )
    # a member's own model changes when it stops or finishes: an error on the way (an operation
    # vmap cannot batch, the GPU's memory) leaves the others as they were pruned
    except (RuntimeError, NotImplementedError) as e:
        outcomes = getattr(e, "outcomes", [None] * len(live))  # `Unbatchable`: who had stopped
        rest = [m for m, o in zip(live, outcomes, strict=True) if o is None]
        stopped = len(live) - len(rest)
        kept = f" ({stopped} stopped before keep their outcome)" if stopped else ""
        log.warning(
            "the group of %d cannot run batched (%s); each finetunes alone%s", len(live), e, kept
        )
        for m, outcome in zip(live, outcomes, strict=True):
            if outcome is not None:
                _finish(m, outcome)
        return rest
    share = (time.perf_counter() - t) / len(live)
    finished = [m for m, o in zip(live, outcomes, strict=True) if o is None]
    models = [m.pruned.model for m in finished]
    try:
        tested = evaluate_fused(models, data.test, desc="finetuned model") if finished else []
    except (RuntimeError, NotImplementedError) as e:  # each is tested alone, as finetuned
        log.warning("the group's batched test pass failed (%s); each member is tested alone", e)
        tested = [None] * len(finished)
    results = dict(zip(map(id, finished), tested, strict=True))
    for m, outcome in zip(live, outcomes, strict=True):
        if outcome is None:
            m.row["time_finetune_s"] = share
        _finish(m, outcome if outcome is not None else results[id(m)])
    return []


def _finish(m: _Member, result: Any) -> None:
    """Fill ``m``'s row from how its batched finetuning ended: stopped by its trial pruner, a
    `TrialFailed`, or its test (accuracy, loss) (``None``: tested alone)."""
    if isinstance(result, optuna.TrialPruned):
        m.layers = trial._stopped(m.row, m.pruned, result)
        return
    if isinstance(result, TrialFailed):
        m.row.update(status="failed", error=str(result))
        return
    m.layers = (
        trial._or_failed(
            m.plan,
            m.row,
            lambda: trial._after_finetune(m.cfg, m.plan, m.row, m.pruned, m.rid, result),
        )
        or []
    )


def _finetune_alone(members: Sequence[_Member]) -> None:
    for m in members:
        m.layers = (
            trial._or_failed(
                m.plan,
                m.row,
                lambda m=m: trial._from_pruned(m.cfg, m.plan, m.row, m.pruned, m.on_epoch, m.rid),
            )
            or []
        )
