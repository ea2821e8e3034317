"""The config schema: the type and the accepted values of every key, declared once.

``conf/config.yaml`` extends ``base_config`` (registered here in Hydra's ConfigStore), so a
wrong type or an unknown key fails when the config is composed, naming the key. Defaults live
in the YAML files only: every field here is ``MISSING`` until they fill it. Ranges a type
cannot say (``finetune.lr`` above 0, ``latency.repeats`` at least 1) are declared beside the
field with `_field` and checked by `check_values`.

Nodes whose keys depend on the option chosen (``model``, ``dataset``, ``method``,
``schedule``) stay open:
their builders check their own arguments.
"""

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig

from sweep._console import PROGRESS
from sweep.errors import ConfigError

__all__ = ["Config", "accepted", "check_values", "describe", "is_bool", "keys", "register", "shown"]


def _field(accepted: str, valid: Callable[[Any], bool]) -> Any:
    """A schema field whose value must also pass ``valid``; ``accepted`` says what passes."""
    return field(default=MISSING, metadata={"accepted": accepted, "valid": valid})


DEVICES = "auto | cpu | cuda | cuda:N"  # what device= accepts

# checked even when null: nothing reads a null there (a null measure would read as auto)
_NOT_NULL = {"fuse", "measure", "progress"}


def _fuse_setting(v: Any) -> bool:
    return v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


@dataclass
class TrainSettings:
    """``pretrain`` and ``finetune``: one training run."""

    epochs: int = _field("an int >= 0", lambda v: v >= 0)
    batch_size: int = _field("an int >= 1", lambda v: v >= 1)
    optimizer: str = MISSING
    lr: float = _field("a number > 0", _positive)
    momentum: float = _field("a number in [0, 1)", lambda v: 0 <= v < 1)
    weight_decay: float = _field("a number >= 0", lambda v: math.isfinite(v) and v >= 0)
    amp: bool = MISSING
    label_smoothing: float = _field("a number in [0, 1)", lambda v: 0 <= v < 1)
    scheduler: str = _field(
        "constant | cosine | step", lambda v: v in ("constant", "cosine", "step")
    )
    warmup_epochs: int = _field("an int >= 0", lambda v: v >= 0)
    step_gamma: float = _field("a number in (0, 1]", lambda v: 0 < v <= 1)
    # a field() holding MISSING, not a shared list: the YAML fills it
    step_milestones: list[float] = _field(  # noqa: RUF009
        "a list of fractions of the epochs in (0, 1), such as [0.5, 0.75]",
        lambda v: all(0 < m < 1 for m in v),
    )


@dataclass
class ScopeSettings:
    layers: list[str] = MISSING
    # Any, not dict | None: OmegaConf 2.3 cannot merge a mapping into a typed node that holds
    # null, and null is the default (so that overrides can add keys); Scope checks the value
    amounts: Any = MISSING
    exclude: list[str] = MISSING
    prune_classifier_outputs: bool = MISSING
    dense_ends: bool = MISSING


@dataclass
class StoreSettings:
    path: str = _field("a folder path", lambda v: bool(v.strip()))
    baselines: str = _field("a folder path", lambda v: bool(v.strip()))
    models: str = _field("sparse | dense | none", lambda v: v in ("sparse", "dense", "none"))


@dataclass
class LatencySettings:
    measure: Any = _field("auto | true | false", lambda v: v == "auto" or isinstance(v, bool))  # noqa: RUF009
    batch_size: int = _field("an int >= 1", lambda v: v >= 1)
    warmup: int = _field("an int >= 0", lambda v: v >= 0)
    repeats: int = _field("an int >= 1", lambda v: v >= 1)
    max_repeats: int = _field("an int >= 1", lambda v: v >= 1)
    width: float = _field("a number > 0", _positive)
    confidence: float = _field("a number in (0, 1)", lambda v: 0 < v < 1)


@dataclass
class RecalibrateSettings:
    batches: int = _field("an int >= 0 (0: off)", lambda v: v >= 0)


@dataclass
class ImportanceSettings:
    batches: int = _field("an int >= 1", lambda v: v >= 1)


@dataclass
class DistributedSettings:
    """``distributed``: the processes a trial runs on (`sweep.distributed`)."""

    nproc: int = _field("an int >= 1 (1: one process)", lambda v: v >= 1)
    timeout_s: int = _field("an int >= 1", lambda v: v >= 1)


@dataclass
class OptunaJob:
    """Set by the Optuna sweeper for each of its jobs; null otherwise."""

    study: str | None = None
    uid: str | None = None
    trial: int | None = None
    storage: str | None = None


