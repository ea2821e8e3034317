"""``search=layerwise``: one Optuna parameter per prunable layer, its amount.

AMC (He et al. 2018) and NetAdapt (Yang et al. 2018) search per-layer amounts with agents of
their own; here the layers of the composed trial are listed once, before the study starts, and
each becomes a parameter ``scope.amounts.<layer>`` of the search space, which any sampler and
any objectives (accuracy and sparsity; accuracy and latency or FLOPs with ``compact=true``) use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sweep.errors import ConfigError

__all__ = ["AMOUNTS", "amounts_text", "layer_params"]

# the prefix of the per-layer parameters; their overrides add keys (scope.amounts may be null)
AMOUNTS = "scope.amounts."
_KEYS = {"low", "high", "sensitivity"}
_WHERE = "hydra.sweeper.layerwise"


def layer_params(spec: Mapping[str, Any], trial_cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The search space entries of ``hydra.sweeper.layerwise``: ``scope.amounts.<layer>`` from
    ``low`` to ``high`` for every layer the composed trial prunes (its scope, ``dense_ends``
    and exclusions applied), bounded above by the layer's amount in a sensitivity result
    (``python -m sweep.sensitivity``'s YAML) when ``sensitivity`` names one.

    Raises:
        ConfigError: An unknown key, bounds outside [0, 1) or low > high, a sensitivity file
            that is missing, unreadable or names none of the layers.
    """
    from sweep.plan import prepare
    from sweep.pruning import plan_pruning

    spec = dict(spec)
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(f"{_WHERE} has unknown key(s) {unknown}; accepted: {sorted(_KEYS)}")
    low, high = spec.get("low", 0.0), spec.get("high", 0.95)
    for key, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ConfigError(f"{_WHERE}.{key}={value!r} is outside [0, 1); accepted: a fraction")
    if low > high:
        raise ConfigError(f"{_WHERE}.low={low} is greater than high={high}; accepted: low <= high")
    cfg = trial_cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    plan = prepare(cfg, check_store=False)
    targets = plan_pruning(plan.model, plan.method, plan.resolved["amount"], plan.scope)
    names = list(dict.fromkeys(t.name for t in targets))
    bounds = _sensitivity(spec.get("sensitivity"), names)
    return {
        f"{AMOUNTS}{name}": {"low": float(low), "high": float(min(high, bounds.get(name, high)))}
        for name in names
    }


def amounts_text(row: Mapping[str, Any]) -> str:
    """A row's per-layer amounts (``scope.amounts.<layer>``) in a table cell: each while there
    are up to three, else their count and range; "" for a row that has none.

    Example:
        >>> amounts_text({"scope.amounts.conv": 0.25, "scope.amounts.fc": 0.5, "amount": 0.0})
        'conv=0.25, fc=0.5'
        >>> amounts_text({f"scope.amounts.l{i}": i / 10 for i in range(1, 6)})
        '5 layers, 0.1 to 0.5'
    """
    amounts = {
        k.removeprefix(AMOUNTS): v
        for k, v in row.items()
        if k.startswith(AMOUNTS) and isinstance(v, int | float) and not isinstance(v, bool)
        if v == v  # a study's rows hold NaN for the layers another trial had
    }
    if len(amounts) <= 3:
        return ", ".join(f"{k}={v:.4g}" for k, v in amounts.items())
    return f"{len(amounts)} layers, {min(amounts.values()):.4g} to {max(amounts.values()):.4g}"


def _sensitivity(path: str | None, names: list[str]) -> dict[str, float]:
    """Per-layer amounts of a sensitivity result: a YAML mapping of layer names to amounts, or
    one holding it under ``scope.amounts``."""
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"{_WHERE}.sensitivity={path!r} is not a file; accepted: the YAML that "
            "python -m sweep.sensitivity writes (<store>/sensitivity/amounts.yaml)"
        )
    node = OmegaConf.to_container(OmegaConf.load(file), resolve=True)
    from sweep.hashing import dotted

    if isinstance(node, dict) and isinstance(node.get("scope"), dict):
        node = node["scope"].get("amounts")
    if not isinstance(node, dict):
        raise ConfigError(f"{_WHERE}.sensitivity={path!r} holds no mapping of layers to amounts")
    bounds = {k: v for k, v in dotted(node).items() if isinstance(v, int | float)}
    if not set(bounds) & set(names):
        raise ConfigError(
            f"{_WHERE}.sensitivity={path!r} names none of the layers in scope; layers are: "
            f"{', '.join(names)}"
        )
    return {k: float(v) for k, v in bounds.items()}
