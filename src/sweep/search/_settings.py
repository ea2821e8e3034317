"""A sweep's settings from ``hydra.sweeper`` and the command line's sweeps, and the check that
a resumed study runs with the objectives, directions and fixed overrides it started with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from sweep._build import CODE_KEY, code_digest
from sweep.errors import ConfigError
from sweep.hashing import HOW_NOT_WHAT, NOT_IN_KEY, dotted
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
) -> None:
    """Refuse to resume a study with other objectives, directions or fixed overrides, or with
    a composed config (``composed``, the job's) that differs in a value no parameter sweeps:
    a config file of the user's edited between runs (``finetune.epochs`` in ``+exp=a``).

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
        wanted["composed"] = _composed_values(composed, settings)
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", wanted)
        return
    if recorded["objectives"] != wanted["objectives"]:
        raise ConfigError(
            f"study {name!r} has objectives {recorded['objectives']}; this run asks "
            f"{wanted['objectives']}; accepted: the study's objectives, {new_study}"
        )
    for part, (absent, template) in _CHANGED.items():
        if part not in wanted:
            continue
        if part not in recorded:  # a study from before this check: what it runs with now
            study.set_user_attr("settings", {**recorded, part: wanted[part]})
            return
        old, new = recorded[part], wanted[part]
        if part == "composed":  # a setting one version of prune-sweep has and the other not
            old, new = _common_settings(old, new), _common_settings(new, old)
        difference = _first_difference(old, new, absent)
        if difference:
            before, now = difference
            raise ConfigError(
                f"study {name!r} was run with {template.format(before=before, now=now)}, "
                f"{new_study}"
            )


# What a resumed study compares: the name of a key neither side has, and the refusal
_CHANGED = {
    "fixed": (" override", "{before}; this run has {now}; accepted: the study's overrides"),
    "composed": (
        "",
        "{before} (its composed config); this run has {now}: a config file or your code "
        "changed between runs; accepted: the study's config and code (put the file back as it "
        "was)",
    ),
}


def _common_settings(values: dict[str, str], other: dict[str, str]) -> dict[str, str]:
    """``values`` without the keys of prune-sweep's schema that ``other`` lacks: a setting
    added or removed by an upgrade between two runs of a study is no change of the user's."""
    from sweep import config

    return {k: v for k, v in values.items() if k in other or config.accepted(k) is None}


def _first_difference(
    old: dict[str, str], new: dict[str, str], what: str
) -> tuple[str, str] | None:
    """``("key=old", "key=new")`` for the first key whose value differs (``no key<what>`` on
    the side without it), or ``None``."""
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            before = f"{key}={old[key]}" if key in old else f"no {key}{what}"
            now = f"{key}={new[key]}" if key in new else f"no {key}{what}"
            return before, now
    return None


def _composed_values(composed: DictConfig, settings: StudySettings) -> dict[str, str]:
    """The values of ``composed`` that change what a trial computes and that no parameter
    sweeps, as text: not where it writes or how it looks (`NOT_IN_KEY`), not how its data is
    loaded, nor where a file lies whose content the trial key holds."""
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
    paths = ("dataset.root", "model.checkpoint", "rewind_weights")
    return {
        key: str(value)
        for key, value in flat.items()
        if not any(key == s or key.startswith(f"{s}.") for s in swept)
        and tuple(key.split(".", 1)) not in HOW_NOT_WHAT
        and key not in paths
    }


def _computing(fixed: Sequence[str]) -> dict[str, str]:
    # the overrides that change what a trial computes (not where it writes or how it looks)
    pairs = (o.lstrip("+~").partition("=") for o in fixed)
    return {
        key: value for key, _, value in pairs if key.split(".")[0] not in (*NOT_IN_KEY, "hydra")
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
