from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep._files import locked
from sweep.errors import ConfigError
from sweep.hashing import mask_password
from sweep.search._space import SearchSpace
from sweep.store import LABEL_COLUMNS, METRIC_COLUMNS

SAMPLERS = ("tpe", "random", "grid", "nsga2", "qmc")
# How a sweep hands its storage URL to its jobs and local helper workers: the environment,
# never a file or a command line (the URL may hold a password).
STORAGE_ENV = "SWEEP_OPTUNA_STORAGE"
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "threshold")
# Metrics a study may optimise: every fixed column of a trial row that is a number.
OBJECTIVES = tuple(c for c in METRIC_COLUMNS if c not in LABEL_COLUMNS)


@dataclass(frozen=True)
class StudySettings:
    """What ``hydra.sweeper`` says about the study, checked before anything is created."""

    study_name: str
    storage: str
    n_trials: int
    n_jobs: int
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    sampler: Mapping[str, Any]
    pruner: Mapping[str, Any]
    max_failures: int
    space: SearchSpace

    @classmethod
    def from_config(cls, node: Mapping[str, Any], space: SearchSpace) -> StudySettings:
        objectives = tuple(node.get("objectives") or ())
        directions = tuple(node.get("directions") or ())
        settings = cls(
            study_name=str(node.get("study_name") or ""),
            storage=str(node.get("storage") or ""),
            n_trials=node.get("n_trials"),
            n_jobs=node.get("n_jobs"),
            objectives=objectives,
            directions=directions,
            sampler=dict(node.get("sampler") or {"name": "tpe"}),
            pruner=dict(node.get("pruner") or {"name": "none"}),
            max_failures=node.get("max_failures"),
            space=space,
        )
        settings.check()
        return settings

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def check(self) -> None:
        where = "hydra.sweeper"
        if not _STUDY_NAME.fullmatch(self.study_name):
            # it names files (rows, locks) and goes into URLs and shell commands
            raise ConfigError(
                f"{where}.study_name={self.study_name!r} is not valid; accepted: letters, "
                "digits, '_', '-' and '.', starting with a letter or digit (up to 100)"
            )
        if not self.storage:
            raise ConfigError(f"{where}.storage is empty; accepted: a database URL or a file path")
        for key in ("n_trials", "n_jobs", "max_failures"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{key}={value!r}; accepted: an int >= 1")
        if not self.objectives:
            raise ConfigError(
                f"{where}.objectives is empty; accepted: metric columns such as acc_finetuned"
            )
        for name in self.objectives:
            if name not in OBJECTIVES:
                raise ConfigError(
                    f"{where}.objectives names {name!r}, not a metric; "
                    f"accepted: {', '.join(OBJECTIVES)}"
                )
        if len(self.directions) != len(self.objectives):
            raise ConfigError(
                f"{where}.directions has {len(self.directions)} entries for "
                f"{len(self.objectives)} objectives; accepted: one maximize|minimize per objective"
            )
        for d in self.directions:
            if d not in ("maximize", "minimize"):
                raise ConfigError(f"{where}.directions has {d!r}; accepted: maximize | minimize")
        seed = self.sampler.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(
                f"{where}.sampler.seed={seed!r} is not valid; accepted: an int, or null for "
                "an unseeded sampler"
            )
        sampler = self.sampler.get("name")
        if sampler not in SAMPLERS:
            raise ConfigError(
                f"{where}.sampler.name={sampler!r} is unknown; accepted: {' | '.join(SAMPLERS)}"
            )
        pruner = self.pruner.get("name")
        if pruner not in PRUNERS:
            raise ConfigError(
                f"{where}.pruner.name={pruner!r} is unknown; accepted: {' | '.join(PRUNERS)}"
            )
        if self.multi_objective and pruner != "none":
            raise ConfigError(
                f"{where}.pruner.name={pruner!r} with {len(self.objectives)} objectives: Optuna "
                "cannot prune multi-objective trials; "
                "accepted: hydra/sweeper/pruner=none, or one objective"
            )
        make_sampler(self.sampler, self.space, seed_offset=0)  # bad kwargs fail now
        make_pruner(self.pruner)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a database URL (``sqlite:///...``, ``postgresql://...``,
    ``mysql://...``) or, for anything without ``://``, a journal file path."""
    try:
        if "://" not in url:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            # Absolute: Optuna's lock is a symlink to this path, which a relative path would
            # leave dangling, and a dangling lock left by a killed worker spins every later
            # run forever instead of being released after its grace period.
            path = Path(url).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        engine_kwargs = {}
        if url.startswith("sqlite:///"):
            database = Path(url.removeprefix("sqlite:///"))
            database.parent.mkdir(parents=True, exist_ok=True)
            # several local workers share one file: wait for its lock instead of failing, and
            # create the schema one at a time (workers starting together on a new file raced
            # on alembic_version: "UNIQUE constraint failed")
            engine_kwargs = {"connect_args": {"timeout": 60}}
            with locked(database.with_name(f".{database.name}.lock")):
                return _retry_schema_race(
                    lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
                )
        return _retry_schema_race(
            lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        )
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"hydra.sweeper.storage={mask_password(url)!r} cannot be opened ({reason}); accepted: "
            "sqlite:///file.db, postgresql://user:pass@host/db, mysql://..., or a journal file path"
        ) from None


def _retry_schema_race(open_rdb, attempts: int = 5):
    # Workers starting together on an empty database race on creating the schema (CREATE
    # TABLE IF NOT EXISTS is not atomic in PostgreSQL; two may insert alembic's version row);
    # the losers find the schema made on a retry.
    for attempt in range(attempts):
        try:
            return open_rdb()
        except Exception as e:
            raced = "already exists" in str(e) or "UNIQUE constraint failed" in str(e)
            if attempt == attempts - 1 or not raced:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def make_sampler(
    spec: Mapping[str, Any], space: SearchSpace, seed_offset: int
) -> optuna.samplers.BaseSampler:
    name = spec.get("name", "tpe")
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "seed")}
    seed = spec.get("seed")
    seed = None if seed is None else int(seed) + seed_offset
    classes = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "qmc": optuna.samplers.QMCSampler,
    }
    try:
        if name == "grid":
            return optuna.samplers.GridSampler(space.grid(), seed=seed, **kwargs)
        return classes[name](seed=seed, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"hydra.sweeper.sampler ({name}): {e}") from None


def make_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    name = spec.get("name", "none")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    classes = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "threshold": optuna.pruners.ThresholdPruner,
    }
    try:
        return classes[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"hydra.sweeper.pruner ({name}): {e}") from None


def create_study(
    settings: StudySettings, storage: optuna.storages.BaseStorage, seed_offset: int
) -> optuna.Study:
    try:
        return optuna.create_study(
            storage=storage,
            study_name=settings.study_name,
            directions=list(settings.directions),
            sampler=make_sampler(settings.sampler, settings.space, seed_offset),
            pruner=make_pruner(settings.pruner),
            load_if_exists=True,
        )
    except ValueError as e:
        raise ConfigError(f"study {settings.study_name!r}: {e}") from None


# --- who runs a trial, so that a rerun can tell a dead worker's trial from a live one's -------


def worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def is_dead(worker: Mapping[str, Any] | None) -> bool:
    """True when ``worker`` ran on this host and that process no longer exists."""
    if not worker or worker.get("host") != socket.gethostname():
        return False
    pid = int(worker["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _process_start(pid) != worker.get("start")  # the pid was reused


def _process_start(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up the budget: finished ones (bar interrupted ones) and running ones."""
    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted"):
            continue
        n += 1
    return n
