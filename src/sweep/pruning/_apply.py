from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from sweep.errors import ConfigError
from sweep.pruning._method import PruningMethod
from sweep.pruning._nm import nm_eligible
from sweep.pruning._scope import Scope, classifier_name, weight_names
from sweep.pruning._target import Scores, Target


def prune_model(
    model: nn.Module,
    method: PruningMethod,
    amount: float | int,
    scope: Scope,
    scores: Scores | None = None,
) -> list[Target]:
    """Prune ``model`` in place with ``torch.nn.utils.prune`` and return the tensors in scope.

    Every amount and dimension is checked before the first tensor is touched, so bad input
    leaves the model as it was. Pruning a model again only removes more (PruningContainer).

    Args:
        model: The model; pruned modules get ``weight_orig`` and ``weight_mask``.
        method: What removes weights; ``method.cls is None`` prunes nothing.
        amount: Float in [0, 1): fraction of each tensor (of all of them for a global method).
            Int: that many entries, or slices along ``dim`` for a structured method; for a
            global method, that many entries of all tensors in scope together.
        scope: Which tensors, with per-layer amounts and exclusions. A global method ranks the
            tensors of each amount setting together: those of ``amount``, and those of each
            ``scope.amounts`` entry.
        scores: What the method ranks instead of the weights (`importance_scores`), passed to
            torch as ``importance_scores``; ``None``: the weights.

    Returns:
        The targets, also for ``method.cls is None`` (sparsity is measured over the same tensors).

    Example:
        >>> from torch import nn
        >>> from torch.nn.utils import prune
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> method = PruningMethod("l1_unstructured", prune.L1Unstructured)
        >>> targets = prune_model(model, method, 0.5, Scope())
        >>> sparsity(targets)
        0.5
    """
    targets = plan_pruning(model, method, amount, scope)
    if method.cls is None:
        return targets

    if method.is_global:
        for group in _by_setting(targets, scope).values():
            prune.global_unstructured(
                [(t.module, t.param) for t in group],
                pruning_method=method.cls,
                **_scored(scores),
                **method.arguments(group[0].amount),
            )
    else:
        for t in targets:
            method.cls.apply(t.module, t.param, **_scored(scores, t), **method.arguments(t.amount))
    _in_weight_layout(targets)
    _mask_attention_outputs(model)
    return targets


def _in_weight_layout(targets: list[Target]) -> None:
    """Give each mask its weight's strides. A method (a user's) may return a permuted mask;
    ``weight = weight_orig * weight_mask`` would then take the mask's layout, and the layer run
    another kernel than the dense one: a latency, and so a speedup, that the masks did not earn.
    """
    for t in targets:
        orig = getattr(t.module, f"{t.param}_orig", None)
        mask = getattr(t.module, f"{t.param}_mask", None)
        if orig is None or mask is None or mask.stride() == orig.stride():
            continue
        laid = torch.empty_like(orig, dtype=mask.dtype).copy_(mask)
        t.module._buffers[f"{t.param}_mask"] = laid
        setattr(t.module, t.param, orig * laid)  # as torch's forward hook computes it


def _scored(scores: Scores | None, t: Target | None = None) -> dict:
    """``importance_scores`` for torch: all of them (global) or the target's; none: nothing, so
    that a custom method whose ``apply`` takes no such argument still runs by magnitude."""
    if scores is None:
        return {}
    return {"importance_scores": scores if t is None else scores[(t.module, t.param)]}


def prune_toward(
    model: nn.Module,
    method: PruningMethod,
    amount: float | int,
    scope: Scope,
    sparsity: Callable[[float], float] | None = None,
    scores: Scores | None = None,
) -> list[Target]:
    """Prune more, so that each tensor in scope (each group of a global method) has
    ``sparsity(final)`` of its units pruned, ``final`` being the fraction `prune_model` with
    ``amount`` removes; ``None``: all of it, exactly the count `prune_model` removes.

    The steps of a gradual schedule. torch's repeated pruning takes a fraction of what is
    *still unpruned* (``PruningContainer``), so each call converts the cumulative target into
    that fraction of the units left; masks only grow. Units are entries, or slices along
    ``dim`` for a structured method, as ``amount`` counts them.

    Example:
        >>> from torch import nn
        >>> from torch.nn.utils import prune
        >>> model = nn.Sequential(nn.Linear(10, 10))
        >>> method = PruningMethod("l1_unstructured", prune.L1Unstructured)
        >>> _ = prune_toward(model, method, 0.9, Scope(), lambda final: final / 3)
        >>> sparsity(prune_toward(model, method, 0.9, Scope()))
        0.9
    """
    targets = plan_pruning(model, method, amount, scope)
    if method.cls is None:
        return targets
    if method.is_global:
        for group in _by_setting(targets, scope).values():
            units = sum(t.weight.numel() for t in group)
            done = sum(_pruned_units(t, method) for t in group)
            fraction = _step_fraction(group[0].amount, units, done, sparsity)
            if fraction > 0:
                prune.global_unstructured(
                    [(t.module, t.param) for t in group],
                    pruning_method=method.cls,
                    **_scored(scores),
                    **method.arguments(fraction),
                )
    else:
        for t in targets:
            fraction = _step_fraction(
                t.amount, _size(t, method), _pruned_units(t, method), sparsity
            )
            if fraction > 0:
                arguments = method.arguments(fraction)
                method.cls.apply(t.module, t.param, **_scored(scores, t), **arguments)
    _in_weight_layout(targets)
    _mask_attention_outputs(model)
    return targets


