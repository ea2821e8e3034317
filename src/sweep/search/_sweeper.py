"""The Optuna sweep: ask a trial, launch it as a Hydra job, tell the study what it stored.

Many workers (local processes started with ``n_jobs``, or commands started by hand on other
machines) share one study through its storage; each asks for trials while the study's budget
(``n_trials`` counted trials) lasts. Asking is serialised by a file lock in the results store,
which every worker shares anyway, so the budget is never overshot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import TrialState
from tqdm.auto import tqdm

from sweep._files import locked
from sweep.cli import WORKER_ENV
from sweep.errors import ConfigError
from sweep.hashing import NOT_IN_KEY, mask_password
from sweep.search._layerwise import layer_params
from sweep.search._space import SearchSpace, overrides
from sweep.search._study import (
    STORAGE_ENV,
    StudySettings,
    counted_trials,
    create_study,
    is_dead,
    make_sampler,
    open_storage,
    worker_identity,
)
from sweep.store import DEFAULT_PATH, clean, load_results, read_row, row_id, write_trial

log = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# A running trial whose worker never recorded itself (it died between ask and that) is given
# up after this long; asking and recording take milliseconds.
UNCLAIMED_AFTER = dt.timedelta(minutes=2)


class OptunaSweep:
    """State and steps of one worker's sweep; the Hydra plugin is a thin shell around it."""

    def __init__(self, sweeper_cfg: DictConfig) -> None:
        self.sweeper_cfg = sweeper_cfg
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: Sequence[str]) -> list[Any]:
        from sweep.cli import fail

        try:
            settings, fixed = self._settings(arguments)
            if os.environ.get(WORKER_ENV, "0") != "0":
                # a local helper: the real storage URL comes from its parent, never from argv
                settings = dataclasses.replace(settings, storage=os.environ[STORAGE_ENV])
            # in-process jobs and helpers read the real URL here; nothing written holds it
            os.environ[STORAGE_ENV] = settings.storage
            _scrub_storage(self.config, settings.storage)
            storage = open_storage(settings.storage)
            worker = int(os.environ.get(WORKER_ENV, "0"))
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = create_study(settings, storage, seed_offset=0)
            check_unchanged(study, settings, fixed)
        except ConfigError as e:
            fail(str(e))
        store = Path(self.config.store.path)
        offset = register_worker(study, settings, store)
        study.sampler = make_sampler(settings.sampler, settings.space, seed_offset=offset)
        clean(store)  # what killed writers left behind more than an hour ago
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        _limit_threads(settings.n_jobs)

        if worker == 0:
            # under the lock that asks are made under: workers restarted together recover
            # each dead trial once, and no worker asks while a trial is being requeued
            with locked(store / f".optuna-{settings.study_name}.lock"):
                recovered = recover_interrupted(study, storage, store, settings)
            if recovered:
                print(
                    f"study {settings.study_name}: failed and requeued {recovered} trial(s) "
                    "left running by a worker that died"
                )
            helpers = self._spawn_workers(settings.n_jobs - 1, sweep_dir)
        else:
            helpers = []
        try:
            progress = worker == 0 and bool(self.config.progress)
            results, stop = self._work(study, settings, fixed, store, progress=progress)
        finally:
            for i, proc in enumerate(helpers, start=1):
                if proc.wait() != 0:
                    print(
                        f"worker {i} exited with code {proc.returncode}; its output is in "
                        f"{sweep_dir / f'worker-{i}.log'}",
                        file=sys.stderr,
                    )
        if worker == 0:
            print(summary(study, settings, store))
        if stop:
            fail(stop, code=1)
        return results

    def _settings(self, arguments: Sequence[str]) -> tuple[StudySettings, list[str]]:
        loader = self.hydra_context.config_loader
        return study_settings(self.sweeper_cfg, arguments, loader, self.config)

    def _work(self, study, settings: StudySettings, fixed, store: Path, progress: bool):
        uid = study.user_attrs["uid"]
        results = []
        bar = tqdm(
            total=settings.n_trials,
            desc=f"study {settings.study_name}",
            unit="trial",
            disable=not progress,
        )
        with bar:
            while True:
                bar.update(_finished(study) - bar.n)
                trial = ask_within_budget(study, settings, store)
                if trial is None:
                    break
                values = settings.space.sample(trial)
                job_overrides = [
                    *fixed,
                    *overrides(values),
                    f"optuna.study={settings.study_name}",
                    f"optuna.uid={uid}",
                    f"optuna.trial={trial.number}",
                    f"optuna.storage={_quoted(mask_password(settings.storage))}",
                ]
                [ret] = self.launcher.launch([job_overrides], initial_job_idx=trial.number)
                status, error = tell(study, trial, ret, settings, store)
                results.append(ret)
                # in a row across every worker of the study, not only this one's trials
                failures = failures_in_a_row(study) if status == TrialState.FAIL else 0
                if failures >= settings.max_failures:
                    bar.update(_finished(study) - bar.n)
                    return results, (
                        f"stopped after {failures} failed trials in a row "
                        f"(hydra.sweeper.max_failures={settings.max_failures}); last: {error}"
                    )
            bar.update(_finished(study) - bar.n)
        return results, None

    def _spawn_workers(self, count: int, sweep_dir: Path) -> list[subprocess.Popen]:
        if count <= 0:
            return []
        task = list(self.config.hydra.overrides.task)
        hydra_args = [
            o
            for o in self.config.hydra.overrides.hydra
            if not o.startswith(("hydra.sweeper.n_jobs=", "hydra.mode=", "hydra.sweep.dir="))
        ]
        cmd = [
            sys.executable,
            "-m",
            "sweep",
            "--multirun",
            *task,
            *hydra_args,
            f"hydra.sweep.dir='{sweep_dir}'",
        ]
        procs = []
        for i in range(1, count + 1):
            env = {**os.environ, WORKER_ENV: str(i), "SWEEP_THREADS": str(_threads(count + 1))}
            out = open(sweep_dir / f"worker-{i}.log", "w")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
        return procs


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
    return StudySettings.from_config(node, space), fixed


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


