"""Training and evaluation loops: one device, batches from any `DataSplit` (in memory or
streamed), optional bf16 autocast on CUDA.

A split sharded over the ranks of a DDP trial (`sweep.data.shard`) makes them distributed: the
gradients of each step, the BatchNorm statistics of each epoch and the evaluation counts are
combined over the ranks (`sweep.distributed`), so that a step is the one of the global batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sweep import distributed
from sweep._imports import locate
from sweep.data import DataSplit, batches
from sweep.errors import ConfigError, TrialFailed

__all__ = ["SCHEDULERS", "evaluate", "make_optimizer", "make_scheduler", "optimizer_class", "train"]

SCHEDULERS = ("constant", "cosine", "step")
_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}

# Called after each epoch with (epoch, validation accuracy); may raise optuna.TrialPruned.
EpochCallback = Callable[[int, float], None]


def train(
    model: nn.Module,
    train_split: DataSplit,
    settings: Mapping[str, Any],
    *,
    seed: int,
    val_split: DataSplit | None = None,
    on_epoch: EpochCallback | None = None,
    desc: str = "train",
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    stop_at_step: int | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> float:
    """Train ``model`` in place with cross-entropy; return the mean loss of the last epoch.

    Args:
        model: Already on the device of ``train_split``; pruning masks stay applied.
        train_split: Training data, in memory or streamed; its augmentation applies.
        settings: ``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``momentum``,
            ``weight_decay``, ``amp``, ``label_smoothing`` and the learning-rate schedule
            (`make_scheduler`): a ``conf/finetune`` or ``conf/pretrain`` node.
        seed: Fixes the order of batches and their augmentation.
        val_split: Evaluated after every epoch (shown, and passed to ``on_epoch``).
        on_epoch: Receives (epoch, validation accuracy); may stop training by raising.
        desc: Progress bar label.
        progress: Show a progress bar.
        on_step: Called with the 0-based index of each optimizer step before it runs (the
            steps of a pruning schedule).
        stop_at_step: Stop before this step, mid-epoch if need be; the learning-rate schedule
            is still the one of the whole ``epochs``.
        after_epoch: Called with each finished epoch (1-based), after validation.

    Raises:
        TrialFailed: The loss is NaN or infinite at the end of an epoch, or the validation
            outputs are.
    """
    epochs, batch_size = int(settings["epochs"]), int(settings["batch_size"])
    if epochs == 0 or stop_at_step == 0:
        return float("nan")  # no step to take: no optimizer (whose first one imports torch._dynamo)
    optimizer = make_optimizer(model, settings)
    generator = torch.Generator().manual_seed(seed)
    part = getattr(train_split, "part", None)  # (rank, world size) of a DDP trial
    loss_fn = nn.CrossEntropyLoss(
        label_smoothing=float(settings.get("label_smoothing", 0.0)),
        # summed over this rank's part and divided by the global batch: the ranks' gradients
        # add up to the gradient of the global batch's mean loss
        reduction="mean" if part is None else "sum",
    )
    n = len(train_split)
    steps = math.ceil(n / batch_size)
    schedule = make_scheduler(optimizer, settings, steps)
    device = train_split.device
    autocast = _autocast(device, settings.get("amp", False))
    mean_loss = float("nan")
    last = epochs * steps if stop_at_step is None else min(stop_at_step, epochs * steps)
    step = 0
    bar = tqdm(total=last, desc=desc, unit="step", disable=not progress, leave=False)
    with bar:
        for epoch in range(1, epochs + 1):
            if step >= last:
                break
            model.train()
            total = torch.zeros((), device=device)
            seen = 0
            for x, y in batches(train_split, batch_size, shuffle=True, generator=generator):
                if step >= last:
                    break
                if on_step is not None:
                    on_step(step)
                if part is None:
                    with autocast:
                        loss = loss_fn(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    total += loss.detach() * len(y)
                    seen += len(y)
                else:
                    size = min(batch_size, n - seen)  # the global batch's
                    total += _sharded_backward(model, optimizer, loss_fn, x, y, size, autocast)
                    seen += size
                optimizer.step()
                schedule.step()
                step += 1
                bar.update()
            if part is not None:
                total = distributed.all_sum(total)
                distributed.average_batchnorm(model)  # each rank's saw its parts only
            mean_loss = total.item() / max(1, seen)
            if not math.isfinite(mean_loss):
                raise TrialFailed(f"{desc}: loss became {mean_loss} in epoch {epoch}")
            if seen < n:
                break  # stopped mid-epoch (stop_at_step): not an epoch to report
            postfix = {"epoch": epoch, "loss": f"{mean_loss:.4f}"}
            if val_split is not None:
                acc, _ = evaluate(model, val_split, desc=f"{desc} validation")
                postfix["val_acc"] = f"{acc:.4f}"
            bar.set_postfix(postfix)
            if on_epoch is not None and val_split is not None:
                on_epoch(epoch, acc)
            if after_epoch is not None:
                after_epoch(epoch)
    return mean_loss


@torch.no_grad()
def evaluate(
    model: nn.Module, split: DataSplit, batch_size: int = 1024, *, desc: str = "model"
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``split``, in eval mode.

    Args:
        model: On the device of ``split``.
        split: The data to evaluate on.
        batch_size: Examples per forward pass.
        desc: The stage, named in the error (``dense model``, ``pruned model``).

    Returns:
        (accuracy, mean loss); both finite.

    Raises:
        TrialFailed: An output or the loss is NaN or infinite; argmax over NaN logits would
            otherwise pass for an accuracy.
    """
    model.eval()
    device = split.device
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), device=device)
    nan = torch.zeros((), dtype=torch.bool, device=device)
    inf = torch.zeros((), dtype=torch.bool, device=device)
    for x, y in batches(split, batch_size):
        if not len(y):
            continue  # a rank's empty part of the last batch (DDP)
        logits = model(x).float()
        # flags stay on the device: one synchronisation at the end, not one per batch
        nan |= logits.isnan().any()
        inf |= logits.isinf().any()
        correct += (logits.argmax(1) == y).sum()
        loss += nn.functional.cross_entropy(logits, y, reduction="sum")
    if getattr(split, "part", None) is not None:  # each rank counted its parts: add them up
        totals = distributed.all_sum(torch.stack([correct, loss, nan, inf]).double())
        correct, loss, nan, inf = totals[0].long(), totals[1], totals[2] > 0, totals[3] > 0
    if nan.item() or inf.item():
        raise TrialFailed(f"{desc}: outputs are not finite ({'nan' if nan.item() else 'inf'})")
    n = len(split)
    mean_loss = loss.item() / n
    if not math.isfinite(mean_loss):
        raise TrialFailed(f"{desc}: loss is not finite ({mean_loss})")
    return correct.item() / n, mean_loss