def _step_fraction(
    amount: float | int, units: int, done: int, sparsity: Callable[[float], float] | None
) -> float:
    """The fraction of the ``units - done`` units still unpruned to prune now."""
    # the count torch prunes for `amount` at once (torch.nn.utils.prune's rounding)
    final = round(amount * units) if isinstance(amount, float) else int(amount)
    goal = final if sparsity is None else min(final, round(sparsity(final / units) * units))
    if goal <= done:
        return 0.0
    return (goal - done) / (units - done)


def _pruned_units(t: Target, method: PruningMethod) -> int:
    """Units of ``t`` its mask removes already: entries, or whole slices along ``dim``."""
    mask = getattr(t.module, f"{t.param}_mask", None)
    if mask is None:
        return 0
    if not method.structured:
        return int((mask == 0).sum())
    dim = method.dim % mask.dim()
    others = [d for d in range(mask.dim()) if d != dim]
    return int((mask.sum(dim=others) == 0).sum())


def plan_pruning(
    model: nn.Module, method: PruningMethod, amount: float | int, scope: Scope
) -> list[Target]:
    """The tensors ``prune_model`` would prune, with every amount and ``dim`` checked.

    Touches nothing, so a trial can reject bad input before it trains anything.

    Raises:
        ConfigError: Nothing in scope, an amount out of range or larger than its tensor (than
            all tensors it applies to, for a global method), a structured method on a 1-D
            weight, or a ``dim`` or ``n`` the tensor does not have; the message names the value
            and what is accepted.
    """
    targets = _targets(model, method, amount, scope)
    if not targets:
        ends = " and scope.dense_ends=true (first layer and classifier)" * scope.dense_ends
        if method.nm is not None and nm_skipped(model, method, scope):
            ends += f" whose input size is a multiple of method.m={method.nm[1]}"
        raise ConfigError(
            f"no tensor in scope: model has no {' / '.join(scope.layers)} layer left after "
            f"scope.exclude={list(scope.exclude)}{ends}"
        )
    for t in targets:
        _check_structure(t, method)
        if not method.is_global:
            _check_amount(t.amount, _size(t, method), _describe(t), _label(t, scope))
    if method.is_global:
        groups = _by_setting(targets, scope)
        for label, group in groups.items():
            total = sum(t.weight.numel() for t in group)
            where = "all layers in scope" if len(groups) == 1 else "the layers it applies to"
            _check_amount(group[0].amount, total, where, label)
    return targets