def register_worker(study: optuna.Study, settings: StudySettings, store: Path) -> int:
    """Make sure the study has a uid, and return what this worker adds to the sampler's seed.

    The uid (a study attribute, made by the first worker) names the study's rows in the store,
    so a study of the same name in another storage, or after its storage was deleted, never
    replaces them. The study counts the workers that ever started on it: the first keeps the
    configured seed, so a one-worker sweep is reproducible; every later one (a local helper,
    a worker started by hand or by a scheduler, a resume) offsets it by a hash of its own
    process (host, pid, start time), which no other worker shares, so none draws alike.
    Both are read and written under the store's lock.
    """
    store.mkdir(parents=True, exist_ok=True)
    with locked(store / f".optuna-{settings.study_name}.lock"):
        if "uid" not in study.user_attrs:
            study.set_user_attr("uid", uuid.uuid4().hex[:12])
        started = int(study.user_attrs.get("workers_started", 0))
        study.set_user_attr("workers_started", started + 1)
    if started == 0:
        return 0
    identity = json.dumps(worker_identity(), sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(identity).digest()[:4], "big") % 2**31


def ask_within_budget(study: optuna.Study, settings: StudySettings, store: Path):
    """A new trial, or ``None`` when the study's budget is spent (checked under a lock)."""
    store.mkdir(parents=True, exist_ok=True)
    with locked(store / f".optuna-{settings.study_name}.lock"):
        if counted_trials(study) >= settings.n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", worker_identity())
        return trial


def tell(
    study: optuna.Study, trial, ret, settings: StudySettings, store: Path
) -> tuple[TrialState, str]:
    """Tell the study what the job stored, or why it raised (then the store gets a row too)."""
    try:
        row = ret.return_value
    except Exception as e:  # bad input only this combination has (an interval's value)
        error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        trial.set_user_attr("error", error)
        write_failed_row(store, study, trial, error)
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL, error
    return tell_row(study, trial.number, row, settings, trial.set_user_attr)


def write_failed_row(store: Path, study: optuna.Study, trial, error: str) -> None:
    """A failed row for a trial whose job wrote none; ``trial`` is live or frozen."""
    uid = study.user_attrs.get("uid")
    rid = row_id(None, study.study_name, trial.number, uid)
    if read_row(store, rid) is not None:
        return
    write_trial(
        store,
        {
            "trial_key": trial.user_attrs.get("trial_key"),
            "status": "failed",
            "error": error,
            "method": trial.params.get("method"),
            "amount": trial.params.get("amount"),
            "started_at": trial.datetime_start,
            **trial.params,
            "optuna.study": study.study_name,
            "optuna.uid": uid,
            "optuna.trial": trial.number,
        },
        row_id=rid,
    )


