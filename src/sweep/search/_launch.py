"""Launching a sweep's jobs without composing every job's config from the files again, nor
copying and writing it more often than the job needs.

Hydra's basic launcher recomposes each job's whole config: it reads the config files, builds
the defaults list, merges every group and applies the job's overrides, which costs more
than asking and telling the study together. A sweep's jobs differ only in their sampled
values and, sometimes, in a group choice (``method=ln_structured``). `ComposingLauncher`
composes the config once per distinct set of group choices and applies each job's other
overrides to a copy, as Hydra itself applies them after composing (`sweep._compose`). The
job then runs as Hydra's own ``run_job`` runs it (`_run_job`): the same folder, the same
``.hydra/`` files and the same logging.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import version
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    _flush_loggers,
    configure_log,
    env_override,
    setup_globals,
)
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf._utils import get_omega_conf_dumper

from sweep._compose import Composer

log = logging.getLogger(__name__)

__all__ = ["ComposingLauncher"]

BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
_KEPT_JOBS = 64  # configs composed ahead of their launch and kept for it (`job_config`)


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
        self.composer = None  # None: the fallback launcher composes and runs the jobs
        if _is_basic(fallback):
            loader = hydra_context.config_loader
            self.composer = Composer.create(
                loader,
                config.hydra.job.config_name,
                list(config.hydra.overrides.hydra),
                lambda choices: loader.load_sweep_config(config, choices),
            )
        self._logging_set = False  # whether the sweep's logging is as the last launch left it
        self._kept: dict[tuple[str, ...], DictConfig] = {}  # job overrides -> config (`job_config`)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        if self.composer is None:
            return list(self.fallback.launch(job_overrides, initial_job_idx=initial_job_idx))
        setup_globals()
        hydra_cfg = self.config.hydra
        if not self._logging_set:  # else the last job's launch set it back, as below
            configure_log(hydra_cfg.hydra_logging, hydra_cfg.verbose)
        Path(str(hydra_cfg.sweep.dir)).mkdir(parents=True, exist_ok=True)
        runs: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            job_cfg = self.job_config(list(overrides))
            with open_dict(job_cfg):
                job_cfg.hydra.job.id = idx
                job_cfg.hydra.job.num = idx
            self._logging_set = False  # until the job's logging is undone
            runs.append(_run_job(self.hydra_context, self.task_function, job_cfg))
            configure_log(hydra_cfg.hydra_logging, hydra_cfg.verbose)
            self._logging_set = True
            _settle_heap()
        return runs

    def job_config(self, overrides: list[str], *, keep: bool = False) -> DictConfig:
        """The job's config, equal to Hydra's ``load_sweep_config(config, overrides)``.

        With ``keep``, the config is also kept for the job's launch, which takes it instead
        of composing it again: the caller only reads it (a grid's batch checked before it is
        launched, the size of a fused group).
        """
        key = tuple(overrides)
        cfg = self._kept.pop(key, None)
        if cfg is None:
            if self.composer is None:
                loader = self.hydra_context.config_loader
                cfg = loader.load_sweep_config(self.config, list(overrides))
            else:
                cfg = self.composer(overrides)
                OmegaConf.copy_cache(from_config=self.config, to_config=cfg)
        if keep:
            while len(self._kept) >= _KEPT_JOBS:
                del self._kept[next(iter(self._kept))]  # the oldest: composed again if launched
            self._kept[key] = cfg
        return cfg


def _settle_heap() -> None:
    """After the process's first job, move every object alive to the garbage collector's
    permanent generation (``gc.freeze``): what the first trial imported and built lazily
    (torch's compiler stack, the dataset, the baseline) lives as long as the sweep. Python's
    full collections then scan what later jobs leave, not the 450,000 objects that never die:
    25 ms each instead of 200-300 ms, in a search of many small trials. The cyclic garbage
    the first job left stays until the process ends (its config: a few MB at most).
    """
    global _SETTLED
    if not _SETTLED:
        gc.freeze()
        _SETTLED = True


_SETTLED = False


def _run_job(hydra_context: Any, task_function: Any, config: DictConfig) -> JobReturn:
    """Hydra's ``run_job(..., "hydra.sweep.dir", "hydra.sweep.subdir")`` for a config of its own
    (`ComposingLauncher.job_config`), with what a small trial would wait on left out: Hydra
    copies the Hydra node three times and the whole config once, and writes each ``.hydra``
    file from scratch; here the node is not copied, the task's config is copied without it,
    and the YAML of the parts the jobs share is kept (`_yaml`). The same folder, the same files
    byte for byte, the same logging, callbacks and return value.
    """
    callbacks = hydra_context.callbacks
    old_cwd = os.getcwd()
    orig_hydra_cfg = HydraConfig.instance().cfg
    _set_hydra_config(config)  # the sweep dir may read ${hydra:...}
    output_dir = str(OmegaConf.select(config, "hydra.sweep.dir"))
    output_dir = os.path.join(output_dir, str(OmegaConf.select(config, "hydra.sweep.subdir")))
    hydra_cfg = HydraConfig.instance().cfg
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(output_dir)
    chdir = False
    try:
        ret = JobReturn()
        task_cfg = _without_hydra(config)
        ret.cfg, ret.hydra_cfg = task_cfg, hydra_cfg
        ret.overrides = OmegaConf.to_container(config.hydra.overrides.task)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        chdir = hydra_cfg.hydra.job.chdir
        if chdir is None:
            chdir = not version.base_at_least("1.2")  # Hydra warns about the older default
        if chdir:
            os.chdir(output_dir)
            ret.working_dir = output_dir
        else:
            ret.working_dir = os.getcwd()
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            files = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
            files.mkdir(parents=True, exist_ok=True)
            for name, node in (
                ("config.yaml", task_cfg),
                ("hydra.yaml", hydra_cfg),
                ("overrides.yaml", config.hydra.overrides.task),
            ):
                (files / name).write_text(_yaml(node), encoding="utf-8")
        with env_override(hydra_cfg.hydra.job.env_set):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as e:
                ret.return_value = e
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        callbacks.on_job_end(config=config, job_return=ret)
        return ret
    finally:
        HydraConfig.instance().cfg = orig_hydra_cfg
        if chdir:
            os.chdir(old_cwd)


def _set_hydra_config(config: DictConfig) -> None:
    """``HydraConfig.instance().set_config(config)`` without its copy of the Hydra node: Hydra
    copies the node into a config of its own and makes ``config`` the copy's parent (so that
    it reads ``${...}`` of the job's config); here that config holds ``config``'s node itself.
    ``config`` is the job's own copy (`ComposingLauncher.job_config`), which nothing else
    changes, so the two cannot part."""
    OmegaConf.set_readonly(config.hydra, True)
    node = config._get_node("hydra")
    masked = DictConfig({})
    masked.__dict__["_content"]["hydra"] = node
    HydraConfig.instance().cfg = masked


def _without_hydra(config: DictConfig) -> DictConfig:
    """What Hydra gives the task, a copy of ``config`` less its ``hydra`` node, copied without
    copying that node first (the largest part of it)."""
    content = config.__dict__["_content"]
    config.__dict__["_content"] = {k: v for k, v in content.items() if k != "hydra"}
    try:
        return pickle.loads(pickle.dumps(config))  # a deep copy, faster than deepcopy
    finally:
        config.__dict__["_content"] = content


# YAML of a config's top-level entries (and of the Hydra node's), by their content: a sweep's
# jobs differ in a few of them. Bounded: the entries that change do so every job.
_YAML_PARTS: dict[tuple[str, str], str] = {}
_KEPT_PARTS = 256


def _yaml(node: Any) -> str:
    """``OmegaConf.to_yaml(node)``, byte for byte, from the YAML of each top-level entry (each
    child of ``hydra`` for the Hydra node): in block style, an entry's lines do not depend on
    its siblings; each is dumped below its own parents, so it wraps at the same column."""
    container = OmegaConf.to_container(node, resolve=False, enum_to_str=True)
    if not isinstance(container, dict) or not container:
        return _dump(container)
    if list(container) == ["hydra"] and isinstance(container["hydra"], dict) and container["hydra"]:
        parts = [_part({"hydra": {k: v}}, "hydra:\n") for k, v in container["hydra"].items()]
        return "hydra:\n" + "".join(parts)
    return "".join(_part({k: v}, "") for k, v in container.items())


def _part(entry: dict, head: str) -> str:
    key = (head, repr(entry))
    text = _YAML_PARTS.get(key)
    if text is None:
        text = _dump(entry).removeprefix(head)
        if len(_YAML_PARTS) >= _KEPT_PARTS:
            _YAML_PARTS.clear()
        _YAML_PARTS[key] = text
    return text


def _dump(container: Any) -> str:
    # as OmegaConf.to_yaml dumps
    return yaml.dump(
        container,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,
        Dumper=get_omega_conf_dumper(),
    )


def _is_basic(launcher: Any) -> bool:
    # by name: Hydra's plugin scan may import its plugin modules a second time
    kind = type(launcher)
    return f"{kind.__module__}.{kind.__qualname__}" == BASIC
