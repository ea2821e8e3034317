"""A sweep's settings from ``hydra.sweeper`` and the command line's sweeps, and the check that
a resumed study runs with the objectives, directions and fixed overrides it started with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from sweep._build import CODE_KEY, code_digest
from sweep.errors import ConfigError
from sweep.hashing import HOW_NOT_WHAT, KEYED_UNLESS, NOT_IN_KEY, dotted
from sweep.search._layerwise import layer_params
from sweep.search._space import SearchSpace
from sweep.search._study import StudySettings, check_gpu_count, check_storage_folder
from sweep.search._workers import check_storage, submitit_executor


def study_settings(
    sweeper: DictConfig,
    arguments: Sequence[str],
    config_loader: Any = None,
    trial_cfg: DictConfig | None = None,
) -> tuple[StudySettings, list[str]]:
    """The study's settings from ``hydra.sweeper`` and the command line's sweeps, checked.

    Sweeps on the command line (``finetune.lr=choice(0.001,0.01)``) join the search space;
    the other overrides are returned as the fixed part of every job. ``hydra.sweeper.
    layerwise`` adds one amount per layer that ``trial_cfg`` (the composed config) prunes.

    Raises:
        ConfigError: A setting or search dimension that cannot work.
    """
    node = OmegaConf.to_container(sweeper, resolve=True)
    reuse = node.get("reuse_composition", True)
    if not isinstance(reuse, bool):
        raise ConfigError(f"hydra.sweeper.reuse_composition={reuse!r}; accepted: true | false")
    params = dict(node.get("params") or {})
    if node.get("layerwise"):
        if trial_cfg is None:
            raise ConfigError("hydra.sweeper.layerwise needs the composed config to list layers")
        for name, spec in layer_params(node["layerwise"], trial_cfg).items():
            params.setdefault(name, spec)
    fixed = []
    parser = OverridesParser.create(config_loader=config_loader)  # it expands glob(...) sweeps
    for o in parser.parse_overrides(list(arguments)):
        if o.is_sweep_override():
            params[o.get_key_element()] = _param_from_sweep(o)
        else:
            fixed.append(o.input_line)
    space = SearchSpace.from_config(params)
    settings = StudySettings.from_config(node, space)
    if trial_cfg is not None:
        check_storage_folder(settings.storage, trial_cfg.store.path)
        check_storage(trial_cfg, settings)
        if submitit_executor(trial_cfg) is None:  # submitit's jobs count their own node's
            check_gpu_count(settings.n_jobs, trial_cfg)
    return settings, fixed


def check_unchanged(
    study: optuna.Study,
    settings: StudySettings,
    fixed: Sequence[str],
    composed: DictConfig | None = None,
    compose: Callable[[list[str]], DictConfig] | None = None,
    fingerprint: str | None = None,
) -> None:
    """Refuse to resume a study with other objectives, directions or fixed overrides, or with
    a composed config (``composed``, the job's) that differs in a value no parameter sweeps:
    a config file of the user's edited between runs (``finetune.epochs`` in ``+exp=a``), or
    the code of a class of the user's. ``compose`` (Hydra's ``load_sweep_config`` of the
    sweep's config) gives the job config of each option of a swept ``model``, ``method`` or
    ``dataset`` group, whose code is compared option by option. ``fingerprint``: what the
    data holds (`sweep.plan.dataset_fingerprint`), compared too where no parameter sweeps the
    dataset (else each trial's key holds its own).

    Its trials would not be comparable (the study would judge new rows by other measures, or
    mix finetuning budgets); the first worker records what the study runs with.

    Raises:
        ConfigError: Naming the first difference, and how to start a new study instead.
    """
    name = settings.study_name
    new_study = "or another hydra.sweeper.study_name for a new study"
    directions = [d.name.lower() for d in study.directions]
    if directions != list(settings.directions):
        raise ConfigError(
            f"study {name!r} has directions {directions}; this run asks "
            f"{list(settings.directions)}; accepted: the study's directions, {new_study}"
        )
    wanted = {"objectives": list(settings.objectives), "fixed": _computing(fixed)}
    if composed is not None:
        wanted["composed"] = _composed_values(composed, settings, compose)
        # data without files (the embedded digits) has none
        if fingerprint is not None and not _swept(settings, "dataset"):
            wanted["composed"][_FINGERPRINT] = fingerprint
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", wanted)
        return
    if recorded["objectives"] != wanted["objectives"]:
        raise ConfigError(
            f"study {name!r} has objectives {recorded['objectives']}; this run asks "
            f"{wanted['objectives']}; accepted: the study's objectives, {new_study}"
        )
    if "composed" in wanted and "composed" in recorded:
        # the values a trial computes with decide: the same value set another way (seed=0,
        # the default; dataset.root where each machine mounts the data) is no change
        old, new = recorded["composed"], wanted["composed"]
        difference = _first_difference(_common_settings(old, new), _common_settings(new, old), "")
        if difference and difference[0] == _FINGERPRINT:
            raise ConfigError(
                f"study {name!r} was run on data with {difference[1]}; the data this run "
                f"reads has {difference[2]}: files under the dataset's folder were added, "
                f"removed or changed between runs; accepted: the data as it was, {new_study}"
            )
        if difference:
            key, before, now = difference
            part = "composed"
            cause = _changed_override(key, recorded["fixed"], wanted["fixed"], {*old, *new})
            if cause is not None:  # the command line's doing: named as its overrides
                part = "fixed"
                were, are = (
                    {cause: o[cause]} if cause in o else {}
                    for o in (recorded["fixed"], wanted["fixed"])
                )
                _, before, now = _first_difference(were, are, " override")
            raise ConfigError(
                f"study {name!r} was run with "
                f"{_CHANGED[part].format(before=before, now=now)}, {new_study}"
            )
        if set(new) - set(old):  # settings an upgrade added: compared from the next run on
            study.set_user_attr("settings", {**recorded, "composed": {**new, **old}})
        return
    difference = _first_difference(recorded["fixed"], wanted["fixed"], " override")
    if difference:
        _, before, now = difference
        raise ConfigError(
            f"study {name!r} was run with {_CHANGED['fixed'].format(before=before, now=now)}, "
            f"{new_study}"
        )
    if "composed" in wanted:  # a study from before this check: what it runs with now
        study.set_user_attr("settings", {**recorded, "composed": wanted["composed"]})


# How a resumed study's refusal names the difference: an override of the command line, or a
# value its composed config (a config file, the user's code) gives
_CHANGED = {
    "fixed": "{before}; this run has {now}; accepted: the study's overrides",
    "composed": (
        "{before} (its composed config); this run has {now}: a config file or your code "
        "changed between runs; accepted: the study's config and code (put the file back as it "
        "was)"
    ),
}


def _common_settings(values: dict[str, str], other: dict[str, str]) -> dict[str, str]:
    """``values`` without the keys that ``other`` lacks where an upgrade between two runs of a
    study added or removed them, no change of the user's: keys of prune-sweep's schema, and
    settings a preset gained that hold the value that behaves as before (`KEYED_UNLESS`,
    ``method.importance=magnitude``)."""
    from sweep import config

    def upgraded(key: str) -> bool:
        if key == _FINGERPRINT:  # studies before it was compared resume, and record it
            return True
        group, _, name = key.rpartition(".")
        if "[" in group:  # a swept option's code (`_swept_code`): older studies lack it
            return True
        if (group, name) in KEYED_UNLESS and values[key] == str(KEYED_UNLESS[(group, name)]):
            return True
        return config.accepted(key) is not None

    return {k: v for k, v in values.items() if k in other or not upgraded(k)}


def _changed_override(
    key: str, old: dict[str, str], new: dict[str, str], values: set[str]
) -> str | None:
    """The override of the command line that changed the composed value ``key``: the key
    itself, or its group (``method=...`` for ``method._target_``), or else a group of the
    user's (``+exp=b``) whose options compose values; ``None`` when no override changed."""
    changed = [k for k in sorted({*old, *new}) if old.get(k) != new.get(k)]
    related = [k for k in changed if key == k or key.startswith(f"{k}.")]
    groups = [k for k in changed if k not in values]  # not a value of its own
    return (related or groups or [None])[0]


def _first_difference(
    old: dict[str, str], new: dict[str, str], what: str
) -> tuple[str, str, str] | None:
    """``(key, "key=old", "key=new")`` for the first key whose value differs (``no key<what>``
    on the side without it), or ``None``."""
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            before = f"{key}={old[key]}" if key in old else f"no {key}{what}"
            now = f"{key}={new[key]}" if key in new else f"no {key}{what}"
            return key, before, now
    return None


def _composed_values(
    composed: DictConfig,
    settings: StudySettings,
    compose: Callable[[list[str]], DictConfig] | None = None,
) -> dict[str, str]:
    """The values of ``composed`` that change what a trial computes and that no parameter
    sweeps, as text: not where it writes or how it looks (`NOT_IN_KEY`), not how its data is
    loaded, nor where a file lies whose content the trial key holds. The code of the user's
    classes counts by its digest, for a swept group option by option
    (``method[every_other].code_sha256``) where ``compose`` gives each option's config."""
    node = {}
    for key in composed:
        if key in (*NOT_IN_KEY, "hydra"):
            continue
        try:
            value = composed[key]
            node[key] = (
                OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            )
        except Exception:  # an interpolation only a job resolves (${hydra:job.num}): not compared
            continue
    flat = dotted(node)
    swept = [p.name for p in settings.space.params]
    for group in ("model", "method", "dataset"):  # your own classes by their files' content
        if isinstance(node.get(group), dict) and group not in swept:
            digest = code_digest(node[group])
            if digest is not None:
                flat[f"{group}.{CODE_KEY}"] = digest
    if compose is not None:
        flat.update(_swept_code(settings, compose))
    paths = _BY_CONTENT
    return {
        key: str(value)
        for key, value in flat.items()
        if not any(key == s or key.startswith(f"{s}.") for s in swept)
        and tuple(key.split(".", 1)) not in HOW_NOT_WHAT
        and key not in paths
    }


def _swept_code(
    settings: StudySettings, compose: Callable[[list[str]], DictConfig]
) -> dict[str, str]:
    """``{"method[every_other].code_sha256": digest}`` for each option of a swept ``model``,
    ``method`` or ``dataset`` group whose classes are the user's own."""
    found = {}
    for param in settings.space.params:
        if param.name not in ("model", "method", "dataset") or not param.choices:
            continue
        for choice in param.choices:
            try:
                node = OmegaConf.to_container(
                    compose([f"{param.name}={choice}"])[param.name], resolve=True
                )
            except Exception:  # an option that does not compose: its trials fail and say why
                continue
            digest = code_digest(node) if isinstance(node, dict) else None
            if digest is not None:
                found[f"{param.name}[{choice}].{CODE_KEY}"] = digest
    return found


# Paths of files a trial key holds by their content: where they lie is no change
_BY_CONTENT = ("dataset.root", "model.checkpoint", "rewind_weights")
# The data's content, as a study records it beside its composed values (`check_unchanged`)
_FINGERPRINT = "dataset.fingerprint"


def _swept(settings: StudySettings, group: str) -> bool:
    """Whether a parameter of the study sweeps ``group`` or a value under it."""
    return any(p.name == group or p.name.startswith(f"{group}.") for p in settings.space.params)


def _computing(fixed: Sequence[str]) -> dict[str, str]:
    # the overrides that change what a trial computes: not where it writes or how it looks,
    # how its data is loaded, nor where a file lies whose content the trial key holds
    pairs = (o.lstrip("+~").partition("=") for o in fixed)
    return {
        key: value
        for key, _, value in pairs
        if key.split(".")[0] not in (*NOT_IN_KEY, "hydra")
        and tuple(key.split(".", 1)) not in HOW_NOT_WHAT
        and key not in _BY_CONTENT
    }


def _param_from_sweep(o) -> dict[str, Any]:
    if o.is_choice_sweep() or o.is_range_sweep():
        return {"choices": list(o.sweep_iterator())}
    if o.is_interval_sweep():
        interval = o.value()
        return {"low": interval.start, "high": interval.end}
    raise ConfigError(
        f"{o.input_line}: accepted sweeps are a,b,c | choice(...) | range(...) | interval(a,b)"
    )
