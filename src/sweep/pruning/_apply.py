from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from sweep.errors import ConfigError
from sweep.pruning._method import PruningMethod
from sweep.pruning._scope import Scope, classifier_name


@dataclass(frozen=True)
class Target:
    """One tensor in scope: the ``weight`` of module ``name``, pruned by ``amount``."""

    name: str
    module: nn.Module
    amount: float | int

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight


def prune_model(
    model: nn.Module, method: PruningMethod, amount: float | int, scope: Scope
) -> list[Target]:
    """Prune ``model`` in place with ``torch.nn.utils.prune`` and return the tensors in scope.

    Every amount and dimension is checked before the first tensor is touched, so bad input
    leaves the model as it was. Pruning a model again only removes more (PruningContainer).

    Args:
        model: The model; pruned modules get ``weight_orig`` and ``weight_mask``.
        method: What removes weights; ``method.cls is None`` prunes nothing.
        amount: Float in [0, 1): fraction of each tensor (of all of them for a global method).
            Int: that many entries, or slices along ``dim`` for a structured method.
        scope: Which tensors, with per-type amounts and exclusions.

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
        # Tensors that share an amount are ranked together (all of them, unless
        # scope.amounts gives types their own).
        for group_amount, group in _by_amount(targets).items():
            prune.global_unstructured(
                [(t.module, "weight") for t in group],
                pruning_method=method.cls,
                **method.arguments(group_amount),
            )
    else:
        for t in targets:
            method.cls.apply(t.module, "weight", **method.arguments(t.amount))
    return targets


def plan_pruning(
    model: nn.Module, method: PruningMethod, amount: float | int, scope: Scope
) -> list[Target]:
    """The tensors ``prune_model`` would prune, with every amount and ``dim`` checked.

    Touches nothing, so a trial can reject bad input before it trains anything.

    Raises:
        ConfigError: Nothing in scope, an amount out of range or larger than its tensor, or a
            ``dim`` the tensor does not have; the message names the value and what is accepted.
    """
    targets = _targets(model, method, amount, scope)
    if not targets:
        raise ConfigError(
            f"no tensor in scope: model has no {' / '.join(scope.layers)} layer left after "
            f"exclusions {list(scope.exclude)}"
        )
    for t in targets:
        _check_dim(t, method)
        _check_amount(t.amount, _size(t, method), f"layer {t.name!r}", _label(t, scope))
    if method.is_global:
        for group_amount, group in _by_amount(targets).items():
            total = sum(t.weight.numel() for t in group)
            _check_amount(group_amount, total, "all layers in scope", "amount")
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
    return model


def _targets(
    model: nn.Module, method: PruningMethod, amount: float | int, scope: Scope
) -> list[Target]:
    skip = None
    if method.structured and not scope.prune_classifier_outputs:
        skip = classifier_name(model)
    targets = []
    for name, module in scope.modules(model):
        dim = method.dim
        ndim = module.weight.dim()
        if name == skip and isinstance(dim, int) and -ndim <= dim < ndim and dim % ndim == 0:
            continue  # removing output rows of the classifier removes classes
        targets.append(Target(name, module, scope.amount_for(module, amount)))
    return targets


def _by_amount(targets: list[Target]) -> dict[float | int, list[Target]]:
    groups: dict[float | int, list[Target]] = defaultdict(list)
    for t in targets:
        groups[t.amount].append(t)
    return groups


def _label(t: Target, scope: Scope) -> str:
    for type_name, module_type in scope.types().items():
        if type_name in scope.amounts and isinstance(t.module, module_type):
            return f"scope.amounts.{type_name}"
    return "amount"


def _size(t: Target, method: PruningMethod) -> int:
    return t.weight.shape[method.dim] if method.structured else t.weight.numel()


def _check_dim(t: Target, method: PruningMethod) -> None:
    if not method.structured:
        return
    dim, ndim = method.dim, t.weight.dim()
    if not isinstance(dim, int) or isinstance(dim, bool) or not -ndim <= dim < ndim:
        raise ConfigError(
            f"method.dim={dim!r} does not exist for layer {t.name!r} (weight of shape "
            f"{tuple(t.weight.shape)}); accepted: an int from {-ndim} to {ndim - 1}"
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
