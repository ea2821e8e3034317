"""What a trial is before it runs: `prepare` checks every input of a config and builds its
dataset and model into a `Plan`; the trial's key (`trial_key`) and device (`resolve_device`).

Also the datasets and models a multirun's jobs share (`_LAST_DATASET`, `_on_device`,
`_LAST_MODEL`), and how a model config is read against our presets (`_model_spec`).
`sweep.trial` runs the plan.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweep import config, weights
from sweep._build import BUILD_FACTS, CODE_KEY, build_model, call_target, code_digest
from sweep._imports import locate
from sweep.data import Dataset, DataSplit, Split
from sweep.devices import resolve_device
from sweep.errors import ConfigError
from sweep.hashing import NOT_IN_KEY, config_hash, key_view
from sweep.pruning import (
    PruningMethod,
    Schedule,
    Scope,
    check_importance,
    not_compactable,
    plan_pruning,
)
from sweep.pruning._scope import classifier_name
from sweep.rewind import parse_rewind
from sweep.store import check_writable
from sweep.training import optimizer_class

__all__ = ["Plan", "prepare", "resolve_device", "trial_key"]

# The last dataset this process built in a multirun, by the hash of its config, and its copy
# on the last device: the jobs of a sweep (run one after another in its worker's process) share
# them. Datasets are never changed in place (splits are replaced, not written to). A single run
# (the command line, a notebook) builds its dataset afresh: its files may have changed.
_LAST_DATASET: dict[str, Dataset] = {}
_ON_DEVICE: dict[str, tuple[Dataset, tuple[torch.device, bool], Dataset]] = {}
# The last model of ours (`sweep.models`) this process built in a multirun, untouched, by its
# spec, dataset facts and seed, with the random state its building left: the jobs of a sweep
# build the same one, and copying it costs a fraction of building it (a user's builder is
# called every time: it may read files of its own).
_LAST_MODEL: dict[str, tuple[nn.Module, torch.Tensor]] = {}
_OURS = "sweep.models."
_KEPT = ("_target_", "importance")  # kept whatever the preset said


@dataclass(frozen=True)
class Plan:
    """A trial whose every input has been checked; nothing is trained or written yet."""

    device: torch.device
    method: PruningMethod
    scope: Scope
    data: Dataset
    model: nn.Module
    resolved: dict[str, Any]
    key: str
    schedule: Schedule = field(default_factory=Schedule)
    # the pretraining epoch to rewind to (0: init), None: no rewind
    rewind_epoch: int | None = None
    # the weights to rewind to, when the user gave them (rewind_weights)
    rewind_state: dict[str, torch.Tensor] | None = None


def prepare(
    cfg: DictConfig,
    *,
    datasets: dict[str, Dataset] | None = None,
    models: dict[str, tuple[nn.Module, torch.Tensor]] | None = None,
    check_store: bool = True,
) -> Plan:
    """Check every input of the trial ``cfg`` and build what it needs, on the CPU.

    The dataset and model are built (a bad ``_target_`` or argument fails here), the pruning is
    planned against the model's tensors (amounts, ``dim``), and the store is checked writable
    last, so that bad input creates nothing.

    Args:
        cfg: A composed ``conf/config.yaml``.
        datasets: Datasets already built, by the hash of their config; filled as they are
            built (checking many variants of one grid builds each dataset once).
        models: The last model built of ours, by the hash of its build, as `_LAST_MODEL` in a
            multirun; filled as it is built (a sweep's checks build each model once in a row).
        check_store: Check that the store is writable (creating its folder); a caller that
            checks several configs does it once all of them passed.

    Raises:
        ConfigError: One line naming the bad value and what is accepted.
    """
    _check_complete(cfg)
    config.check_values(cfg)
    device = resolve_device(str(cfg.device))
    method_spec = _method_spec(cfg.method)
    method = PruningMethod.from_config(method_spec)
    scope = Scope.from_config(cfg.scope)
    schedule = Schedule.from_config(cfg.schedule)
    schedule.check_method(method)
    if method.cls is not None and not method.takes_amount and scope.amounts:
        raise ConfigError(
            f"scope.amounts sets an amount per layer, but method {method.name} "
            f"({method.cls.__qualname__}) takes no amount: it prunes every layer in scope alike; "
            "accepted: scope.layers and scope.exclude to choose its layers, or a method whose "
            "constructor takes amount"
        )
    rewind_epoch = parse_rewind(cfg.rewind)
    _check_protocol(cfg, method, schedule, rewind_epoch)
    for stage in ("pretrain", "finetune"):
        optimizer_class(cfg[stage].optimizer, f"{stage}.optimizer")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["model"] = _model_spec(cfg.model)
    resolved["method"] = method_spec
    for group in ("model", "method", "dataset"):
        # the user's own classes by what their files say: an edit is a new trial and baseline
        digest = code_digest(resolved[group])
        if digest is not None:
            resolved[group][CODE_KEY] = digest
    if method.cls is None or resolved["amount"] == 0:
        resolved["amount"] = 0.0  # nothing is pruned, whatever was asked (amount=0 is a count)
    if method.nm is not None:
        n, m = method.nm
        resolved["amount"] = n / m  # N:M prunes n of m, whatever was asked
    checkpoint = resolved["model"].get("checkpoint")
    if checkpoint:
        state = weights.read_state(checkpoint)  # first: a missing file fails before any build
        # the weights are the file's content, wherever it lies; no pretraining happens
        resolved["model"]["checkpoint_sha256"] = weights.file_digest(checkpoint)
        del resolved["pretrain"]
    rewind_file = resolved.get("rewind_weights")
    if rewind_file:
        rewind_file_state = weights.read_state(rewind_file, "rewind_weights")
        resolved["rewind_weights_sha256"] = weights.file_digest(rewind_file)
    if datasets is None:
        datasets = _LAST_DATASET if _in_multirun() else {}
    data = _dataset(cfg.dataset, resolved["dataset"], datasets)
    if data.fingerprint is not None:
        # what the files hold is part of the trial and of its baseline: a changed folder is a
        # new baseline and a new row, never a stale one
        resolved["dataset"]["fingerprint"] = data.fingerprint
    key = trial_key(resolved, device)
    model = _build(resolved["model"], _facts(data), cfg.seed, models)
    _probe(model, resolved["model"], data)
    rewind_state = None
    if rewind_file:
        dense = copy.deepcopy(model)
        weights.fit(dense, rewind_file_state, rewind_file, "rewind_weights")
        rewind_state = dense.state_dict()
    if checkpoint:
        weights.fit(model, state, checkpoint)
    targets = plan_pruning(model, method, resolved["amount"], scope)  # before any training
    check_importance(method, targets, model)
    _check_classifier_outputs(cfg, method, scope, model, targets)
    if check_store:
        check_writable(cfg.store.path)
    return Plan(
        device, method, scope, data, model, resolved, key, schedule, rewind_epoch, rewind_state
    )


def trial_key(resolved: Mapping[str, Any], device: torch.device) -> str:
    """Hash of the resolved config minus output settings, with the device type resolved.

    Settings added after stores existed count only when set (`sweep.hashing.KEYED_UNLESS`), so
    that existing trials keep their keys; loader settings never count (`HOW_NOT_WHAT`).
    """
    keyed = {k: v for k, v in resolved.items() if k not in NOT_IN_KEY and k != "device"}
    if keyed.get("method", {}).get("importance", "magnitude") == "magnitude":
        keyed.pop("importance", None)  # no calibration data is read
    if keyed.get("rewind_weights_sha256"):
        del keyed["rewind_weights"]  # the rewind weights by their content, as the checkpoint
    keyed = key_view("", keyed)
    keyed = {k: key_view(k, v) for k, v in keyed.items()}
    keyed = {k: v for k, v in keyed.items() if v != {}}  # a group all at "as before" values
    keyed["model"] = _weights_identity(keyed["model"])
    return config_hash({**keyed, "device_type": device.type})


def _weights_identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A model config as keys see it: a checkpoint by its content, not where the file lies."""
    if spec.get("checkpoint_sha256"):
        return {k: v for k, v in spec.items() if k != "checkpoint"}
    return dict(spec)


def _check_complete(cfg: DictConfig) -> None:
    if "???" not in str(OmegaConf.to_container(cfg)):  # a third of missing_keys' walk
        return
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        example = "my_module.Name" if key.endswith("_target_") else "/path/to/data"
        raise ConfigError(f"{key} is required but not set; e.g. {key}={example}")


def _check_classifier_outputs(
    cfg: DictConfig, method: PruningMethod, scope: Scope, model: nn.Module, targets: list
) -> None:
    """Compaction that would remove classes: it always fell back to the masks, after pruning."""
    if not (cfg.compact and scope.prune_classifier_outputs and not_compactable(method) is None):
        return
    classifier = classifier_name(model)
    if classifier is not None and any(t.name == classifier for t in targets):
        raise ConfigError(
            f"compact=true with scope.prune_classifier_outputs=true would remove classes "
            f"(the outputs of {classifier}); accepted: one of the two, or the classifier out of "
            "the scope (scope.dense_ends=true or scope.exclude)"
        )


def _check_protocol(
    cfg: DictConfig, method: PruningMethod, schedule: Schedule, rewind_epoch: int | None
) -> None:
    """What the schedule, rewinding, compaction and the baseline's source allow together."""
    compacting = cfg.compact and not_compactable(method) is None
    if compacting and not schedule.one_shot:
        raise ConfigError(
            f"schedule={schedule.name} with compact=true: channels are removed once, after "
            "one-shot pruning; accepted: schedule=one_shot, or compact=false"
        )
    if compacting and rewind_epoch is not None:
        raise ConfigError(
            f"rewind={cfg.rewind} with compact=true: the rewind weights have the dense model's "
            "shapes; accepted: rewind=none, or compact=false"
        )
    amount = cfg.amount
    if schedule.name == "agp" and isinstance(amount, float) and schedule.initial > amount:
        raise ConfigError(
            f"schedule.initial={schedule.initial} is above amount={amount}: agp rises from its "
            "initial sparsity to the amount; accepted: schedule.initial <= amount"
        )
    if cfg.rewind_weights and rewind_epoch is None:
        raise ConfigError(
            f"rewind_weights={cfg.rewind_weights!r} is set but rewind=none; accepted: "
            "rewind=init or rewind=epoch:K with rewind_weights, or rewind_weights=null"
        )
    if rewind_epoch is None or cfg.rewind_weights:
        return
    if cfg.model.get("checkpoint"):
        raise ConfigError(
            f"rewind={cfg.rewind} needs the weights from before training, and model.checkpoint "
            "gives only the trained ones; accepted: rewind_weights=/path/to/those_weights.pt, "
            "or rewind=none"
        )
    if rewind_epoch > cfg.pretrain.epochs:
        raise ConfigError(
            f"rewind={cfg.rewind} but pretraining has {cfg.pretrain.epochs} epochs; accepted: "
            f"none | init | epoch:0 to epoch:{cfg.pretrain.epochs}"
        )


def _model_spec(node: DictConfig) -> dict[str, Any]:
    """The resolved ``model`` node; a preset whose ``_target_`` the user replaced (``model.
    _target_=my_models.Net`` on the default ``small_cnn``) drops the preset's own arguments
    that were left as they were, and is named after the new target unless the user named it
    (``model.name=mynet``)."""
    spec = OmegaConf.to_container(node, resolve=True)
    preset = _preset("model", str(spec.get("name")))
    renamed = preset is None
    if renamed:  # the user renamed it too: the preset is known by the keys it brought
        preset = _preset_of(spec)
    if preset is None or preset.get("_target_") == spec.get("_target_"):
        return spec
    kept = {k: v for k, v in spec.items() if k == "_target_" or k not in preset or preset[k] != v}
    kept["name"] = spec["name"] if renamed else str(spec["_target_"]).rsplit(".", 1)[-1]
    return kept


def _method_spec(node: DictConfig) -> dict[str, Any]:
    """The resolved ``method`` node; a preset whose ``_target_`` the user replaced (``method.
    _target_=my_methods.EveryOther`` on the default ``l1_unstructured``) drops the preset's own
    arguments that were left as they were and the new class does not take, and is named after
    the new target, as a model is (`_model_spec`): its rows never read as the preset's."""
    spec = OmegaConf.to_container(node, resolve=True)
    if spec.get("global") and spec.get("_target_"):
        raise ConfigError(
            f"method._target_={spec['_target_']!r} with a global method: it ranks with "
            f"method.pruning_method; accepted: method.pruning_method={spec['_target_']} (an "
            "unstructured method), or method._target_ on a method of its own"
        )
    preset = _preset("method", str(spec.get("name")))
    if preset is None or not spec.get("_target_") or preset.get("_target_") == spec["_target_"]:
        return spec
    takes = _arguments_of(spec["_target_"])
    kept = {
        k: v
        for k, v in spec.items()
        if k in _KEPT or k not in preset or preset[k] != v or takes is None or k in takes
    }
    kept["name"] = str(spec["_target_"]).rsplit(".", 1)[-1]
    return kept


def _arguments_of(target: str) -> set[str] | None:
    """The constructor arguments of the class ``target`` names; ``None`` when it takes any
    (``**kwargs``) or cannot be read (`PruningMethod.from_config` then says why)."""
    try:
        parameters = inspect.signature(locate(target)).parameters.values()
    except Exception:
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def _preset(group: str, name: str) -> dict[str, Any] | None:
    """The raw YAML of our config ``group/name``, or ``None`` when there is no such preset."""
    preset = _preset_file(group, name)
    return copy.deepcopy(preset)


@functools.lru_cache(maxsize=64)
def _preset_file(group: str, name: str) -> dict[str, Any] | None:
    # the package's own files: read once per process
    from importlib.resources import files

    file = files("sweep.conf") / group / f"{name}.yaml"
    if not file.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.create(file.read_text()), resolve=False)