def failures_in_a_row(study: optuna.Study) -> int:
    """How many of the study's last finished trials failed, by the time they finished."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=_FINISHED)
        if t.datetime_complete is not None and not t.user_attrs.get("interrupted")
    ]
    done.sort(key=lambda t: t.datetime_complete)
    count = 0
    for t in reversed(done):
        if t.state != TrialState.FAIL:
            break
        count += 1
    return count


def tell_row(
    study, number: int, row: dict, settings: StudySettings, set_attr
) -> tuple[TrialState, str]:
    if row["status"] == "complete":
        values = [row.get(o) for o in settings.objectives]
        if all(isinstance(v, int | float) and v == v for v in values):
            study.tell(number, values)
            return TrialState.COMPLETE, ""
        error = f"objective(s) {list(settings.objectives)} missing from the row"
    elif row["status"] == "pruned":
        study.tell(number, state=TrialState.PRUNED)
        return TrialState.PRUNED, ""
    else:
        error = row.get("error") or "failed"
    set_attr("error", error)
    study.tell(number, state=TrialState.FAIL)
    return TrialState.FAIL, error


def recover_interrupted(study: optuna.Study, storage, store: Path, settings: StudySettings) -> int:
    """Fail (in study and store) and requeue trials whose worker on this host has died.

    A trial whose row reached the store before the worker died is told from that row instead.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    requeued = 0
    now = dt.datetime.now()  # Optuna's trial times are naive local times
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if worker is None:
            # asked, but its worker died before it could say who it was
            if not (t.datetime_start and now - t.datetime_start > UNCLAIMED_AFTER):
                continue
            error = "interrupted: its worker died before it started the trial"
        elif is_dead(worker):
            error = f"interrupted: worker {worker['host']}:{worker['pid']} died while the trial ran"
        else:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)

        def set_attr(key, value, trial_id=trial_id):
            storage.set_trial_user_attr(trial_id, key, value)

        row = read_row(store, row_id(None, study.study_name, t.number, study.user_attrs.get("uid")))
        if row is not None:
            tell_row(study, t.number, row, settings, set_attr)
            continue
        set_attr("interrupted", True)
        set_attr("error", error)
        study.tell(t.number, state=TrialState.FAIL)
        write_failed_row(store, study, t, error)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        requeued += 1
    return requeued


def summary(study: optuna.Study, settings: StudySettings, store: Path) -> str:
    """The best trial (one objective) or the Pareto front, as a table with the store's columns."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(
        f"{states.count(s)} {s.name.lower()}"
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        if states.count(s)
    )
    head = (
        f"study {settings.study_name}: {len(states)} trials ({counts or 'none finished'}) "
        f"in {mask_password(settings.storage)}"
    )
    if TrialState.COMPLETE not in states:
        return head
    best = study.best_trials if settings.multi_objective else [study.best_trial]
    title = "Pareto front" if settings.multi_objective else "best trial"
    pairs = list(zip(settings.objectives, settings.directions, strict=True))
    goals = ", ".join(f"{d} {o}" for o, d in pairs)
    df = load_results(store)
    uid = study.user_attrs.get("uid")
    ours = (df["optuna.study"] == settings.study_name) & (df.get("optuna.uid") == uid)
    df = df[ours].drop_duplicates("optuna.trial", keep="last")
    df = df.set_index("optuna.trial").loc[[t.number for t in best]]
    columns = ["trial_key", "method", "amount", "sparsity", "acc_finetuned", *settings.objectives]
    first, direction = pairs[0]
    table = df[list(dict.fromkeys(columns))].sort_values(first, ascending=direction == "minimize")
    table.index.name = "trial"
    text = f"{head}\n{title} ({goals}):\n{table.to_string(float_format=lambda v: f'{v:.4f}')}"
    kept = df.loc[table.index, "model_file"].notna() if "model_file" in df else None
    if kept is not None and kept.any():
        key = table["trial_key"][kept].iloc[0]
        path = "" if str(store) == DEFAULT_PATH else f", path={str(store)!r}"
        text += f"\nload a trial's pruned model: sweep.load_model({key!r}{path})"
    return text


def _scrub_storage(config: DictConfig, url: str) -> None:
    """Mask the storage URL's secrets in the sweep's config, before anything saves it.

    Hydra recomposes every job from this config's recorded overrides and saves them in the
    job's folder (``.hydra/hydra.yaml``); multirun.yaml and helper workers' command lines
    come from it too. The real URL travels in the environment instead (``STORAGE_ENV``).
    """
    masked = mask_password(url)
    if masked == url:
        return
    with read_write(config), open_dict(config):
        config.hydra.sweeper.storage = masked
        config.hydra.overrides.hydra = [
            f"hydra.sweeper.storage={_quoted(masked)}"
            if o.startswith("hydra.sweeper.storage=")
            else o
            for o in config.hydra.overrides.hydra
        ]


def _quoted(value: str) -> str:
    """A Hydra override value that stays one string whatever quotes it holds."""
    # Hydra unescapes backslashes only before a quote or at the end of a quoted string
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"


def _param_from_sweep(o) -> dict[str, Any]:
    if o.is_choice_sweep() or o.is_range_sweep():
        return {"choices": list(o.sweep_iterator())}
    if o.is_interval_sweep():
        interval = o.value()
        return {"low": interval.start, "high": interval.end}
    raise ConfigError(
        f"{o.input_line}: accepted sweeps are a,b,c | choice(...) | range(...) | interval(a,b)"
    )


def _finished(study: optuna.Study) -> int:
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=_FINISHED)
        if not t.user_attrs.get("interrupted")
    )


def _threads(n_jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // n_jobs)


def _limit_threads(n_jobs: int) -> None:
    threads = int(os.environ.get("SWEEP_THREADS", _threads(n_jobs)))
    if n_jobs > 1 or "SWEEP_THREADS" in os.environ:
        import torch

        torch.set_num_threads(threads)