def _sharded_backward(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    size: int,
    autocast: Any,
) -> torch.Tensor:
    """Gradients of this rank's part of a global batch of ``size`` examples, summed over the
    ranks; return the part's summed loss."""
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=y.device)
    if len(y):  # a rank's part of the last batch may be empty; it still adds its nothing
        with autocast:
            loss = loss_fn(model(x), y)
        (loss / size).backward()
        total = loss.detach().float()
    distributed.sum_gradients([p for p in model.parameters() if p.requires_grad])
    return total


@functools.cache
def import_optimizer_modules() -> None:
    """Build and drop a throwaway optimizer, once per process, before a trial's clocks start.

    torch.optim's first optimizer imports ``torch._dynamo`` (its methods are wrapped by
    ``torch._disable_dynamo``, which imports it on the first call): about 1.2 s on 2 CPU
    cores, which landed in the first trial's ``time_finetune_s`` and made it read 5-8x its
    neighbours'. A trial that builds no optimizer (``finetune.epochs=0``) need not call this.
    """
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def make_optimizer(
    model: nn.Module | list[dict[str, Any]], settings: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """Build the optimizer named by ``settings.optimizer`` (sgd, adam, adamw or a dotted path)
    over ``model``'s parameters, or over parameter groups (a group's own ``lr`` wins)."""
    cls = optimizer_class(settings["optimizer"])
    kwargs = {"lr": settings["lr"], "weight_decay": settings.get("weight_decay", 0.0)}
    if cls is torch.optim.SGD:
        kwargs["momentum"] = settings.get("momentum", 0.0)
    params = model.parameters() if isinstance(model, nn.Module) else model
    return cls(params, **kwargs)


def make_scheduler(
    optimizer: torch.optim.Optimizer, settings: Mapping[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of every step, as a factor of ``lr`` (stepped once per batch).

    ``warmup_epochs``: a linear ramp from ``lr / warm-up steps`` up to ``lr``; then
    ``scheduler``: ``constant``; ``cosine`` (half a cosine from ``lr`` down to 0 at the last
    step); or ``step`` (times ``step_gamma`` at each of ``step_milestones``, fractions of
    ``epochs``). The defaults (``constant``, no warm-up) keep ``lr`` throughout.
    """
    kind = settings.get("scheduler", "constant")
    if kind not in SCHEDULERS:
        raise ConfigError(f"scheduler={kind!r} is unknown; accepted: {' | '.join(SCHEDULERS)}")
    total = int(settings["epochs"]) * steps_per_epoch
    warmup = min(int(settings.get("warmup_epochs", 0)) * steps_per_epoch, total)
    gamma = float(settings.get("step_gamma", 0.1))
    milestones = [
        round(f * int(settings["epochs"])) * steps_per_epoch
        for f in settings.get("step_milestones", (0.5, 0.75))
    ]

    def factor(step: int) -> float:  # the factor for the step about to run (0-based)
        if step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            done = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * done))
        if kind == "step":
            return gamma ** sum(step >= m for m in milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_class(name: str, key: str = "optimizer") -> type[torch.optim.Optimizer]:
    """The optimizer class for ``name``; raises `ConfigError` naming ``key`` (the setting, such
    as ``finetune.optimizer``) and what is accepted."""
    if name in _OPTIMIZERS:
        return _OPTIMIZERS[name]
    try:
        cls = locate(name)
    except ImportError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(
            f"{key}={name!r} is unknown; accepted: {' | '.join(_OPTIMIZERS)} "
            "| a dotted path to a torch.optim.Optimizer subclass"
        )
    return cls


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