def _preset_of(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model preset ``spec`` was composed from, once renamed: of the presets whose every
    argument ``spec`` holds, the one with the most arguments, then the most left as they were.
    Hydra's command line can only change or remove a preset's keys, so this is the preset."""
    from importlib.resources import files

    own = ("name", "_target_")
    candidates = []
    for file in (files("sweep.conf") / "model").iterdir():
        if not file.name.endswith(".yaml"):
            continue
        preset = _preset("model", file.name.removesuffix(".yaml"))
        args = [k for k in preset if k not in own]
        if all(k in spec for k in args):
            same = sum(spec[k] == preset[k] for k in args)
            candidates.append((len(args), same, file.name, preset))
    return max(candidates, key=lambda c: c[:3])[3] if candidates else None


def _build(
    spec: Mapping[str, Any],
    facts: dict[str, int],
    seed: int,
    models: dict[str, tuple[nn.Module, torch.Tensor]] | None = None,
) -> nn.Module:
    """``build_model(spec, facts)`` after ``torch.manual_seed(seed)``, from ``models`` (in a
    multirun, `_LAST_MODEL`) when it holds the same build: the same weights, and the same
    random state after it."""
    if models is None and _in_multirun():
        models = _LAST_MODEL
    cached = models is not None and str(spec.get("_target_", "")).startswith(_OURS)
    key = config_hash({"model": dict(spec), "facts": facts, "seed": seed}) if cached else ""
    if cached and key in models:
        model, state = models[key]
        torch.set_rng_state(state)
        return copy.deepcopy(model)
    torch.manual_seed(seed)
    model = build_model(spec, facts)
    if cached:
        models.clear()
        models[key] = (copy.deepcopy(model), torch.get_rng_state())
    return model


# The model builds (config, data facts) whose forward pass `_probe` found good in this process.
_PROBED: set[str] = set()


def _probe(model: nn.Module, spec: Mapping[str, Any], data: Dataset) -> None:
    """Refuse a model of the user's whose forward pass on two test inputs fails or gives no
    ``(2, num_classes)`` logits: it failed only after pretraining, with torch's message, or ran
    with outputs the data has no class for. Once per build in a process; in evaluation mode
    and without gradients, so the model and the random state stay as they were."""
    target = str(spec.get("_target_", ""))
    if target.startswith(_OURS):  # ours are known good; torchvision's probe their own
        return
    probed = config_hash({"model": dict(spec), "facts": _facts(data)})
    if probed in _PROBED:
        return
    x = data.test.inputs(2)
    expected = (len(x), data.num_classes)
    training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a forward that draws
            out = model.eval()(x)
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        problem = None if got == expected else f"gives {got}"
    except Exception as e:
        problem = "fails: " + " ".join(f"{type(e).__name__}: {e}".split())
    finally:
        model.train(training)
    if problem is not None:
        raise ConfigError(
            f"model._target_={target!r} on a batch of {tuple(x.shape)} test inputs {problem}; "
            f"accepted: a model that returns {expected} logits ({data.num_classes} classes)"
        )
    _PROBED.add(probed)


def dataset_fingerprint(cfg: DictConfig) -> str | None:
    """What the data of the trial ``cfg`` holds (`sweep.data.Dataset.fingerprint`; ``None``
    for data without files, such as the embedded digits), its dataset built as `prepare`
    builds it and kept for the next job of this process, as a multirun's jobs keep theirs."""
    spec = OmegaConf.to_container(cfg.dataset, resolve=True)
    digest = code_digest(spec)
    if digest is not None:
        spec[CODE_KEY] = digest
    return _dataset(cfg.dataset, spec, _LAST_DATASET).fingerprint


def _dataset(node: DictConfig, spec: dict[str, Any], datasets: dict[str, Dataset]) -> Dataset:
    """The dataset of config ``node`` (resolved: ``spec``), from ``datasets`` (by the hash of
    ``spec``) or built and added there; `_LAST_DATASET` keeps one."""
    key = config_hash(spec)
    if key not in datasets:
        if datasets is _LAST_DATASET:
            datasets.clear()  # one dataset kept: a sweep's jobs mostly share theirs
        datasets[key] = _build_dataset(node)
    return datasets[key]


def _build_dataset(node: DictConfig) -> Dataset:
    spec = OmegaConf.to_container(node, resolve=True)
    return call_target(spec, "dataset", "a function or class returning a sweep.data.Dataset")


def _facts(data: Dataset) -> dict[str, int]:
    return {k: getattr(data, k) for k in BUILD_FACTS}


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _on_device(data: Dataset, device: torch.device, channels_last: bool = False) -> Dataset:
    """``data.to(device)``, its in-memory images in channels_last (NHWC) memory when asked; in a
    multirun, kept for the next trial of this process on the same data and device (a sweep's
    jobs: the copy to the GPU is made once).

    Only the inputs change layout: a convolution given NHWC inputs runs NHWC kernels and hands
    NHWC on, while the weights stay as torch.nn.utils.prune needs them (its methods ``view``
    them flat, which a channels_last weight refuses).
    """
    held = _ON_DEVICE.get("last")
    if held is not None and held[0] is data and held[1] == (device, channels_last):
        return held[2]
    _ON_DEVICE.clear()  # nothing held past a single run (a notebook's GPU memory stays free)
    moved = data.to(device)
    if channels_last:
        moved = replace(
            moved, train=_nhwc(moved.train), val=_nhwc(moved.val), test=_nhwc(moved.test)
        )
    if _in_multirun():
        _ON_DEVICE["last"] = (data, (device, channels_last), moved)
    return moved


def _nhwc(split: DataSplit) -> DataSplit:
    if isinstance(split, Split) and split.x.dim() == 4:
        return replace(split, x=split.x.contiguous(memory_format=torch.channels_last))
    return split  # streamed batches keep the layout their loader gives
