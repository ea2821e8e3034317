"""One trial: build, load the dense baseline, prune, finetune, evaluate, store a row.

`run_trial` is the whole pipeline and nothing else; each step lives in its own module.
"""

from __future__ import annotations

import copy
import datetime as dt
import errno
import importlib.metadata
import itertools
import logging
import math
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import optuna
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweep import baseline, config, metrics, sparse, weights
from sweep._build import BUILD_FACTS, build_model, call_target
from sweep._console import IN_LOG_ONLY, show_progress
from sweep._version import __version__
from sweep.data import Dataset, DataSplit, Split
from sweep.errors import ConfigError, TrialFailed
from sweep.export import save_model
from sweep.hashing import NOT_IN_KEY, config_hash, key_view, mask_password
from sweep.pruning import (
    PruningMethod,
    Schedule,
    Scope,
    Scores,
    check_importance,
    compact,
    importance_scores,
    make_permanent,
    nm_skipped,
    not_compactable,
    plan_pruning,
    prune_channel_groups,
    prune_model,
    prune_toward,
    semi_structured,
    semi_structured_unavailable,
    silence_dead_channels,
)
from sweep.recalibrate import recalibrate_batchnorm
from sweep.rewind import parse_rewind, rewind
from sweep.store import check_writable, read_row, row_id, write_trial
from sweep.training import EpochCallback, evaluate, optimizer_class, train

