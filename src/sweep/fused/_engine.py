"""Finetune and evaluate K masked copies of one architecture as one batched model.

The technique is ``torch.func``: each member's parameters and buffers are stacked along a new
leading dimension, and one template module runs under `vmap` through `functional_call`
(convolutions become grouped convolutions, Linear layers batched matrix products). Chosen over
hand-fused layers (Conv2d with ``groups=K``, Linear as ``bmm``, BatchNorm over K*C channels, as
HFTA does) because it fuses any architecture the package builds or a user brings, with batching
rules PyTorch maintains, instead of one fused twin per layer type to write and keep exact.
BatchNorm needs no special case: its running statistics are stacked per member like any buffer,
and vmap applies its in-place updates to each member's slice, as they would be alone.

A member's pruned weight is ``weight_orig * weight_mask``, the product torch.nn.utils.prune's
hook computes, so its gradient reaches ``weight_orig`` times the mask and pruned entries stay
zero. A tensor one member prunes and another does not gets an all-ones mask in the other (a
product by one is exact).

Each member's slice of each stacked parameter is also a leaf tensor of its own (a view of the
same storage) in that member's parameter group, with that member's learning rate; one
``torch.optim`` optimizer steps them all and its in-place updates land in the stacked tensors.
State, learning rate and schedule are then per member exactly as with K optimizers, with no
per-member arithmetic of our own, for any optimizer that updates each parameter from its own
gradient and state (`fusion_key` admits sgd, adam and adamw).

Every member sees the same batches in the same order (one pass over the data feeds all K): a
group shares its seed, which fixes that order for each trial alone too. Random layers (dropout)
draw one mask per batch for the whole group, the draw each member makes alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.utils import prune
from tqdm.auto import tqdm

from sweep.data import DataSplit, batches
from sweep.errors import TrialFailed
from sweep.training import EpochCallback, _autocast, make_optimizer, make_scheduler

__all__ = ["evaluate_fused", "finetune_fused"]

# Why a member stopped: its on_epoch raised optuna.TrialPruned, or training failed for it
# (a NaN or infinite loss or output). None: it trained to the end.
Outcome = optuna.TrialPruned | TrialFailed | None


class Unbatchable(RuntimeError):
    """The batched model stopped running (an operation vmap cannot batch, the GPU's memory):
    ``outcomes`` says, per member, what had stopped it before (its weights written back to its
    model) or ``None``: its model is as it was given."""

    def __init__(self, cause: BaseException, outcomes: Sequence[Outcome]) -> None:
        super().__init__(str(cause))
        self.outcomes = list(outcomes)


def finetune_fused(
    models: Sequence[nn.Module],
    train_split: DataSplit,
    settings: Any,
    lrs: Sequence[float],
    *,
    seed: int,
    val_split: DataSplit | None = None,
    on_epoch: Sequence[EpochCallback | None] | None = None,
    desc: str = "finetune",
    progress: bool = True,
) -> list[Outcome]:
    """Train ``models`` in place as one batched model, each as `sweep.training.train` would
    train it alone with learning rate ``lrs[k]``.

    Args:
        models: Masked copies of one architecture (torch.nn.utils.prune's ``weight_orig`` and
            ``weight_mask``, or none), on the device of ``train_split``.
        train_split: Training data; each member sees the same batches in the same order.
        settings: A ``conf/finetune`` node; its ``lr`` is replaced by ``lrs``.
        lrs: One learning rate per member.
        seed: Fixes the order of batches and their augmentation, as for `train`.
        val_split: Evaluated after every epoch, for ``on_epoch``.
        on_epoch: One callback per member (or ``None``), called with (epoch, validation
            accuracy); a callback raising ``optuna.TrialPruned`` stops that member only.
        desc: Progress bar label, and the stage named in a failure.
        progress: Show a progress bar.

    Returns:
        Per member, ``None`` when it trained to the end, or what stopped it: the
        ``optuna.TrialPruned`` its callback raised, or a `TrialFailed` (NaN or infinite loss or
        validation output). A stopped member keeps the weights of the epoch it stopped in.

    Raises:
        Unbatchable: The batched model could not run on (a ``RuntimeError`` or
            ``NotImplementedError`` of torch's), with what had stopped members before.

    Example:
        >>> models = [small_cnn(10, 1, 8) for _ in range(3)]  # doctest: +SKIP
        >>> finetune_fused(models, data.train, cfg.finetune, [1e-3, 3e-3, 1e-2], seed=0)
        [None, None, None]
    """
    if len(lrs) != len(models):
        raise ValueError(f"{len(lrs)} learning rates for {len(models)} models")
    callbacks = list(on_epoch) if on_epoch is not None else [None] * len(models)
    stack = _Stack(models)
    epochs, batch_size = int(settings["epochs"]), int(settings["batch_size"])
    optimizer = make_optimizer(stack.parameter_groups(lrs), settings)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(settings.get("label_smoothing", 0.0)))
    steps = math.ceil(len(train_split) / batch_size)
    schedule = make_scheduler(optimizer, settings, steps)
    device = train_split.device
    autocast = _autocast(device, settings.get("amp", False))
    outcomes: list[Outcome] = [None] * len(models)
    bar = tqdm(total=epochs * steps, desc=desc, unit="step", disable=not progress, leave=False)
    try:
        with bar:
            for epoch in range(1, epochs + 1):
                stack.train()
                total = torch.zeros(len(models), device=device)
                seen = 0
                for x, y in batches(train_split, batch_size, shuffle=True, generator=generator):
                    with autocast:
                        losses = stack.losses(x, y, loss_fn)
                    optimizer.zero_grad(set_to_none=True)
                    stack.backward(losses)
                    optimizer.step()
                    schedule.step()
                    total += losses.detach() * len(y)
                    seen += len(y)
                    bar.update()
                means = (total / max(1, seen)).tolist()
                accs = None
                if val_split is not None:
                    accs = _evaluate(stack, val_split, 1024, f"{desc} validation")
                for k, mean_loss in enumerate(means):
                    if outcomes[k] is not None:
                        continue
                    outcomes[k] = _after_epoch(k, epoch, mean_loss, accs, callbacks[k], desc)
                    if outcomes[k] is not None:
                        stack.write_back(k)  # its weights as they were when it stopped
                if all(o is not None for o in outcomes):
                    break
    except (RuntimeError, NotImplementedError) as e:
        raise Unbatchable(e, outcomes) from e
    for k, outcome in enumerate(outcomes):
        if outcome is None:
            stack.write_back(k)
    return outcomes


@torch.no_grad()
def evaluate_fused(
    models: Sequence[nn.Module], split: DataSplit, batch_size: int = 1024, *, desc: str = "model"
) -> list[tuple[float, float] | TrialFailed]:
    """Accuracy and mean cross-entropy of each of ``models`` on ``split``, in one batched pass,
    as `sweep.training.evaluate` gives them one by one.

    Returns:
        Per member, (accuracy, mean loss), or a `TrialFailed` naming ``desc`` when its outputs
        or loss are not finite.
    """
    return _evaluate(_Stack(models), split, batch_size, desc)


def _after_epoch(
    k: int,
    epoch: int,
    mean_loss: float,
    accs: list[tuple[float, float] | TrialFailed] | None,
    callback: EpochCallback | None,
    desc: str,
) -> Outcome:
    """What ends member ``k`` after ``epoch``, checked as `train` checks it alone: its loss,
    then its validation outputs, then its callback."""
    if not math.isfinite(mean_loss):
        return TrialFailed(f"{desc}: loss became {mean_loss} in epoch {epoch}")
    if accs is None:
        return None
    if isinstance(accs[k], TrialFailed):
        return accs[k]
    if callback is not None:
        try:
            callback(epoch, accs[k][0])
        except optuna.TrialPruned as e:
            return e
    return None


@torch.no_grad()
def _evaluate(
    stack: _Stack, split: DataSplit, batch_size: int, desc: str
) -> list[tuple[float, float] | TrialFailed]:
    stack.eval()
    k = stack.size
    device = split.device
    correct = torch.zeros(k, dtype=torch.long, device=device)
    loss = torch.zeros(k, device=device)
    nan = torch.zeros(k, dtype=torch.bool, device=device)
    inf = torch.zeros(k, dtype=torch.bool, device=device)
    for x, y in batches(split, batch_size):
        logits = stack.logits(x).float()  # (K, batch, classes)
        nan |= logits.isnan().flatten(1).any(1)
        inf |= logits.isinf().flatten(1).any(1)
        correct += (logits.argmax(2) == y).sum(1)
        loss += vmap(_summed_loss, in_dims=(0, None))(logits, y)
    n = len(split)
    results: list[tuple[float, float] | TrialFailed] = []
    for member_nan, member_inf, member_correct, member_loss in zip(
        nan.tolist(), inf.tolist(), correct.tolist(), loss.tolist(), strict=True
    ):
        if member_nan or member_inf:
            kind = "nan" if member_nan else "inf"
            results.append(TrialFailed(f"{desc}: outputs are not finite ({kind})"))
        elif not math.isfinite(member_loss / n):
            results.append(TrialFailed(f"{desc}: loss is not finite ({member_loss / n})"))
        else:
            results.append((member_correct / n, member_loss / n))
    return results


def _summed_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y, reduction="sum")


class _Stack:
    """K models of one architecture as stacked tensors and one template module to run them.

    ``params`` are the stacked trainable tensors by their unpruned names (``conv.weight``, not
    ``conv.weight_orig``); ``masks`` the stacked masks of the tensors any member prunes;
    ``buffers`` the other buffers (BatchNorm statistics). ``leaves[k]`` are member k's slices.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if not models:
            raise ValueError("no models to fuse")
        self.models = list(models)
        self.size = len(models)
        self.template = _unpruned(models[0])
        parts = [_parts(m) for m in models]
        reference = {n: p.shape for n, p in self.template.named_parameters()}
        for i, (names, _, _) in enumerate(parts):
            shapes = {n: p.shape for n, p in names.items()}
            if shapes != reference:
                raise ValueError(
                    f"model {i} has other parameters than model 0: not one architecture"
                )
        masked = sorted({n for _, masks, _ in parts for n in masks})
        with torch.no_grad():
            self.params = {
                n: torch.stack([p[n].detach() for p, _, _ in parts]).requires_grad_()
                for n in reference
            }
            self.masks = {
                n: torch.stack([m.get(n, torch.ones_like(p[n])) for p, m, _ in parts])
                for n in masked
            }
            self.buffers = {n: torch.stack([b[n] for _, _, b in parts]) for n in parts[0][2]}
        self.leaves = [{n: t.detach()[k] for n, t in self.params.items()} for k in range(self.size)]
        self._own = [(p, b) for p, _, b in parts]  # each member's own tensors, to write back

    def parameter_groups(self, lrs: Sequence[float]) -> list[dict[str, Any]]:
        """One optimizer parameter group per member, with its learning rate."""
        return [
            {"params": list(leaves.values()), "lr": lr}
            for leaves, lr in zip(self.leaves, lrs, strict=True)
        ]

    def train(self) -> None:
        self.template.train()

    def eval(self) -> None:
        self.template.eval()

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        """Each member's loss on the batch ``(x, y)``: shape (K,)."""

        def member_loss(params, masks, buffers):
            return loss_fn(self._call(params, masks, buffers, x), y)

        return vmap(member_loss, randomness="same")(self.params, self.masks, self.buffers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's outputs on ``x``: shape (K, batch, classes)."""

        def member_logits(params, masks, buffers):
            return self._call(params, masks, buffers, x)

        return vmap(member_logits, randomness="same")(self.params, self.masks, self.buffers)

    def backward(self, losses: torch.Tensor) -> None:
        """Gradients of each member's loss into its leaves (members share no parameter, so
        the gradient of the sum is each member's own)."""
        for t in self.params.values():
            t.grad = None
        losses.sum().backward()
        for n, t in self.params.items():
            for leaves in self.leaves:
                leaves[n].grad = None
            if t.grad is None:  # a parameter the loss does not reach
                continue
            for k, leaves in enumerate(self.leaves):
                leaves[n].grad = t.grad[k]

    @torch.no_grad()
    def write_back(self, k: int) -> None:
        """Copy member ``k``'s trained tensors into its own model."""
        params, buffers = self._own[k]
        for n, t in self.params.items():
            params[n].copy_(t[k])
        for n, t in self.buffers.items():
            buffers[n].copy_(t[k])

    def _call(self, params, masks, buffers, x):
        weights = {n: p * masks[n] if n in masks else p for n, p in params.items()}
        return functional_call(self.template, (weights, buffers), (x,))


def _parts(
    model: nn.Module,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(parameters, masks, other buffers) of ``model``, by their unpruned names."""
    buffers = dict(model.named_buffers())
    params, masks = {}, {}
    for name, p in model.named_parameters():
        base = name.removesuffix("_orig")
        if name.endswith("_orig") and f"{base}_mask" in buffers:
            params[base], masks[base] = p, buffers[f"{base}_mask"]
        else:
            params[name] = p
    mask_names = {f"{n}_mask" for n in masks}
    return params, masks, {n: b for n, b in buffers.items() if n not in mask_names}


def _unpruned(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without pruning hooks: plain ``weight`` parameters, no masks."""
    # a pruned tensor is an attribute computed by the hook, not a leaf: deepcopy refuses it
    computed = {
        id(getattr(module, hook._tensor_name)): getattr(module, hook._tensor_name).detach()
        for module in model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod) and hasattr(module, hook._tensor_name)
    }
    template = copy.deepcopy(model, memo=computed)
    for module in template.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return template
