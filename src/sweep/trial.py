"""One trial: build, load the dense baseline, prune, finetune, evaluate, store a row.

`run_trial` is the whole pipeline and nothing else, its steps below it in the order they run;
each step's work lives in its own module. What a trial is before it runs (`Plan`, `prepare`,
`trial_key`, `resolve_device`) is `sweep.plan`, re-exported here; its latency timing is
`sweep.latency`.
"""

from __future__ import annotations

import copy
import datetime as dt
import errno
import functools
import importlib.metadata
import itertools
import logging
import math
import platform
import reprlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import optuna
import torch
from omegaconf import DictConfig
from torch import nn

from sweep import baseline, devices, distributed, metrics, sparse
from sweep._console import IN_LOG_ONLY, show_progress
from sweep._signals import held
from sweep._version import __version__
from sweep.data import Dataset
from sweep.errors import ConfigError, TrialFailed
from sweep.export import save_model
from sweep.hashing import config_hash, key_view, mask_password
from sweep.latency import _latency, _measures_latency, _semi_structured_plan
from sweep.plan import (
    Plan,
    _facts,
    _on_device,
    _weights_identity,
    prepare,
    resolve_device,
    trial_key,
)
from sweep.pruning import (
    PruningMethod,
    Scope,
    Scores,
    compact,
    importance_scores,
    make_permanent,
    nm_skipped,
    not_compactable,
    plan_pruning,
    prune_channel_groups,
    prune_model,
    prune_toward,
    silence_dead_channels,
)
from sweep.recalibrate import recalibrate_batchnorm
from sweep.rewind import rewind
from sweep.store import RowCallback, read_row, row_id, write_trial
from sweep.training import EpochCallback, evaluate, import_optimizer_modules, train

