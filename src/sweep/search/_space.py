from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from sweep.errors import ConfigError

_KEYS = {"choices", "low", "high", "step", "log", "when"}
# A dotted parameter set under hydra.sweeper.params on the command line, which Hydra nests.
_DOTTED = (
    "Hydra reads the dots of {param} as nesting; accepted: {param}=interval(low,high) or "
    "{param}=choice(a,b) on the command line, or '{param}': {{low: ..., high: ...}} under "
    "hydra.sweeper.params in a config file"
)


@dataclass(frozen=True)
class Param:
    """One search dimension: a config key and the values Optuna may give it.

    ``choices`` makes it categorical; otherwise ``low``/``high`` (ints: integer, floats: float),
    with an optional ``step`` or ``log``. ``when`` makes it conditional: it is sampled only when
    every named earlier param has one of the listed values (``{method: [ln_structured]}``).
    """

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        return "int" if ints and (self.step is None or isinstance(self.step, int)) else "float"

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when.items())

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None:
            raise ConfigError(
                f"hydra.sweeper.params.{self.name} has no step; the grid sampler accepts "
                "choices or low/high with a step"
            )
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


@dataclass(frozen=True)
class SearchSpace:
    """An ordered, possibly conditional search space over config keys.

    Example:
        >>> space = SearchSpace.from_config({
        ...     "method": {"choices": ["l1_unstructured", "ln_structured"]},
        ...     "amount": {"low": 0.1, "high": 0.9},
        ...     "method.n": {"choices": [1, 2], "when": {"method": "ln_structured"}},
        ... })
        >>> [p.kind for p in space.params]
        ['categorical', 'float', 'categorical']
    """

    params: tuple[Param, ...]

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> SearchSpace:
        """Build and check the ``hydra.sweeper.params`` mapping; raises `ConfigError`."""
        params: list[Param] = []
        for name, spec in (node or {}).items():
            params.append(_param(str(name), spec or {}, [p.name for p in params]))
        if not params:
            raise ConfigError(
                "hydra.sweeper.params is empty; accepted: a mapping of config keys to "
                "{choices: [...]} or {low: ..., high: ...}"
            )
        return cls(tuple(params))

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for every active param, in order (define-by-run)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)
        return values

    def grid(self) -> dict[str, list[Any]]:
        return {p.name: p.grid() for p in self.params}


def overrides(values: Mapping[str, Any]) -> list[str]:
    """Hydra command-line overrides (``key=value``) for sampled values; per-layer amounts
    (``scope.amounts.<layer>``) add their key, as ``scope.amounts`` is null by default."""
    return [
        f"{'++' if k.startswith('scope.amounts.') else ''}{k}={_format(v)}"
        for k, v in values.items()
    ]


def _format(value: Any) -> str:
    """``value`` as Hydra's override grammar reads it back: a string stays a string, however
    it looks (``'1e-3'``, ``'null'``, ``'a,b'`` would otherwise be a float, None, a sweep)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and value.lower() not in _RESERVED
        return value if plain else quoted(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_format(v)}" for k, v in value.items()) + "}"
    return str(value)


# a word Hydra reads as the same string unquoted: a config group's option, a method name
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")
_RESERVED = {"null", "true", "false", "inf", "nan"}  # Hydra's constants, in any case


def quoted(value: str) -> str:
    """A Hydra override value that stays one string whatever quotes it holds."""
    # Hydra unescapes backslashes only before a quote or at the end of a quoted string
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"


def _param(name: str, spec: Mapping[str, Any], earlier: Sequence[str]) -> Param:
    where = f"hydra.sweeper.params.{name}"
    unknown = sorted(set(spec) - _KEYS)
    if unknown and all(isinstance(spec[k], Mapping) for k in unknown):
        # +hydra.sweeper.params.finetune.lr={...}: Hydra nests the dotted key
        param = f"{name}.{unknown[0]}"
        raise ConfigError(f"{where}.{unknown[0]}: {_DOTTED.format(param=param)}")
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; accepted: {sorted(_KEYS)}")
    when = {}
    for key, allowed in (spec.get("when") or {}).items():
        if key not in earlier:
            raise ConfigError(
                f"{where}.when names {key!r}, not a param listed before it; accepted: "
                f"{list(earlier)}"
            )
        allowed = allowed if isinstance(allowed, list | tuple) else [allowed]
        when[key] = tuple(allowed)
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list | tuple) or not choices:
            raise ConfigError(f"{where}.choices is empty; accepted: a non-empty list of values")
        return Param(name, choices=tuple(choices), when=when)
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where} needs choices, or low and high")
    low, high = spec["low"], spec["high"]
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ConfigError(f"{where}: low and high must be numbers (got {bound!r})")
    if low > high:
        raise ConfigError(f"{where}: low={low} is greater than high={high}; accepted: low <= high")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: log=true needs low > 0 (got low={low})")
    return Param(name, low=low, high=high, step=spec.get("step"), log=log, when=when)
