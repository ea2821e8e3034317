"""Launching a sweep's jobs without composing every job's config from the files again.

Hydra's basic launcher recomposes each job's whole config: it reads the config files, builds
the defaults list, merges every group and applies the job's overrides, which costs more
than asking and telling the study together. A sweep's jobs differ only in their sampled
values and, sometimes, in a group choice (``method=ln_structured``). `ComposingLauncher`
composes the config once per distinct set of group choices and applies each job's other
overrides to a copy, as Hydra itself applies them after composing; the job is then run by
Hydra's own ``run_job``, so its folder, its ``.hydra/`` files and its logging are Hydra's.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

__all__ = ["ComposingLauncher"]

BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class ComposingLauncher:
    """Hydra's basic launcher with one composition per set of group choices.

    ``fallback`` is the launcher Hydra configured; jobs go to it whenever it is not the basic
    launcher (a plugin of the user's runs them its own way) or when this Hydra has not the
    internals used here.
    """

    def __init__(self, fallback: Any, hydra_context: Any, task_function: Any, config: DictConfig):
        self.fallback = fallback
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self._parser = OverridesParser.create()
        self._composed: dict[tuple[str, ...], DictConfig] = {}
        self._repo = self._group_repository() if _is_basic(fallback) else None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        if self._repo is None:
            return list(self.fallback.launch(job_overrides, initial_job_idx=initial_job_idx))
        setup_globals()
        hydra_cfg = self.config.hydra
        configure_log(hydra_cfg.hydra_logging, hydra_cfg.verbose)
        Path(str(hydra_cfg.sweep.dir)).mkdir(parents=True, exist_ok=True)
        runs: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            job_cfg = self.job_config(list(overrides))
            with open_dict(job_cfg):
                job_cfg.hydra.job.id = idx
                job_cfg.hydra.job.num = idx
            runs.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=job_cfg,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            configure_log(hydra_cfg.hydra_logging, hydra_cfg.verbose)
        return runs

    def job_config(self, overrides: list[str]) -> DictConfig:
        """The job's config, equal to Hydra's ``load_sweep_config(config, overrides)``."""
        loader = self.hydra_context.config_loader
        parsed = self._parser.parse_overrides(overrides)
        composes = [self._composes(o) for o in parsed]
        composing = tuple(o.input_line for o, c in zip(parsed, composes, strict=True) if c)
        base = self._composed.get(composing)
        if base is None:
            base = loader.load_sweep_config(self.config, list(composing))
            self._composed[composing] = base
        cfg = copy.deepcopy(base)
        values = [o for o, c in zip(parsed, composes, strict=True) if not c]
        try:
            type(loader)._apply_overrides_to_config(values, cfg)
        except OmegaConfBaseException as e:  # as Hydra's own composition reports it
            raise ConfigCompositionException().with_traceback(e.__traceback__) from e
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in task]
            cfg.hydra.job.override_dirname = _dirname(task, cfg.hydra.job.config.override_dirname)
        OmegaConf.copy_cache(from_config=self.config, to_config=cfg)
        return cfg

    def _composes(self, override) -> bool:
        # what Hydra's defaults list takes (a group choice) and what only composition applies
        if override.is_hydra_override() or override.key_or_group == "hydra.searchpath":
            return True
        if isinstance(override.value(), dict):
            return False
        return self._repo.group_exists(override.key_or_group)

    def _group_repository(self) -> Any:
        """The repository the sweep's configs are composed from, search path included, or
        ``None`` where this Hydra's loader does not expose it (then Hydra composes)."""
        loader = self.hydra_context.config_loader
        try:
            _, repo = loader._parse_overrides_and_create_caching_repo(
                self.config.hydra.job.config_name, list(self.config.hydra.overrides.hydra)
            )
            type(loader)._apply_overrides_to_config  # noqa: B018 - present, or fall back
        except (AttributeError, TypeError):
            log.debug("composing every job with Hydra's launcher", exc_info=True)
            return None
        return repo


def _is_basic(launcher: Any) -> bool:
    # by name: Hydra's plugin scan may import its plugin modules a second time
    kind = type(launcher)
    return f"{kind.__module__}.{kind.__qualname__}" == BASIC


def _dirname(overrides: list, settings: DictConfig) -> str:
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(
        overrides=overrides,
        kv_sep=settings.kv_sep,
        item_sep=settings.item_sep,
        exclude_keys=settings.exclude_keys,
    )