@dataclass
class Config:
    """The whole composed config (``conf/config.yaml`` and its groups)."""

    model: dict[str, Any] = MISSING
    dataset: dict[str, Any] = MISSING
    method: dict[str, Any] = MISSING
    pretrain: TrainSettings = MISSING
    finetune: TrainSettings = MISSING
    schedule: dict[str, Any] = MISSING
    amount: int | float = MISSING
    # torch.manual_seed wraps a negative seed to 2**64 + seed (two keys, one stream), and the
    # store's int64 column ends at 2**63
    seed: int = _field("an int in [0, 2**63)", lambda v: 0 <= v < 2**63)
    # resolved by sweep.devices.resolve_device, which checks it
    device: str = field(default=MISSING, metadata={"accepted": DEVICES})
    channels_last: bool = MISSING
    # Any: an int or the word auto (OmegaConf 2.3 types no union of int and str)
    fuse: Any = _field("1 (off) | an int K >= 2 | auto", _fuse_setting)  # noqa: RUF009
    distributed: DistributedSettings = MISSING
    scope: ScopeSettings = MISSING
    compact: bool = MISSING
    recalibrate: RecalibrateSettings = MISSING
    importance: ImportanceSettings = MISSING
    rewind: str = MISSING
    rewind_weights: str | None = MISSING
    store: StoreSettings = MISSING
    tag: str | None = MISSING
    skip_completed: bool = MISSING
    latency: LatencySettings = MISSING
    # Any: true, false or the string auto (OmegaConf 2.3 has no bool | str node); a field()
    # holding MISSING, as the typed fields' are
    progress: Any = _field(PROGRESS, lambda v: v is True or v is False or v == "auto")  # noqa: RUF009
    optuna: OptunaJob = field(default_factory=OptunaJob)


def register() -> None:
    """Store the schema in Hydra's ConfigStore as ``base_config``, which config.yaml extends."""
    ConfigStore.instance().store(name="base_config", node=Config)


def check_values(cfg: DictConfig) -> None:
    """Check every declared range of the schema on a composed config; raise `ConfigError`.

    Types and keys were checked when the config was composed; this checks what a type cannot
    say, such as ``finetune.lr=-1``.
    """
    _check(cfg, Config, "")
    latency = cfg.get("latency")
    if latency is not None and latency.repeats > latency.max_repeats:
        raise ConfigError(
            f"latency.repeats={latency.repeats} is above latency.max_repeats="
            f"{latency.max_repeats}: the rounds run go from repeats up to max_repeats; accepted: "
            "repeats <= max_repeats"
        )


def accepted(key: str) -> str | None:
    """What the schema accepts for the dotted ``key`` (``finetune.lr``), or ``None`` if unknown."""
    node_key, _, name = key.rpartition(".")
    f = _fields(node_key).get(name)
    return None if f is None else f.metadata.get("accepted") or describe(f.type)


def is_bool(key: str) -> bool:
    """Whether the dotted ``key`` is a true-or-false field of the schema (``compact``)."""
    node_key, _, name = key.rpartition(".")
    f = _fields(node_key).get(name)
    return f is not None and f.type is bool


def keys(node_key: str) -> list[str] | None:
    """The keys the schema allows under ``node_key`` (``""`` for the top level), if it is typed."""
    fields = _fields(node_key)
    return sorted(fields) if fields else None


def _fields(node_key: str) -> dict[str, dataclasses.Field]:
    """The schema fields of the node ``node_key``; empty where the node is open or unknown."""
    node: Any = Config
    for part in [p for p in node_key.split(".") if p]:
        f = {f.name: f for f in dataclasses.fields(node)}.get(part)
        if f is None or not dataclasses.is_dataclass(f.type):
            return {}
        node = f.type
    return {f.name: f for f in dataclasses.fields(node)}


def _check(cfg: DictConfig, schema: type, prefix: str) -> None:
    for f in dataclasses.fields(schema):
        value = cfg.get(f.name)
        if dataclasses.is_dataclass(f.type) and isinstance(value, DictConfig):
            _check(value, f.type, f"{prefix}{f.name}.")
        elif (
            "valid" in f.metadata
            and (value is not None or f.name in _NOT_NULL)
            and not f.metadata["valid"](value)
        ):
            raise ConfigError(
                f"{prefix}{f.name}={shown(value)} {_what_is_wrong(value)}; "
                f"accepted: {f.metadata['accepted']}"
            )


def shown(value: Any) -> str:
    """A value as the command line writes it: null, true and false, not None, True, False."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def _what_is_wrong(value: Any) -> str:
    """``is out of range`` for numbers outside their bounds, else ``is not valid``."""
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return "is out of range" if values and numbers else "is not valid"


def describe(kind: Any) -> str:
    names = {int: "an int", float: "a number", bool: "true or false", str: "text"}
    if kind in names:
        return names[kind]
    text = str(kind)
    if text == "int | float":
        return "a number: a float in [0, 1) or an int"
    if text.startswith("list"):
        return "a list such as [Conv2d, Linear]"
    if text.startswith("dict"):
        return "a mapping such as {Conv2d: 0.2}"
    return text