__all__ = ["Plan", "prepare", "resolve_device", "run_trial", "trial_key"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# The last dataset this process built in a multirun, by the hash of its config, and its copy
# on the last device: the jobs of a sweep (run one after another in its worker's process) share
# them. Datasets are never changed in place (splits are replaced, not written to). A single run
# (the command line, a notebook) builds its dataset afresh: its files may have changed.
_LAST_DATASET: dict[str, Dataset] = {}
_ON_DEVICE: dict[str, tuple[Dataset, tuple[torch.device, bool], Dataset]] = {}


def run_trial(cfg: DictConfig, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
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

    Returns:
        The row as written: metric columns plus the flattened config.

    Example:
        >>> from hydra import compose, initialize_config_module
        >>> with initialize_config_module("sweep.conf", version_base="1.3"):  # doctest: +SKIP
        ...     row = run_trial(compose("config", ["method=ln_structured", "amount=0.5"]))
    """
    if not isinstance(cfg, DictConfig):
        raise ConfigError(
            f"cfg={cfg!r} is not a composed config ({type(cfg).__name__}); accepted: the "
            "DictConfig of hydra.compose('config', overrides), as in run_trial's example"
        )
    started_at = dt.datetime.now(dt.timezone.utc)
    start = time.perf_counter()
    plan = prepare(cfg)
    rid = row_id(plan.key, cfg.optuna.study, cfg.optuna.trial, cfg.optuna.uid)
    done = _completed(cfg, plan, rid)
    if done is not None:
        return done

    row = _new_row(cfg, plan, started_at)
    layers = _run_or_fail(cfg, plan, row, on_epoch, rid)
    row["time_total_s"] = time.perf_counter() - start
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
            raise  # no row can be written either: a sweep stops (`sweep.search._sweeper.tell`)
        if isinstance(e, TrialFailed):
            reason = str(e)
        else:
            # the traceback goes to sweep.log; the console's summary line says FAILED and why
            log.exception("trial %s failed", plan.key, extra=IN_LOG_ONLY)
            reason = f"{type(e).__name__}: {e}"
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
    torch.manual_seed(cfg.seed)
    try:
        _finetune(cfg, plan, pruned.model, pruned.data, on_epoch, pruned.rewind_state)
    except optuna.TrialPruned as e:
        return _stopped(row, pruned, e)
    row["time_finetune_s"] = time.perf_counter() - t
    return _after_finetune(cfg, plan, row, pruned, rid)


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


def _until_finetune(cfg: DictConfig, plan: Plan, row: dict[str, Any]) -> _Pruned:
    """Load or train the baseline, measure it, prune, recalibrate a probe; fill ``row``."""
    data = _on_device(plan.data, plan.device, bool(cfg.get("channels_last")))
    model = plan.model.to(plan.device)
    dense = _load_baseline(cfg, plan, model, data)
    row["baseline_key"], row["baseline_trained"] = dense["key"], dense["trained"]
    example = data.test.inputs(1)
    # accuracy first: it fails on NaN outputs, which FLOPs and latency would measure happily
    row["acc_dense"], _ = evaluate(model, data.test, desc="dense model")
    row["flops_dense"] = metrics.count_flops(model, example)
    # the dense model, timed against the pruned one at the end, in the same moments
    reference = copy.deepcopy(model) if _measures_latency(cfg) else None

    dense_numel = metrics.weight_numels(model)
    row["size_bytes_dense"] = sparse.dense_size(model.state_dict())
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
    torch.manual_seed(cfg.seed)  # random methods draw the same masks however the baseline came
    built = model  # a compacted model's files record how it differs from the built one
    amount = plan.resolved["amount"]
    if plan.schedule.one_shot:
        scores = _importance(cfg, plan, model, data)
        model, targets = _prune(model, plan.method, plan.scope, cfg, example, row, scores)
        probe = model
    else:
        # the schedule prunes during finetuning; the columns before it describe the baseline
        # pruned to `amount` at once, as for one-shot (the same number for every schedule)
        probe = copy.deepcopy(model)
        prune_model(probe, plan.method, amount, plan.scope, _importance(cfg, plan, probe, data))
        targets = plan_pruning(model, plan.method, amount, plan.scope)
    amounts = {t.name: t.amount for t in targets}  # the layers in scope, each with its amount
    row["time_prune_s"] = time.perf_counter() - t
    row["acc_pruned"], _ = evaluate(probe, data.test, desc="pruned model")
    row["recalibrated"] = recalibrate_batchnorm(
        probe, data.train, cfg.recalibrate.batches, cfg.finetune.batch_size, seed=cfg.seed
    )
    row["acc_recalibrated"] = (
        evaluate(probe, data.test, desc="recalibrated model")[0]
        if row["recalibrated"]
        else row["acc_pruned"]  # no BatchNorm, or recalibrate.batches=0: nothing was done
    )
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
    )


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
    its 2:4 kernels run after finetuning (`_semi_structured`).
    """
    amount = row["amount"]  # as resolved: n/m for N:M, 0 for method none
    if not cfg.compact or method.nm is not None:  # N:M: see _semi_structured_plan
        return model, prune_model(model, method, amount, scope, scores)
    reason = not_compactable(method)
    if reason is not None:
        row["compact_error"] = reason
        return model, prune_model(model, method, amount, scope, scores)
    targets, groups = prune_channel_groups(model, method, amount, scope, example, scores)
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
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = data.train.batches(cfg.finetune.batch_size, shuffle=True, generator=generator)
    calibration = itertools.islice(batches, cfg.importance.batches)
    targets = plan_pruning(model, plan.method, plan.resolved["amount"], plan.scope)
    return importance_scores(model, targets, criterion, calibration)


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


def _half(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(torch.float16)


@dataclass(frozen=True)
class Plan:
    """A trial whose every input has been checked; nothing is trained or written yet."""

    device: torch.device
    method: PruningMethod
    scope: Scope
    data: Dataset
    model: nn.Module
    resolved: dict[str, Any]
    key: str
    schedule: Schedule = field(default_factory=Schedule)
    # the pretraining epoch to rewind to (0: init), None: no rewind
    rewind_epoch: int | None = None
    # the weights to rewind to, when the user gave them (rewind_weights)
    rewind_state: dict[str, torch.Tensor] | None = None


def prepare(
    cfg: DictConfig, *, datasets: dict[str, Dataset] | None = None, check_store: bool = True
) -> Plan:
    """Check every input of the trial ``cfg`` and build what it needs, on the CPU.

    The dataset and model are built (a bad ``_target_`` or argument fails here), the pruning is
    planned against the model's tensors (amounts, ``dim``), and the store is checked writable
    last, so that bad input creates nothing.

    Args:
        cfg: A composed ``conf/config.yaml``.
        datasets: Datasets already built, by the hash of their config; filled as they are
            built (checking many variants of one grid builds each dataset once).
        check_store: Check that the store is writable (creating its folder); a caller that
            checks several configs does it once all of them passed.

    Raises:
        ConfigError: One line naming the bad value and what is accepted.
    """
    _check_complete(cfg)
    config.check_values(cfg)
    device = resolve_device(str(cfg.device))
    method = PruningMethod.from_config(cfg.method)
    scope = Scope.from_config(cfg.scope)
    schedule = Schedule.from_config(cfg.schedule)
    schedule.check_method(method)
    rewind_epoch = parse_rewind(cfg.rewind)
    _check_protocol(cfg, method, schedule, rewind_epoch)
    for stage in ("pretrain", "finetune"):
        optimizer_class(cfg[stage].optimizer)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["model"] = _model_spec(cfg.model)
    if method.cls is None:
        resolved["amount"] = 0.0  # nothing is pruned, whatever was asked
    if method.nm is not None:
        n, m = method.nm
        resolved["amount"] = n / m  # N:M prunes n of m, whatever was asked
    checkpoint = resolved["model"].get("checkpoint")
    if checkpoint:
        state = weights.read_state(checkpoint)  # first: a missing file fails before any build
        # the weights are the file's content, wherever it lies; no pretraining happens
        resolved["model"]["checkpoint_sha256"] = weights.file_digest(checkpoint)
        del resolved["pretrain"]
    rewind_file = resolved.get("rewind_weights")
    if rewind_file:
        rewind_file_state = weights.read_state(rewind_file, "rewind_weights")
        resolved["rewind_weights_sha256"] = weights.file_digest(rewind_file)
    if datasets is None:
        datasets = _LAST_DATASET if _in_multirun() else {}
    data_key = config_hash(resolved["dataset"])
    if data_key not in datasets:
        if datasets is _LAST_DATASET:
            datasets.clear()  # one dataset kept: a sweep's jobs mostly share theirs
        datasets[data_key] = _build_dataset(cfg.dataset)
    data = datasets[data_key]
    if data.fingerprint is not None:
        # what the files hold is part of the trial and of its baseline: a changed folder is a
        # new baseline and a new row, never a stale one
        resolved["dataset"]["fingerprint"] = data.fingerprint
    key = trial_key(resolved, device)
    torch.manual_seed(cfg.seed)
    model = build_model(resolved["model"], _facts(data))
    rewind_state = None
    if rewind_file:
        dense = copy.deepcopy(model)
        weights.fit(dense, rewind_file_state, rewind_file, "rewind_weights")
        rewind_state = dense.state_dict()
    if checkpoint:
        weights.fit(model, state, checkpoint)
    targets = plan_pruning(model, method, resolved["amount"], scope)  # before any training
    check_importance(method, targets, model)
    if check_store:
        check_writable(cfg.store.path)
    return Plan(
        device, method, scope, data, model, resolved, key, schedule, rewind_epoch, rewind_state
    )


def _check_protocol(
    cfg: DictConfig, method: PruningMethod, schedule: Schedule, rewind_epoch: int | None
) -> None:
    """What the schedule, rewinding, compaction and the baseline's source allow together."""
    compacting = cfg.compact and not_compactable(method) is None
    if compacting and not schedule.one_shot:
        raise ConfigError(
            f"schedule={schedule.name} with compact=true: channels are removed once, after "
            "one-shot pruning; accepted: schedule=one_shot, or compact=false"
        )
    if compacting and rewind_epoch is not None:
        raise ConfigError(
            f"rewind={cfg.rewind} with compact=true: the rewind weights have the dense model's "
            "shapes; accepted: rewind=none, or compact=false"
        )
    if cfg.rewind_weights and rewind_epoch is None:
        raise ConfigError(
            f"rewind_weights={cfg.rewind_weights!r} is set but rewind=none; accepted: "
            "rewind=init or rewind=epoch:K with rewind_weights, or rewind_weights=null"
        )
    if rewind_epoch is None or cfg.rewind_weights:
        return
    if cfg.model.get("checkpoint"):
        raise ConfigError(
            f"rewind={cfg.rewind} needs the weights from before training, and model.checkpoint "
            "gives only the trained ones; accepted: rewind_weights=/path/to/those_weights.pt, "
            "or rewind=none"
        )
    if rewind_epoch > cfg.pretrain.epochs:
        raise ConfigError(
            f"rewind={cfg.rewind} but pretraining has {cfg.pretrain.epochs} epochs; accepted: "
            f"none | init | epoch:0 to epoch:{cfg.pretrain.epochs}"
        )


def trial_key(resolved: Mapping[str, Any], device: torch.device) -> str:
    """Hash of the resolved config minus output settings, with the device type resolved.

    Settings added after stores existed count only when set (`sweep.hashing.KEYED_UNLESS`), so
    that existing trials keep their keys; loader settings never count (`HOW_NOT_WHAT`).
    """
    keyed = {k: v for k, v in resolved.items() if k not in NOT_IN_KEY and k != "device"}
    if keyed.get("method", {}).get("importance", "magnitude") == "magnitude":
        keyed.pop("importance", None)  # no calibration data is read
    if keyed.get("rewind_weights_sha256"):
        del keyed["rewind_weights"]  # the rewind weights by their content, as the checkpoint
    keyed = key_view("", keyed)
    keyed = {k: key_view(k, v) for k, v in keyed.items()}
    keyed = {k: v for k, v in keyed.items() if v != {}}  # a group all at "as before" values
    keyed["model"] = _weights_identity(keyed["model"])
    return config_hash({**keyed, "device_type": device.type})


def _weights_identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A model config as keys see it: a checkpoint by its content, not where the file lies."""
    if spec.get("checkpoint_sha256"):
        return {k: v for k, v in spec.items() if k != "checkpoint"}
    return dict(spec)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda``/``cuda:N`` only when that GPU exists."""
    accepted = "auto | cpu | cuda | cuda:N"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a device; accepted: {accepted}") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ConfigError(f"device={device!r} is not supported; accepted: {accepted}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} but no CUDA GPU is available here; accepted: auto | cpu"
        )
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={device!r} but there are {torch.cuda.device_count()} GPUs; "
            f"accepted: cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return resolved


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _on_device(data: Dataset, device: torch.device, channels_last: bool = False) -> Dataset:
    """``data.to(device)``, its in-memory images in channels_last (NHWC) memory when asked; in a
    multirun, kept for the next trial of this process on the same data and device (a sweep's
    jobs: the copy to the GPU is made once).

    Only the inputs change layout: a convolution given NHWC inputs runs NHWC kernels and hands
    NHWC on, while the weights stay as torch.nn.utils.prune needs them (its methods ``view``
    them flat, which a channels_last weight refuses).
    """
    held = _ON_DEVICE.get("last")
    if held is not None and held[0] is data and held[1] == (device, channels_last):
        return held[2]
    _ON_DEVICE.clear()  # nothing held past a single run (a notebook's GPU memory stays free)
    moved = data.to(device)
    if channels_last:
        moved = replace(
            moved, train=_nhwc(moved.train), val=_nhwc(moved.val), test=_nhwc(moved.test)
        )
    if _in_multirun():
        _ON_DEVICE["last"] = (data, (device, channels_last), moved)
    return moved


def _nhwc(split: DataSplit) -> DataSplit:
    if isinstance(split, Split) and split.x.dim() == 4:
        return replace(split, x=split.x.contiguous(memory_format=torch.channels_last))
    return split  # streamed batches keep the layout their loader gives


def _check_complete(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        example = "my_module.Name" if key.endswith("_target_") else "/path/to/data"
        raise ConfigError(f"{key} is required but not set; e.g. {key}={example}")


def _build_dataset(node: DictConfig) -> Dataset:
    spec = OmegaConf.to_container(node, resolve=True)
    return call_target(spec, "dataset", "a function or class returning a sweep.data.Dataset")


def _model_spec(node: DictConfig) -> dict[str, Any]:
    """The resolved ``model`` node; a preset whose ``_target_`` the user replaced (``model.
    _target_=my_models.Net`` on the default ``small_cnn``) drops the preset's own arguments
    that were left as they were, and is named after the new target unless the user named it
    (``model.name=mynet``)."""
    spec = OmegaConf.to_container(node, resolve=True)
    preset = _preset("model", str(spec.get("name")))
    renamed = preset is None
    if renamed:  # the user renamed it too: the preset is known by the keys it brought
        preset = _preset_of(spec)
    if preset is None or preset.get("_target_") == spec.get("_target_"):
        return spec
    kept = {k: v for k, v in spec.items() if k == "_target_" or k not in preset or preset[k] != v}
    kept["name"] = spec["name"] if renamed else str(spec["_target_"]).rsplit(".", 1)[-1]
    return kept


def _preset(group: str, name: str) -> dict[str, Any] | None:
    """The raw YAML of our config ``group/name``, or ``None`` when there is no such preset."""
    from importlib.resources import files

    file = files("sweep.conf") / group / f"{name}.yaml"
    if not file.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.create(file.read_text()), resolve=False)


def _preset_of(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model preset ``spec`` was composed from, once renamed: of the presets whose every
    argument ``spec`` holds, the one with the most arguments, then the most left as they were.
    Hydra's command line can only change or remove a preset's keys, so this is the preset."""
    from importlib.resources import files

    own = ("name", "_target_")
    candidates = []
    for file in (files("sweep.conf") / "model").iterdir():
        if not file.name.endswith(".yaml"):
            continue
        preset = _preset("model", file.name.removesuffix(".yaml"))
        args = [k for k in preset if k not in own]
        if all(k in spec for k in args):
            same = sum(spec[k] == preset[k] for k in args)
            candidates.append((len(args), same, file.name, preset))
    return max(candidates, key=lambda c: c[:3])[3] if candidates else None


def _facts(data: Dataset) -> dict[str, int]:
    return {k: getattr(data, k) for k in BUILD_FACTS}


def _keep(
    cfg: DictConfig, plan: Plan, model: nn.Module, built: nn.Module | None, rid: str
) -> str | None:
    """Write the final model to ``<store>/models/<rid>.pt`` as ``store.models`` says; return
    its path relative to the store (the row's ``model_file``), or ``None``."""
    if cfg.store.models == "none":
        return None
    relative = f"models/{rid}.pt"
    save_model(
        f"{cfg.store.path}/{relative}",
        model,
        spec=plan.resolved["model"],
        inputs=_facts(plan.data),
        reference=built,
        packed=cfg.store.models == "sparse",
        trial_key=plan.key,
    )
    return relative


def _latency_batch(data: Dataset, batch_size: int) -> torch.Tensor:
    x = data.test.inputs(batch_size)
    reps = -(-batch_size // len(x))
    return x.repeat(reps, 1, 1, 1)[:batch_size] if reps > 1 else x[:batch_size]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            flat.update(_flatten(v, f"{name}."))
        else:
            flat[name] = v
    return flat


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
