"""Importance criteria: what a pruning method ranks entries by, measured on calibration data.

torch's methods rank the tensor they are given: the weight itself by default, or any tensor of
its shape passed as ``importance_scores`` to ``BasePruningMethod.apply`` and
``global_unstructured``. `importance_scores` measures one per tensor in scope, so every
built-in and custom method (L1 keeps the largest entries, Ln-structured the slices of largest
norm, N:M the largest of each group) ranks by the criterion instead of by magnitude.

- ``magnitude``: the weight (torch's default; no data).
- ``taylor``: the first-order Taylor estimate of the loss change when an entry is removed,
  ``|w * dL/dw|``, summed over the calibration batches (Molchanov et al. 2017, 2019).
- ``apoz``: one value per output channel, the share of its activations that are not zero
  (1 - Average Percentage of Zeros, Hu et al. 2016), on every entry of the channel. The
  activation is the output of the first ``nn.ReLU`` (or ``ReLU6``) module that runs after the
  layer with an output of the same shape (after BatchNorm, in a conv-BN-ReLU block), else the
  layer's own output through a ReLU.
- ``wanda``: ``|w| * ||x_j||``, the weight times the L2 norm of the input feature it multiplies
  over all calibration samples (and positions, for a convolution's input channel; Sun et al.
  2024, "Wanda"). Wanda compares entries within each output row; torch's layer-wise methods
  compare them over the whole tensor.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from sweep.config import shown
from sweep.errors import ConfigError
from sweep.pruning._target import Scores, Target

if TYPE_CHECKING:
    from sweep.pruning._method import PruningMethod

__all__ = ["IMPORTANCE", "Scores", "check_importance", "importance_scores"]

IMPORTANCE = ("magnitude", "taylor", "apoz", "wanda")
# Criteria measured on activations: only layers that run as modules of their own have them.
_ACTIVATION_BASED = ("apoz", "wanda")
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


def check_importance(method: PruningMethod, targets: Sequence[Target], model: nn.Module) -> None:
    """Refuse, in one line, a criterion the method or a tensor in scope cannot use.

    Raises:
        ConfigError: An unknown criterion; a random method (it ranks nothing); APoZ (one value
            per output channel) with a method that does not remove output channels; a custom
            method whose ``apply`` takes no ``importance_scores``; APoZ or Wanda on a tensor
            that is not the weight of a Linear or Conv layer that runs on its own.
    """
    criterion = method.importance
    if criterion not in IMPORTANCE:
        raise ConfigError(
            f"method.importance={shown(criterion)} is unknown; accepted: {' | '.join(IMPORTANCE)}"
        )
    if criterion == "magnitude" or method.cls is None:
        return
    if issubclass(method.cls, prune.RandomUnstructured | prune.RandomStructured):
        raise ConfigError(
            f"method.importance={criterion} but {method.name} draws at random and ranks "
            "nothing; accepted: method.importance=magnitude, or a method that ranks "
            "(l1_unstructured, ln_structured, global_unstructured, nm)"
        )
    if criterion == "apoz" and (method.is_global or method.dim != 0):
        what = "global" if method.is_global else ("unstructured" if not method.structured else "")
        what = what or f"structured along dim={method.dim}"
        raise ConfigError(
            f"method.importance=apoz scores output channels, and {method.name} is {what}; "
            "accepted: apoz with a structured method along dim=0 (ln_structured), or "
            "method.importance=magnitude | taylor | wanda"
        )
    apply = inspect.signature(method.cls.apply).parameters
    takes = "importance_scores" in apply or any(p.kind is p.VAR_KEYWORD for p in apply.values())
    if not (method.is_global or takes):
        raise ConfigError(
            f"method.importance={criterion} but {method.cls.__qualname__}.apply takes no "
            "importance_scores; accepted: method.importance=magnitude, or a method whose apply "
            "accepts importance_scores (as BasePruningMethod.apply does)"
        )
    if criterion in _ACTIVATION_BASED:
        inner = _attention_out_projections(model)
        for t in targets:
            if t.param != "weight" or not isinstance(t.module, _LAYERS) or t.module in inner:
                raise ConfigError(
                    f"method.importance={criterion} measures each layer's own inputs or "
                    f"outputs, and layer {t.name!r} ({t.param} of {type(t.module).__name__}) "
                    "does not run as a Linear or Conv module; accepted: "
                    "method.importance=magnitude | taylor, or scope.exclude it"
                )


@torch.no_grad()
def _no_grad_forward(model: nn.Module, x: torch.Tensor) -> None:
    model(x)


def importance_scores(
    model: nn.Module,
    targets: Sequence[Target],
    criterion: str,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> Scores | None:
    """The criterion's scores for every target, measured on ``batches``; ``None`` for
    ``magnitude`` (the methods then rank the weights, torch's default).

    The model runs in eval mode (BatchNorm with its running statistics, no dropout) and is
    left as it was: no parameter, gradient or mode changes. Pruned entries score 0.

    Args:
        model: The model, masks applied (a gradual schedule scores what is left).
        targets: The tensors in scope (`plan_pruning`).
        criterion: One of `IMPORTANCE`.
        batches: (inputs, labels) on the model's device; labels are used by ``taylor`` only.

    Raises:
        ValueError: ``batches`` is empty.
    """
    if criterion == "magnitude":
        return None
    was_training = model.training
    model.eval()
    try:
        if criterion == "taylor":
            scores, seen = _taylor(model, targets, batches)
        else:
            scores, seen = _from_activations(model, targets, criterion, batches)
    finally:
        model.train(was_training)
    if not seen:
        raise ValueError(f"importance {criterion}: no calibration batch")
    return scores


def _taylor(model: nn.Module, targets: Sequence[Target], batches: Iterable) -> tuple[Scores, int]:
    # the gradient with respect to the parameter torch trains (weight_orig once pruned); on the
    # entries the mask keeps, it is the gradient with respect to the weight the layer uses
    params = [getattr(t.module, f"{t.param}_orig", None) for t in targets]
    params = [p if p is not None else t.weight for p, t in zip(params, targets, strict=True)]
    pairs = list(zip(targets, params, strict=True))
    scores = {(t.module, t.param): torch.zeros_like(p) for t, p in pairs}
    seen = 0
    for x, y in batches:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        for t, g in zip(targets, grads, strict=True):
            if g is not None:
                scores[(t.module, t.param)] += (t.weight.detach() * g).abs()
        seen += 1
    return scores, seen


def _from_activations(
    model: nn.Module, targets: Sequence[Target], criterion: str, batches: Iterable
) -> tuple[Scores, int]:
    layers = {t.module for t in targets}
    sums: dict[nn.Module, torch.Tensor] = {}  # wanda: sum of x^2 per input feature
    counts: dict[nn.Module, list[torch.Tensor]] = {}  # apoz: [non-zero, total] per channel
    # apoz, where no ReLU module follows: the layer's own output through a ReLU
    own: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    waiting: dict[nn.Module, torch.Size] = {}  # apoz: layers whose activation is still to come

    def on_layer(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if criterion == "wanda":
            x = args[0].detach()
            channels = x.transpose(0, 1).flatten(1) if _is_conv(module) else x.flatten(0, -2).T
            squares = channels.float().pow(2).sum(1)
            sums[module] = sums.get(module, 0) + squares
        else:
            own[module] = _nonzero(F.relu(output.detach()), _is_conv(module))
            waiting[module] = output.shape

    def on_activation(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        for layer, shape in list(waiting.items()):
            if output.shape == shape:
                _add(counts, layer, *_nonzero(output.detach(), _is_conv(layer)))
                own.pop(layer)
                del waiting[layer]

    hooks = [m.register_forward_hook(on_layer) for m in layers]
    if criterion == "apoz":
        activations = [m for m in model.modules() if isinstance(m, _ACTIVATIONS)]
        hooks += [m.register_forward_hook(on_activation) for m in activations]
    seen = 0
    try:
        for x, _ in batches:
            _no_grad_forward(model, x)
            for layer in list(own):  # no ReLU module followed: the layer's output, rectified
                nonzero, total = own.pop(layer)
                _add(counts, layer, nonzero, total)
            waiting.clear()
            seen += 1
    finally:
        for h in hooks:
            h.remove()
    scores: Scores = {}
    for t in targets:
        w = t.weight.detach()
        if criterion == "wanda":
            scores[(t.module, t.param)] = w.abs() * _input_norms(t.module, sums[t.module], w)
        else:
            nonzero, total = counts[t.module]
            share = (nonzero / total).to(w.dtype)
            scores[(t.module, t.param)] = share.reshape(-1, *[1] * (w.dim() - 1)).expand_as(w)
    return scores, seen


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)


def _nonzero(out: torch.Tensor, conv: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel: how many of its activations are not zero, and how many there are."""
    channels = out.transpose(0, 1).flatten(1) if conv else out.flatten(0, -2).T
    nonzero = (channels != 0).sum(1).double()
    return nonzero, torch.full_like(nonzero, channels.shape[1])


def _add(store: dict, module: nn.Module, nonzero: torch.Tensor, total: torch.Tensor) -> None:
    if module in store:
        store[module][0] += nonzero
        store[module][1] += total
    else:
        store[module] = [nonzero, total]


def _input_norms(module: nn.Module, squares: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The input norm each entry of ``w`` multiplies, broadcastable to ``w``'s shape."""
    norms = squares.sqrt().to(w.dtype)
    if not _is_conv(module):
        return norms.reshape(1, -1)
    # weight [out, in / groups, *kernel]: output channel o of group g reads input channels
    # g * in_per_group ... (g + 1) * in_per_group - 1
    groups, out = module.groups, w.shape[0]
    per_group = norms.reshape(groups, -1)
    rows = per_group.repeat_interleave(out // groups, dim=0)
    return rows.reshape(out, -1, *[1] * (w.dim() - 2))


def _attention_out_projections(model: nn.Module) -> set[nn.Module]:
    # attention reads out_proj.weight without calling out_proj: its hooks never run
    return {m.out_proj for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
