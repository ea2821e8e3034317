from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweep._imports import locate
from sweep.errors import ConfigError
from sweep.hashing import dotted


@dataclass(frozen=True)
class Scope:
    """Which tensors a pruning method touches, and with which amount.

    Only the weights of modules whose type is in ``layers`` are pruned (see `weight_names`).
    ``nn.MultiheadAttention`` projects its inputs with weights of its own, not with Linear
    modules: they are in scope with ``Linear`` (and take its per-type amount) or when
    ``MultiheadAttention`` is listed; its ``out_proj`` is a Linear.

    Args:
        layers: Module type names from ``torch.nn`` (``Conv2d``, ``Linear``) or dotted paths.
        amounts: Amounts that override the trial's ``amount``, keyed by a type of ``layers``
            (``Linear``), a layer name (``block2.conv``) or an ``fnmatch`` pattern of names
            (``layer4.*``). The most specific entry wins: the layer's own name, then the
            pattern with the most characters that are not wildcards, then its type.
        exclude: ``fnmatch`` patterns of module names left dense (``features.0``, ``layer4.*``).
        prune_classifier_outputs: Let structured methods along dim 0 remove the classifier's
            output rows (that removes classes, so it is off by default).
        dense_ends: Leave the model's first layer and its classifier (the first and the last
            Linear or Conv module registered, see `end_layers`) dense, as most pruning papers
            do: they hold few of the weights and much of the accuracy. An end layer that
            ``amounts`` names exactly (``classifier: 0.3``) is pruned as named; a type or
            pattern entry does not bring it back.

    Raises:
        ConfigError: ``layers`` empty, a string instead of a list, an unknown type, or
            ``amounts`` naming a type not in ``layers`` (a name or pattern that matches no
            layer is refused by `modules`).

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
    dense_ends: bool = False

    def __post_init__(self) -> None:
        # frozen: normalise through object.__setattr__, so a list from a config is a tuple too
        object.__setattr__(self, "layers", _strings(self.layers, "scope.layers", _LAYERS))
        object.__setattr__(self, "exclude", _strings(self.exclude, "scope.exclude", _PATTERNS))
        if not self.layers:
            raise ConfigError(f"scope.layers is empty; accepted: {_LAYERS}")
        if not isinstance(self.amounts, Mapping):
            raise ConfigError(
                f"scope.amounts={self.amounts!r} is not a mapping; accepted: amounts by "
                "layer type, name or pattern, e.g. {Conv2d: 0.2, block2.conv: 0.1}"
            )
        # scope.amounts.block2.conv=0.1 on the command line nests: {block2: {conv: 0.1}}
        object.__setattr__(self, "amounts", dotted(self.amounts))
        unknown = sorted(k for k in self.amounts if k not in self.layers and _is_nn_type(k))
        if unknown:
            raise ConfigError(
                f"scope.amounts names {', '.join(unknown)}, not in scope.layers "
                f"{list(self.layers)}; accepted: a type of scope.layers, a layer name or an "
                "fnmatch pattern of names"
            )
        self.types()  # fail on an unknown layer type now, not mid-trial

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> Scope:
        node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        return cls(
            layers=node.get("layers", cls.layers),
            amounts=node.get("amounts") or {},
            exclude=node.get("exclude") or (),
            prune_classifier_outputs=bool(node.get("prune_classifier_outputs", False)),
            dense_ends=bool(node.get("dense_ends", False)),
        )

    def types(self) -> dict[str, type[nn.Module]]:
        return {name: _module_type(name) for name in self.layers}

    def modules(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """Modules in scope that have weights to prune, in registration order, none excluded
        (neither by ``exclude`` nor by ``dense_ends``)."""
        typed = [(name, m, e) for name, m in model.named_modules() if (e := self._entries(m))]
        found = [(name, m) for name, m, _ in typed if weight_names(m)]
        for entry in self.layers:
            matched = [(n, m) for n, m, entries in typed if entry in entries]
            if matched and not any(weight_names(m) for _, m in matched):
                name, module = matched[0]
                tensors = ", ".join(n for n, _ in module.named_parameters(recurse=False))
                raise ConfigError(
                    f"scope.layers entry {entry!r} matches {name!r}, which has no tensor named "
                    f"weight to prune (its own: {tensors or 'none'}); accepted: layer types "
                    "with a weight (Conv2d, Linear...) or nn.MultiheadAttention"
                )
        # a layer named in `amounts` by its exact name is pruned as asked: the user's explicit
        # choice wins over the default of leaving the ends dense (a type or pattern does not)
        ends = [n for n in end_layers(model) if n not in self.amounts] if self.dense_ends else ()
        for setting, patterns in (
            ("scope.exclude pattern", self.exclude),
            ("scope.amounts entry", self._names()),
        ):
            for pattern in patterns:
                if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in found):
                    raise ConfigError(
                        f"{setting} {pattern!r} matches no layer in scope; "
                        f"layers are: {', '.join(name for name, _ in found)}"
                    )
        return [
            (name, m)
            for name, m in found
            if name not in ends and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)
        ]

    def amount_for(self, name: str, module: nn.Module, default: float | int) -> float | int:
        key = self.amount_key(name, module)
        return default if key is None else self.amounts[key]

    def amount_key(self, name: str, module: nn.Module) -> str | None:
        """The ``scope.amounts`` entry that sets the amount of ``module``, registered as
        ``name``: its name, else the most specific pattern, else its type; ``None``: ``amount``.

        Example:
            >>> scope = Scope(amounts={"Linear": 0.5, "fc*": 0.2, "fc2": 0.1, "f*": 0.3})
            >>> [scope.amount_key(n, nn.Linear(1, 1)) for n in ("fc2", "fc1", "out")]
            ['fc2', 'fc*', 'Linear']
        """
        names = self._names()
        if name in names:
            return name
        matching = [p for p in names if fnmatch.fnmatchcase(name, p)]
        if matching:
            return max(matching, key=lambda p: len(p) - sum(map(p.count, "*?[")))
        return next((e for e in self._entries(module) if e in self.amounts), None)

    def _names(self) -> list[str]:
        """The ``amounts`` entries that are layer names or patterns, not types."""
        return [k for k in self.amounts if k not in self.layers]

    def _entries(self, module: nn.Module) -> list[str]:
        # entries naming the module's own type come before Linear standing in for attention
        types = self.types()
        direct = [e for e, t in types.items() if isinstance(module, t)]
        if not isinstance(module, nn.MultiheadAttention):
            return direct
        as_linear = [e for e, t in types.items() if issubclass(nn.Linear, t) and e not in direct]
        return direct + as_linear


def weight_names(module: nn.Module) -> tuple[str, ...]:
    """The tensors of ``module`` a scope prunes: ``weight``, or attention's input projections.

    ``nn.MultiheadAttention`` packs the query, key and value projections into
    ``in_proj_weight``, or keeps ``q_proj_weight``, ``k_proj_weight`` and ``v_proj_weight``
    when ``kdim`` or ``vdim`` differ from ``embed_dim``.

    Example:
        >>> weight_names(nn.MultiheadAttention(8, 2)), weight_names(nn.ReLU())
        (('in_proj_weight',), ())
    """
    if isinstance(module, nn.MultiheadAttention):
        names = _PACKED if module._qkv_same_embed_dim else _SEPARATE
    else:
        names = ("weight",)
    return tuple(n for n in names if _is_parameter(module, n))


def classifier_name(model: nn.Module) -> str | None:
    """The last Linear or Conv layer registered: the one that produces the logits."""
    layers = _weighted_layers(model)
    return layers[-1] if layers else None


def end_layers(model: nn.Module) -> tuple[str, ...]:
    """The first and the last Linear or Conv layer registered: the layer that reads the input
    and the classifier (one name for a model with a single such layer).

    Example:
        >>> end_layers(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, 2)))
        ('0', '2')
    """
    layers = _weighted_layers(model)
    return tuple(dict.fromkeys(layers[:1] + layers[-1:]))


def _weighted_layers(model: nn.Module) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
    ]


_LAYERS = "torch.nn module type names such as Conv2d, Linear"
_PATTERNS = "fnmatch patterns of module names such as features.0, layer4.*"
_PACKED = ("in_proj_weight",)
_SEPARATE = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def _strings(value: object, key: str, accepted: str) -> tuple[str, ...]:
    # a string is a sequence too: iterating 'Conv2d' would look up the type 'C'
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{key}={value!r} is not a list; accepted: a list of {accepted}")
    for entry in value:
        if not isinstance(entry, str):
            raise ConfigError(f"{key} entry {entry!r} is not a string; accepted: {accepted}")
    return tuple(value)


def _is_parameter(module: nn.Module, name: str) -> bool:
    # once pruned, the parameter is `<name>_orig` and `<name>` a plain tensor
    return hasattr(module, f"{name}_orig") or isinstance(getattr(module, name, None), nn.Parameter)


def _is_nn_type(name: str) -> bool:
    return _is_module_class(getattr(nn, name, None))


def _is_module_class(candidate: object) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, nn.Module)


def _module_type(name: str) -> type[nn.Module]:
    candidate = getattr(nn, name, None) if "." not in name else None
    if candidate is None and "." in name:
        try:
            candidate = locate(name)
        except ImportError:
            candidate = None
    if not _is_module_class(candidate):
        raise ConfigError(
            f"scope.layers entry {name!r} is not a module type; accepted: torch.nn names "
            "such as Conv2d, Linear, Conv1d, or a dotted path to an nn.Module subclass"
        )
    return candidate
