from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweep._imports import locate
from sweep.errors import ConfigError


@dataclass(frozen=True)
class Scope:
    """Which tensors a pruning method touches, and with which amount.

    Only the ``weight`` of modules whose type is in ``layers`` is pruned.

    Args:
        layers: Module type names from ``torch.nn`` (``Conv2d``, ``Linear``) or dotted paths.
        amounts: Per-type amounts that override the trial's ``amount`` for that type.
        exclude: ``fnmatch`` patterns of module names left dense (``features.0``, ``layer4.*``).
        prune_classifier_outputs: Let structured methods along dim 0 remove the classifier's
            output rows (that removes classes, so it is off by default).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10))
        >>> [name for name, _ in Scope(layers=("Conv2d",)).modules(model)]
        ['0']
    """

    layers: Sequence[str] = ("Conv2d", "Linear")
    amounts: Mapping[str, float | int] = field(default_factory=dict)
    exclude: Sequence[str] = ()
    prune_classifier_outputs: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.amounts) - set(self.layers))
        if unknown:
            raise ConfigError(
                f"scope.amounts names {', '.join(unknown)}, not in scope.layers "
                f"{list(self.layers)}; accepted: a subset of scope.layers"
            )
        self.types()  # fail on an unknown layer type now, not mid-trial

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> Scope:
        node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        return cls(
            layers=tuple(node.get("layers", cls.layers)),
            amounts=dict(node.get("amounts") or {}),
            exclude=tuple(node.get("exclude") or ()),
            prune_classifier_outputs=bool(node.get("prune_classifier_outputs", False)),
        )

    def types(self) -> dict[str, type[nn.Module]]:
        return {name: _module_type(name) for name in self.layers}

    def modules(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """Modules of the scoped types with a ``weight``, in registration order, none excluded."""
        types = tuple(self.types().values())
        found = [
            (name, m)
            for name, m in model.named_modules()
            if isinstance(m, types) and _has_weight(m)
        ]
        for pattern in self.exclude:
            if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in found):
                raise ConfigError(
                    f"scope.exclude pattern {pattern!r} matches no layer in scope; "
                    f"layers are: {', '.join(name for name, _ in found)}"
                )
        return [
            (name, m)
            for name, m in found
            if not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)
        ]

    def amount_for(self, module: nn.Module, default: float | int) -> float | int:
        for type_name, module_type in self.types().items():
            if type_name in self.amounts and isinstance(module, module_type):
                return self.amounts[type_name]
        return default


def classifier_name(model: nn.Module) -> str | None:
    """The last Linear or Conv layer registered: the one that produces the logits."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            last = name
    return last


def _has_weight(m: nn.Module) -> bool:
    # once pruned, the parameter is `weight_orig` and `weight` a plain tensor
    return hasattr(m, "weight_orig") or isinstance(getattr(m, "weight", None), nn.Parameter)


def _module_type(name: str) -> type[nn.Module]:
    candidate = getattr(nn, name, None) if "." not in name else None
    if candidate is None and "." in name:
        try:
            candidate = locate(name)
        except ImportError:
            candidate = None
    if not (isinstance(candidate, type) and issubclass(candidate, nn.Module)):
        raise ConfigError(
            f"scope.layers entry {name!r} is not a module type; accepted: torch.nn names "
            "such as Conv2d, Linear, Conv1d, or a dotted path to an nn.Module subclass"
        )
    return candidate