def sparsity(targets: list[Target]) -> float:
    """Achieved sparsity: the fraction of entries in the targets' weights that are zero."""
    zeros = sum(int((t.weight == 0).sum()) for t in targets)
    total = sum(t.weight.numel() for t in targets)
    return zeros / total if total else 0.0


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight (``prune.remove``) so the model runs without hooks."""
    for module in model.modules():
        for name, _ in list(module.named_parameters(recurse=False)):
            if name.endswith("_orig"):
                prune.remove(module, name[: -len("_orig")])
        _remove_hook(module, _mask_out_proj)
    return model


def _targets(
    model: nn.Module, method: PruningMethod, amount: float | int, scope: Scope
) -> list[Target]:
    skip = None
    if method.structured and not scope.prune_classifier_outputs:
        skip = classifier_name(model)
    targets = []
    for name, module in scope.modules(model):
        for param in weight_names(module):
            dim = method.dim
            ndim = getattr(module, param).dim()
            if name == skip and isinstance(dim, int) and -ndim <= dim < ndim and dim % ndim == 0:
                continue  # removing output rows of the classifier removes classes
            if method.nm is not None and not nm_eligible(getattr(module, param), method.nm[1]):
                continue  # no groups of m along the input: named by `nm_skipped`
            targets.append(Target(name, module, scope.amount_for(name, module, amount), param))
    return targets


def nm_skipped(model: nn.Module, method: PruningMethod, scope: Scope) -> list[str]:
    """The tensors in scope an N:M method leaves dense: their input size is not a multiple of
    ``m`` (``layer`` or ``layer (param)``); empty for any other method."""
    if method.nm is None:
        return []
    m = method.nm[1]
    return [
        name if param == "weight" else f"{name} ({param})"
        for name, module in scope.modules(model)
        for param in weight_names(module)
        if not nm_eligible(getattr(module, param), m)
    ]


def _mask_attention_outputs(model: nn.Module) -> None:
    """Make every ``nn.MultiheadAttention`` with a pruned ``out_proj`` apply its mask.

    Attention reads ``out_proj.weight`` without calling ``out_proj``, so the pruning hook on
    ``out_proj`` never recomputes ``weight = weight_orig * weight_mask``: training would reuse
    one graph node (and backward through it twice), and ignore the updates of ``weight_orig``.
    """
    for module in model.modules():
        if (
            isinstance(module, nn.MultiheadAttention)
            and _pruning_hooks(module.out_proj)
            and not _has_hook(module, _mask_out_proj)
        ):
            module.register_forward_pre_hook(_mask_out_proj)


def _mask_out_proj(attention: nn.MultiheadAttention, args: tuple) -> None:
    # A module-level function that reaches out_proj through its argument: a deep copy of the
    # model (compaction, checkpoints) then masks its own out_proj, never the original's.
    hooks = _pruning_hooks(attention.out_proj)
    for hook in hooks:
        hook(attention.out_proj, args)
    if not hooks:  # prune.remove(out_proj, "weight") was called: nothing left to mask
        _remove_hook(attention, _mask_out_proj)


def _pruning_hooks(module: nn.Module) -> list[prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]


def _has_hook(module: nn.Module, hook: object) -> bool:
    return any(h is hook for h in module._forward_pre_hooks.values())


def _remove_hook(module: nn.Module, hook: object) -> None:
    # as prune.remove drops its own hook: by key, from the module's hook dict
    for key in [k for k, h in module._forward_pre_hooks.items() if h is hook]:
        del module._forward_pre_hooks[key]


def _by_setting(targets: list[Target], scope: Scope) -> dict[str, list[Target]]:
    # By where the amount comes from, not by its value: an int amount=100 and
    # scope.amounts={Linear: 100} are 100 entries of each, not 100 of both together.
    groups: dict[str, list[Target]] = defaultdict(list)
    for t in targets:
        groups[_label(t, scope)].append(t)
    return groups


def _label(t: Target, scope: Scope) -> str:
    key = scope.amount_key(t.name, t.module)
    return "amount" if key is None else f"scope.amounts.{key}"


def _describe(t: Target) -> str:
    return f"layer {t.name!r}" if t.param == "weight" else f"layer {t.name!r} ({t.param})"


def _size(t: Target, method: PruningMethod) -> int:
    return t.weight.shape[method.dim] if method.structured else t.weight.numel()


def _check_structure(t: Target, method: PruningMethod) -> None:
    if not method.structured:
        return
    shape = tuple(t.weight.shape)
    ndim = len(shape)
    if ndim < 2:
        raise ConfigError(
            f"method {method.name} is structured and needs weights of 2 or more dims; "
            f"{_describe(t)} has a weight of shape {shape}; accepted: scope.layers whose "
            "weights have 2 or more dims (Conv2d, Linear...), or an unstructured method"
        )
    dim = method.dim
    if not isinstance(dim, int) or isinstance(dim, bool) or not -ndim <= dim < ndim:
        raise ConfigError(
            f"method.dim={dim!r} does not exist for {_describe(t)} (weight of shape "
            f"{shape}); accepted: an int from {-ndim} to {ndim - 1}"
        )
    if method.kwargs.get("n") == "nuc" and ndim != 3:
        # torch takes the nuclear norm of each slice as a matrix: 2 dims besides `dim`
        raise ConfigError(
            f"method.n='nuc' needs weights of 3 dims; {_describe(t)} has a weight of shape "
            f"{shape}; accepted: a number p >= 0, inf or 'fro'"
        )


def _check_amount(amount: object, size: int, where: str, label: str) -> None:
    accepted = "a float in [0, 1) (a fraction) or an int >= 0 (a count)"
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ConfigError(f"{label}={amount!r} is not a number; accepted: {accepted}")
    if isinstance(amount, float) and not 0.0 <= amount < 1.0:
        raise ConfigError(f"{label}={amount!r} is outside [0, 1); accepted: {accepted}")
    if isinstance(amount, int) and amount < 0:
        raise ConfigError(f"{label}={amount!r} is negative; accepted: {accepted}")
    if isinstance(amount, int) and amount > size:
        raise ConfigError(
            f"{label}={amount} is larger than {where} ({size} prunable units); "
            f"accepted: an int up to {size} or a float in [0, 1)"
        )