__all__ = ["Plan", "prepare", "resolve_device", "run_trial", "trial_key"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def run_trial(
    cfg: DictConfig,
    on_epoch: EpochCallback | None = None,
    on_start: Callable[[str], None] | None = None,
    on_row: RowCallback | None = None,
) -> dict[str, Any]:
    """Run the trial described by ``cfg`` and write its row to the results store.

    Every input is checked before anything is trained or written (`prepare`): a bad value
    raises `ConfigError` and leaves the store untouched. Once the checks pass, every outcome is
    a row: ``complete``; ``pruned`` (stopped by a trial pruner); or ``failed`` with the reason
    in ``error`` (a NaN loss or output at any stage, any exception, even ``SystemExit`` from a
    user's method). Only ``KeyboardInterrupt`` ends it without a row.

    Args:
        cfg: A composed ``conf/config.yaml``.
        on_epoch: Receives (epoch, validation accuracy) after each finetuning epoch; it may
            raise ``optuna.TrialPruned`` to stop the trial.
        on_start: Receives the trial key once every input is checked, before anything runs.
        on_row: Receives the row and its per-layer rows just before they are written
            (an Optuna trial's job puts them on the trial: `sweep.search.record_row`).

    Returns:
        The row as written: metric columns plus the flattened config.

    Example:
        >>> from hydra import compose, initialize_config_module
        >>> with initialize_config_module("sweep.conf", version_base="1.3"):  # doctest: +SKIP
        ...     row = run_trial(compose("config", ["method=ln_structured", "amount=0.5"]))
    """
    if not isinstance(cfg, DictConfig):
        # plain values as they are (shortened); a row of load_results would print many lines
        plain = isinstance(cfg, dict | list | tuple | str | int | float | None)
        shown = reprlib.repr(cfg) if plain else f"<{type(cfg).__name__}>"
        raise ConfigError(
            f"cfg={shown} is not a composed config ({type(cfg).__name__}); accepted: the "
            "DictConfig of hydra.compose('config', overrides), as in run_trial's example"
        )
    if cfg.finetune.epochs > 0:
        import_optimizer_modules()  # once per process, not in the first trial's figures
    started_at = dt.datetime.now(dt.timezone.utc)
    start = time.perf_counter()
    distributed.check(cfg)
    follower = distributed.is_follower()  # a rank other than 0 of a DDP trial writes nothing
    plan = prepare(cfg, check_store=not follower)
    if on_start is not None:
        on_start(plan.key)
    rid = row_id(plan.key, cfg.optuna.study, cfg.optuna.trial, cfg.optuna.uid)
    done = None if follower else _completed(cfg, plan, rid)
    if done is not None:
        return done

    row = _new_row(cfg, plan, started_at)
    layers = _run_or_fail(cfg, plan, row, on_epoch, rid)
    row["time_total_s"] = time.perf_counter() - start
    if follower:
        return row
    with held():  # a signal between the study's copy and the store's would split them
        if on_row is not None:
            on_row(row, layers)
        row["store_file"] = str(write_trial(cfg.store.path, row, layers, row_id=rid))
    return row


def _completed(cfg: DictConfig, plan: Plan, rid: str) -> dict[str, Any] | None:
    """The trial's complete row already in the store, when it need not run again."""
    # The dense reference (method none) is the same whatever the amount: a grid runs it once.
    reuse = cfg.skip_completed or (plan.method.cls is None and cfg.optuna.study is None)
    done = read_row(cfg.store.path, rid) if reuse else None
    if done is not None and done["status"] == "complete":
        log.info("trial %s is already complete in %s; skipped", plan.key, cfg.store.path)
        return {**done, "store_file": "already in the store"}
    return None


def _run_or_fail(
    cfg: DictConfig,
    plan: Plan,
    row: dict[str, Any],
    on_epoch: EpochCallback | None,
    rid: str,
) -> list[dict[str, Any]]:
    """`_run` the trial, filling ``row``; a failure sets ``status`` and ``error`` instead.

    Returns:
        The per-layer rows; none for a failed trial.
    """
    layers = _or_failed(plan, row, lambda: _run(cfg, plan, row, on_epoch, rid))
    return [] if layers is None else layers


def _or_failed(plan: Plan, row: dict[str, Any], step: Callable[[], _T]) -> _T | None:
    """``step()``; a failure sets ``row``'s ``status`` and ``error`` and gives ``None``."""
    try:
        return step()
    except (KeyboardInterrupt, GeneratorExit):
        raise  # the user stops the run, not the trial
    # BaseException: a user's method calling sys.exit must cost one row, not the whole sweep
    except BaseException as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise  # no row can be written either: a sweep stops (`sweep.search._tell.tell`)
        if isinstance(e, TrialFailed):
            reason = str(e)
        else:
            # the traceback goes to sweep.log; the console's summary line says FAILED and why
            log.exception("trial %s failed", plan.key, extra=IN_LOG_ONLY)
            # a DDP trial whose other rank died: that rank's error, not the broken collective
            reason = distributed.rank_failure() or f"{type(e).__name__}: {e}"
        row.update(status="failed", error=reason)
        return None


def _run(
    cfg: DictConfig,
    plan: Plan,
    row: dict[str, Any],
    on_epoch: EpochCallback | None,
    rid: str,
) -> list[dict[str, Any]]:
    """Load or train the baseline, measure it, prune, finetune, measure again, keep the model
    (``store.models``) as ``models/<rid>.pt``; fill ``row``.

    Returns:
        The per-layer rows.

    Raises:
        TrialFailed: A NaN or infinite loss or output, naming the stage.
    """
    with distributed.ranks(cfg, plan.device, run_trial) as device:  # one rank: as without it
        plan = replace(plan, device=device)
        row["device"] = str(plan.device)
        return _from_pruned(cfg, plan, row, _until_finetune(cfg, plan, row), on_epoch, rid)


def _from_pruned(
    cfg: DictConfig,
    plan: Plan,
    row: dict[str, Any],
    pruned: _Pruned,
    on_epoch: EpochCallback | None,
    rid: str,
) -> list[dict[str, Any]]:
    """Finetune the pruned trial alone and finish it; fill ``row``; return its layer rows."""
    t = time.perf_counter()
    devices.manual_seed(cfg.seed, plan.device)
    try:
        _finetune(cfg, plan, pruned.model, pruned.data, on_epoch, pruned.rewind_state)
    except optuna.TrialPruned as e:
        return _stopped(row, pruned, e)
    row["time_finetune_s"] = time.perf_counter() - t
    # no epoch, no schedule, no rewinding: the model is the one measured before finetuning
    unchanged = cfg.finetune.epochs == 0 and pruned.rewind_state is None
    return _after_finetune(cfg, plan, row, pruned, rid, pruned.untrained if unchanged else None)


@dataclass
class _Pruned:
    """A trial between `_until_finetune` and `_after_finetune`: what the rest of it needs."""

    model: nn.Module
    data: Dataset
    built: nn.Module  # the model as built, before any compaction
    dense_numel: dict[str, int]
    amounts: dict[str, Any]  # the layers in scope, each with its amount
    example: torch.Tensor
    reference: nn.Module | None  # the dense model, timed against the result (`_latency`)
    semi: bool
    rewind_state: dict[str, torch.Tensor] | None
    # the test (accuracy, loss) of `model` as it enters finetuning; None when the columns
    # before finetuning were measured on a copy (a schedule prunes during finetuning)
    untrained: tuple[float, float] | None = None


def _until_finetune(cfg: DictConfig, plan: Plan, row: dict[str, Any]) -> _Pruned:
    """Load or train the baseline, measure it, prune, recalibrate a probe; fill ``row``."""
    data = _on_device(plan.data, plan.device, bool(cfg.get("channels_last")))
    model = plan.model.to(plan.device)
    if distributed.is_follower():
        dense = {"key": None, "trained": False, "rewind_state": None}
    else:  # rank 0 alone trains or loads the baseline, and the others get it from rank 0
        dense = _load_baseline(cfg, plan, model, data)
    dense["rewind_state"] = distributed.share_baseline(model, dense.get("rewind_state"))
    row["baseline_key"], row["baseline_trained"] = dense["key"], dense["trained"]
    data = distributed.shard(data)  # from here on, each rank reads its part of every batch
    example = data.test.inputs(1)
    row.update(_dense_columns(cfg, plan, model, data, example, dense["key"]))
    # the dense model, timed against the pruned one at the end, in the same moments
    timed = _measures_latency(cfg) and not distributed.is_follower()
    reference = copy.deepcopy(model) if timed else None

    dense_numel = metrics.weight_numels(model)
    row["compacted"], row["compact_error"] = False, None
    semi = _semi_structured_plan(cfg, plan, row)
    if row["skipped_layers"]:
        log.warning(
            "%s leaves dense the layers whose input size is not a multiple of method.m=%d: %s",
            plan.method.name,
            plan.method.nm[1],
            row["skipped_layers"],
        )
    t = time.perf_counter()
    # random methods draw the same masks however the baseline came
    devices.manual_seed(cfg.seed, plan.device)
    built = model  # a compacted model's files record how it differs from the built one
    amount = plan.resolved["amount"]
    if plan.schedule.one_shot:
        scores = _importance(cfg, plan, model, data)
        model, targets = _prune(model, plan.method, plan.scope, cfg, example, row, scores)
        distributed.sync(model)  # rank 0's masks on every rank
        probe = model
    else:
        # the schedule prunes during finetuning; the columns before it describe the baseline
        # pruned to `amount` at once, as for one-shot (the same number for every schedule)
        probe = copy.deepcopy(model)
        prune_model(probe, plan.method, amount, plan.scope, _importance(cfg, plan, probe, data))
        distributed.sync(probe)
        targets = plan_pruning(model, plan.method, amount, plan.scope)
    amounts = {t.name: t.amount for t in targets}  # the layers in scope, each with its amount
    row["time_prune_s"] = time.perf_counter() - t
    measured = evaluate(probe, data.test, desc="pruned model")
    row["acc_pruned"] = measured[0]
    row["recalibrated"] = recalibrate_batchnorm(
        probe, data.train, cfg.recalibrate.batches, cfg.finetune.batch_size, seed=cfg.seed
    )
    if row["recalibrated"]:  # else no BatchNorm, or recalibrate.batches=0: nothing was done
        measured = evaluate(probe, data.test, desc="recalibrated model")
    row["acc_recalibrated"] = measured[0]
    untrained = measured if probe is model else None
    del probe
    return _Pruned(
        model,
        data,
        built,
        dense_numel,
        amounts,
        example,
        reference,
        semi,
        dense.get("rewind_state"),
        untrained,
    )


# The dense model's columns, by what decides them: the baseline's weights (their file as it is
# now), the data, the device and layout. A sweep's trials share them; one entry is kept, as for
# the datasets (`sweep.plan`).
_DENSE: dict[tuple, dict[str, Any]] = {}


def _dense_columns(
    cfg: DictConfig,
    plan: Plan,
    model: nn.Module,
    data: Dataset,
    example: torch.Tensor,
    baseline_key: str,
) -> dict[str, Any]:
    """``acc_dense``, ``flops_dense`` and ``size_bytes_dense`` of the baseline in ``model``,
    measured once per baseline, data and device in this process; every time in a trial over
    several ranks, whose evaluation is a collective all of them take part in."""
    if distributed.world_size(cfg) > 1:
        columns = _measure_dense(model, data, example)
    else:
        key = (
            _weights_stamp(cfg, plan, baseline_key),
            config_hash(plan.resolved["dataset"]),  # the content's fingerprint included
            str(plan.device),
            bool(cfg.get("channels_last")),
        )
        if key not in _DENSE:
            _DENSE.clear()
            _DENSE[key] = _measure_dense(model, data, example)
            _warn_if_untrained(cfg, plan, model, data, _DENSE[key]["acc_dense"])
        columns = dict(_DENSE[key])
    model.eval()  # as measuring leaves it: what follows (importance scores) runs in eval mode
    return columns


def _measure_dense(model: nn.Module, data: Dataset, example: torch.Tensor) -> dict[str, Any]:
    # accuracy first: it fails on NaN outputs, which FLOPs would count happily
    acc, _ = evaluate(model, data.test, desc="dense model")
    return {
        "acc_dense": acc,
        "flops_dense": metrics.count_flops(model, example),
        "size_bytes_dense": sparse.dense_size(model.state_dict()),
    }


def _warn_if_untrained(
    cfg: DictConfig, plan: Plan, model: nn.Module, data: Dataset, acc: float
) -> None:
    """Say so once when the dense baseline is no better than guessing: every trial pruned
    from it compares chance with chance. The bar: a tenth of the way from chance to 100%."""
    chance = 1 / data.num_classes
    bar = chance + (1 - chance) / 10
    if acc > bar:
        return
    given = plan.resolved["model"].get("checkpoint")
    if given:
        hint = "Check that model.checkpoint holds weights for this model and dataset"
    else:
        longer = f"Train it longer (pretrain.epochs={plan.resolved['pretrain']['epochs']} now)"
        hint = f"{longer} or give it weights (model.checkpoint=...)"
    # BatchNorm whose running statistics lag the weights (MobileNetV3's momentum is 0.01)
    # reads as chance in eval mode though the model learnt: recomputing them tells
    fresh = copy.deepcopy(model)
    batches = max(cfg.recalibrate.batches, 20)
    if recalibrate_batchnorm(fresh, data.train, batches, cfg.finetune.batch_size, seed=cfg.seed):
        try:
            recalibrated, _ = evaluate(fresh, data.test, desc="dense model, recalibrated")
        except TrialFailed:  # not finite with fresh statistics either: the hint stands
            recalibrated = 0.0
        if recalibrated > bar:
            hint = (
                f"Its BatchNorm running statistics lag its weights: recomputed over {batches} "
                f"batches, it scores {100 * recalibrated:.1f}%. "
                + ("Keep" if given else f"{longer}, or keep")
                + " recalibrate.batches > 0 and read acc_recalibrated"
            )
    log.warning(
        "the dense baseline scores %.1f%% on the test split, where guessing scores %.1f%% "
        "(%d classes): accuracies measured against it say little. %s",
        100 * acc,
        100 * chance,
        data.num_classes,
        hint,
    )


def _weights_stamp(cfg: DictConfig, plan: Plan, baseline_key: str) -> tuple:
    """The dense weights' identity: a checkpoint's key is its content's; a cached baseline
    is also its file as it is now, so that a file rewritten in place is measured again."""
    if plan.resolved["model"].get("checkpoint"):
        return (baseline_key,)
    file = baseline.weights_file(cfg.store.baselines, baseline_key)
    stat = file.stat()
    return (baseline_key, str(file.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _stopped(row: dict[str, Any], pruned: _Pruned, e: optuna.TrialPruned) -> list[dict[str, Any]]:
    """Fill ``row`` for a trial a trial pruner stopped; return its per-layer rows."""
    model, dense_numel, amounts = pruned.model, pruned.dense_numel, pruned.amounts
    row.update(status="pruned", error=str(e) or "stopped by the trial pruner")
    row["sparsity"] = metrics.removed_fraction(model, dense_numel, amounts)
    return metrics.layer_table(model, dense_numel, amounts)


def _after_finetune(
    cfg: DictConfig,
    plan: Plan,
    row: dict[str, Any],
    pruned: _Pruned,
    rid: str,
    measured: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """Fold the masks in, measure the finetuned model, keep it; fill ``row``; return its
    per-layer rows. ``measured``: its test (accuracy, loss), when already known."""
    model, data = pruned.model, pruned.data
    dense_numel, amounts = pruned.dense_numel, pruned.amounts
    example, built = pruned.example, pruned.built
    make_permanent(model)
    row["sparsity"] = metrics.removed_fraction(model, dense_numel, amounts)
    if measured is None:  # a fused group measures its members in one pass (sweep.fused)
        measured = evaluate(model, data.test, desc="finetuned model")
    row["acc_finetuned"], row["loss_finetuned"] = measured
    if distributed.is_follower():
        return []  # rank 0 measures the rest, and keeps the model
    row["params"] = metrics.count_params(model)
    row["params_nonzero"] = metrics.count_nonzero(model)
    row["flops"] = metrics.count_flops(model, example)
    if pruned.reference is not None:
        row.update(_latency(pruned.reference, model, amounts, data, cfg, row, pruned.semi))
    elif pruned.semi:
        row["compact_error"] = "the 2:4 kernels run only to time them, and latency.measure=false"
    row["size_bytes"] = sparse.sparse_size(model.state_dict())
    row["model_file"] = _keep(cfg, plan, model, built if row["compacted"] else None, rid)
    row["status"] = "complete"
    return metrics.layer_table(model, dense_numel, amounts)


def _finetune(
    cfg: DictConfig,
    plan: Plan,
    model: nn.Module,
    data: Dataset,
    on_epoch: EpochCallback | None,
    rewind_state: dict[str, torch.Tensor] | None,
) -> None:
    """Finetune ``model``, pruning it on the way as ``schedule`` says; with ``rewind``, stop
    at the final mask, rewind the survivors and train the whole finetune budget again.

    The trial pruner sees every finished epoch, numbered on across the two trainings.
    """
    steps = math.ceil(len(data.train) / cfg.finetune.batch_size) * cfg.finetune.epochs
    pending = [] if plan.schedule.one_shot else plan.schedule.events(steps)
    stop = None
    if rewind_state is not None:
        stop = pending[-1].step if pending else 0  # training after the final mask is undone

    def prune_due(step: float) -> None:
        while pending and pending[0].step <= step:
            event = pending.pop(0)
            sparsity = None if event.final else event.sparsity
            scores = _importance(cfg, plan, model, data)  # of the weights as they are now
            prune_toward(model, plan.method, plan.resolved["amount"], plan.scope, sparsity, scores)
            distributed.sync(model)

    epochs_seen = 0

    def report(epoch: int, acc: float) -> None:
        nonlocal epochs_seen
        epochs_seen += 1
        if on_epoch is not None:
            on_epoch(epochs_seen, acc)

    settings = {"seed": cfg.seed, "val_split": data.val, "progress": show_progress(cfg.progress)}
    if stop != 0:
        train(
            model,
            data.train,
            cfg.finetune,
            on_epoch=report,
            desc="finetune",
            on_step=prune_due,
            stop_at_step=stop,
            **settings,
        )
    prune_due(math.inf)  # no finetuning (epochs=0), or stopped at the final mask
    if rewind_state is not None:
        rewind(model, rewind_state)
        train(model, data.train, cfg.finetune, on_epoch=report, desc="train rewound", **settings)


def _load_baseline(cfg: DictConfig, plan: Plan, model: nn.Module, data: Dataset) -> dict[str, Any]:
    """Fill ``model`` with its cached dense baseline, training it first if there is none; with
    ``rewind``, the weights to rewind to are ``rewind_state``.

    With ``model.checkpoint`` the model already holds the user's weights (`prepare` loaded
    them): that is the baseline, keyed by the model config and the file's content.
    """
    device = plan.device
    given = plan.rewind_state
    rewind_state = None if given is None else {k: v.to(device) for k, v in given.items()}
    if plan.resolved["model"].get("checkpoint"):
        identity = _weights_identity(plan.resolved["model"])
        key = baseline.baseline_key({"model": identity})
        return {"key": key, "trained": False, "rewind_state": rewind_state}
    settings = {
        "model": key_view("model", plan.resolved["model"]),
        "dataset": key_view("dataset", plan.resolved["dataset"]),
        "seed": cfg.seed,
        "pretrain": key_view("pretrain", plan.resolved["pretrain"]),
        "device_type": plan.device.type,
    }
    epoch = None if rewind_state is not None else plan.rewind_epoch
    facts = baseline.load_or_train(
        model,
        data,
        settings,
        cfg.store.baselines,
        progress=show_progress(cfg.progress),
        rewind_epoch=epoch,
    )
    return {"rewind_state": rewind_state, **facts}


def _new_row(cfg: DictConfig, plan: Plan, started_at: dt.datetime) -> dict[str, Any]:
    """The row before anything runs: the flattened config, what the trial is, versions."""
    resolved = plan.resolved
    flat = _flatten(resolved)
    if flat["optuna.storage"]:
        flat["optuna.storage"] = mask_password(flat["optuna.storage"])
    flat["progress"] = show_progress(cfg.progress)  # whether bars were drawn: a bool column
    return {
        **flat,
        "trial_key": plan.key,
        "status": "running",
        "fused": 1,  # the size of the group it finetuned in (sweep.fused sets it)
        "world_size": distributed.world_size(cfg),  # the ranks it ran on (DDP)
        "error": None,
        "model": resolved["model"]["name"],
        "dataset": cfg.dataset.name,
        "method": plan.method.name,
        "schedule": plan.schedule.name,
        "amount": resolved["amount"],
        "skipped_layers": ", ".join(nm_skipped(plan.model, plan.method, plan.scope)) or None,
        "seed": cfg.seed,
        "device": str(plan.device),
        "gpu": torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else None,
        "started_at": started_at,
        **dict.fromkeys(metrics.LATENCY_COLUMNS),
        **_versions(),
    }


def _prune(
    model: nn.Module,
    method: PruningMethod,
    scope: Scope,
    cfg: DictConfig,
    example: torch.Tensor,
    row: dict[str, Any],
    scores: Scores | None,
) -> tuple[nn.Module, list]:
    """Mask with torch.nn.utils.prune, ranking ``scores`` when given; with ``compact``, remove
    the pruned channels for real.

    Compaction that does not apply (unstructured method, dim != 0) or fails on the graph falls
    back to the masks and says why in ``compact_error``. N:M sparsity is not compacted here:
    its 2:4 kernels run after finetuning (`sweep.latency._semi_structured`).
    """
    amount = row["amount"]  # as resolved: n/m for N:M, 0 for method none
    if not cfg.compact or method.nm is not None:  # N:M: see _semi_structured_plan
        return model, prune_model(model, method, amount, scope, scores)
    reason = not_compactable(method)
    if reason is not None:
        row["compact_error"] = reason
        return model, prune_model(model, method, amount, scope, scores)
    targets, groups, tied = prune_channel_groups(model, method, amount, scope, example, scores)
    if tied:
        row["skipped_layers"] = ", ".join(tied)
        log.warning(
            "compact=true leaves dense the layers whose channels are tied (a residual add, a "
            "layer used twice) to a layer outside the scope: %s; scope.dense_ends=false or "
            "scope.exclude brings those into the scope",
            row["skipped_layers"],
        )
    silence_dead_channels(groups)
    try:
        smaller = compact(model, groups, example)
    except Exception as e:
        row["compact_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        log.warning("compaction failed, keeping the masks: %s", row["compact_error"])
        return model, targets
    row["compacted"] = True
    return smaller, targets


def _importance(cfg: DictConfig, plan: Plan, model: nn.Module, data: Dataset) -> Scores | None:
    """The scores ``method.importance`` ranks, on ``importance.batches`` shuffled training
    batches (the same ones for every trial of a seed); ``None`` for magnitude."""
    criterion = plan.method.importance
    if criterion == "magnitude" or plan.method.cls is None:
        return None
    if distributed.is_follower():
        return None  # rank 0 scores, on the whole batches; its masks are broadcast (`sync`)
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = data.train.shard(0, 1).batches(
        cfg.finetune.batch_size, shuffle=True, generator=generator
    )
    calibration = itertools.islice(batches, cfg.importance.batches)
    targets = plan_pruning(model, plan.method, plan.resolved["amount"], plan.scope)
    return importance_scores(model, targets, criterion, calibration)


def _keep(
    cfg: DictConfig, plan: Plan, model: nn.Module, built: nn.Module | None, rid: str
) -> str | None:
    """Write the final model to ``<store>/models/<rid>.pt`` as ``store.models`` says; return
    its path relative to the store (the row's ``model_file``), or ``None``."""
    if cfg.store.models == "none":
        return None
    relative = f"models/{rid}.pt"
    save_model(
        Path(cfg.store.path).expanduser() / relative,
        model,
        spec=plan.resolved["model"],
        inputs=_facts(plan.data),
        reference=built,
        packed=cfg.store.models == "sparse",
        trial_key=plan.key,
    )
    return relative


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            flat.update(_flatten(v, f"{name}."))
        else:
            flat[name] = v
    return flat


@functools.cache
def _versions() -> dict[str, str]:
    """What decides whether a rerun reproduces a row bit for bit: library versions, and the
    instruction set torch's CPU kernels were dispatched for (AVX2 and AVX-512 round apart)."""
    return {
        "version.sweep": __version__,
        "version.torch": torch.__version__,
        "version.torchvision": importlib.metadata.version("torchvision"),
        "version.numpy": np.__version__,
        "version.optuna": optuna.__version__,
        "version.python": platform.python_version(),
        "version.cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
