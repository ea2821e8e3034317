from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep.errors import ConfigError
from sweep.pruning._method import PruningMethod

SCHEDULES = ("one_shot", "iterative", "agp")
# The keys each schedule accepts besides ``name``, with what each accepts.
_KEYS: dict[str, dict[str, str]] = {
    "one_shot": {},
    "iterative": {"steps": "an int >= 1"},
    "agp": {
        "initial": "a number in [0, 1)",
        "start": "a number in [0, 1)",
        "end": "a number in (start, 1]",
        "frequency": "an int >= 1",
    },
}

# A cumulative target: the sparsity to reach now, given the final sparsity of a tensor.
Target = Callable[[float], float]


@dataclass(frozen=True)
class Event:
    """Prune more before finetuning step ``step`` (0-based), up to ``sparsity(final)``."""

    step: int
    sparsity: Target
    final: bool = False


@dataclass(frozen=True)
class Schedule:
    """When pruning happens during finetuning, and how much each time (``conf/schedule``).

    ``one_shot``: all of ``amount`` before finetuning. ``iterative``: ``steps`` rounds of prune
    then finetune, the finetune steps split evenly over the rounds; each round removes the same
    fraction of what is still unpruned, as iterative magnitude pruning does (Han et al. 2015,
    Frankle & Carbin 2019). ``agp``: Zhu & Gupta's (2017) gradual pruning, sparsity following
    ``final + (initial - final) * (1 - progress)**3`` from ``start`` to ``end`` (fractions of
    the finetune steps), masks recomputed every ``frequency`` steps. Every schedule ends at
    exactly the count one-shot pruning removes (`prune_toward`).

    Example:
        >>> [e.step for e in Schedule("iterative", steps=4).events(100)]
        [0, 25, 50, 75]
        >>> round(Schedule("iterative", steps=2).events(100)[0].sparsity(0.75), 3)
        0.5
    """

    name: str = "one_shot"
    steps: int = 1
    initial: float = 0.0
    start: float = 0.0
    end: float = 1.0
    frequency: int = 1

    @property
    def one_shot(self) -> bool:
        return self.name == "one_shot"

    @classmethod
    def from_config(cls, node: DictConfig | Mapping[str, Any] | None) -> Schedule:
        """Build from a ``conf/schedule`` node; raises `ConfigError` naming the bad value."""
        if node is None:
            return cls()
        spec = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        spec = dict(spec)
        name = spec.pop("name", "one_shot")
        if name not in SCHEDULES:
            raise ConfigError(
                f"schedule.name={name!r} is unknown; accepted: {' | '.join(SCHEDULES)}"
            )
        accepted = _KEYS[name]
        for key in spec:
            if key not in accepted:
                known = " | ".join(accepted) or "none besides name"
                raise ConfigError(
                    f"schedule.{key} is not a key of schedule {name}; accepted: {known}"
                )
        schedule = cls(name, **spec)
        schedule._check(accepted)
        return schedule

    def _check(self, accepted: dict[str, str]) -> None:
        valid = {
            "steps": _is_int(self.steps) and self.steps >= 1,
            "frequency": _is_int(self.frequency) and self.frequency >= 1,
            "initial": _is_number(self.initial) and 0 <= self.initial < 1,
            "start": _is_number(self.start) and 0 <= self.start < 1,
            "end": _is_number(self.end) and self.start < self.end <= 1,
        }
        for key, ok in valid.items():
            if key in accepted and not ok:
                value = getattr(self, key)
                raise ConfigError(
                    f"schedule.{key}={value!r} is out of range; accepted: {accepted[key]}"
                )

    def check_method(self, method: PruningMethod) -> None:
        """A gradual schedule sets the amount of each pruning step: the method must take one."""
        if self.one_shot or method.cls is None:
            return
        if not method.takes_amount:
            raise ConfigError(
                f"schedule={self.name} needs a method that takes an amount; {method.name} "
                f"({method.cls.__qualname__}) has none; accepted: schedule=one_shot, or a method "
                "whose constructor takes amount"
            )

    def events(self, total_steps: int) -> list[Event]:
        """The pruning steps over ``total_steps`` finetuning steps, in order; the last one
        reaches the final sparsity. With no finetuning (0 steps) they all happen at step 0."""
        t = max(0, int(total_steps))
        if self.name == "iterative":
            r = self.steps
            return [Event((i * t) // r, _geometric(i + 1, r), final=i + 1 == r) for i in range(r)]
        if self.name == "agp":
            first, last = math.floor(self.start * t), math.floor(self.end * t)
            steps = [*range(first, last, self.frequency), last]
            span = max(1, last - first)
            return [
                Event(s, _cubic(self.initial, (s - first) / span), final=s == last)
                for s in sorted(set(steps))
            ]
        return [Event(0, _final, final=True)]


def _final(final: float) -> float:
    return final


def _geometric(done: int, rounds: int) -> Target:
    # each round keeps the same fraction of what was left: 1 - (1 - final) ** (done / rounds)
    return lambda final: 1 - (1 - final) ** (done / rounds)


def _cubic(initial: float, progress: float) -> Target:
    def sparsity(final: float) -> float:
        start = min(initial, final)
        return final + (start - final) * (1 - progress) ** 3

    return sparsity


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
