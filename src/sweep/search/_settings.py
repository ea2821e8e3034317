"""A sweep's settings from ``hydra.sweeper`` and the command line's sweeps, and the check that
a resumed study runs with the objectives, directions and fixed overrides it started with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from sweep.errors import ConfigError
from sweep.hashing import NOT_IN_KEY
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


def check_unchanged(study: optuna.Study, settings: StudySettings, fixed: Sequence[str]) -> None:
    """Refuse to resume a study with other objectives, directions or fixed overrides.

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
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", wanted)
        return
    if recorded["objectives"] != wanted["objectives"]:
        raise ConfigError(
            f"study {name!r} has objectives {recorded['objectives']}; this run asks "
            f"{wanted['objectives']}; accepted: the study's objectives, {new_study}"
        )
    old, new = recorded["fixed"], wanted["fixed"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            before = f"{key}={old[key]}" if key in old else f"no {key} override"
            now = f"{key}={new[key]}" if key in new else f"no {key} override"
            raise ConfigError(
                f"study {name!r} was run with {before}; this run has {now}; "
                f"accepted: the study's overrides, {new_study}"
            )


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
