from __future__ import annotations

import atexit
import hashlib
import importlib.util
import inspect
import os
import re
import socket
import sqlite3
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep._files import locked
from sweep.errors import ConfigError
from sweep.hashing import mask_password
from sweep.search._space import SearchSpace
from sweep.store import LABEL_COLUMNS, METRIC_COLUMNS

SAMPLERS = ("tpe", "random", "grid", "nsga2", "qmc")
# Optuna's gRPC storage proxy (Optuna >= 4.2), which has no URL form of its own
GRPC = "grpc://"
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
    # RDB storages: seconds between a running trial's heartbeats, and without one before the
    # trial counts as dead (Optuna's own names); None: no heartbeat
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    # local workers per visible GPU: what n_jobs=auto starts (each worker pinned to one GPU)
    workers_per_gpu: int = 1
    # run a parameter set a finished or running trial has run already (else given back unrun)
    allow_repeats: bool = False

    @classmethod
    def from_config(cls, node: Mapping[str, Any], space: SearchSpace) -> StudySettings:
        objectives = tuple(node.get("objectives") or ())
        directions = tuple(node.get("directions") or ())
        settings = cls(
            study_name=str(node.get("study_name") or ""),
            storage=_home_expanded(str(node.get("storage") or "")),
            n_trials=node.get("n_trials"),
            n_jobs=_n_jobs(node.get("n_jobs"), node.get("workers_per_gpu", 1)),
            objectives=objectives,
            directions=directions,
            sampler=dict(node.get("sampler") or {"name": "tpe"}),
            pruner=dict(node.get("pruner") or {"name": "none"}),
            max_failures=node.get("max_failures"),
            space=space,
            heartbeat_interval=node.get("heartbeat_interval"),
            grace_period=node.get("grace_period"),
            workers_per_gpu=node.get("workers_per_gpu", 1),
            allow_repeats=node.get("allow_repeats", False),
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
        if self.storage.startswith(GRPC):
            grpc_address(self.storage)
        for key in ("n_trials", "n_jobs", "max_failures", "workers_per_gpu"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                accepted = "an int >= 1" + (", or auto" if key == "n_jobs" else "")
                raise ConfigError(f"{where}.{key}={value!r}; accepted: {accepted}")
        if not isinstance(self.allow_repeats, bool):
            raise ConfigError(
                f"{where}.allow_repeats={self.allow_repeats!r}; accepted: true | false"
            )
        for key in ("heartbeat_interval", "grace_period"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(
                    f"{where}.{key}={value!r}; accepted: an int >= 1 (seconds) or null"
                )
        if self.grace_period is not None and self.heartbeat_interval is None:
            raise ConfigError(
                f"{where}.grace_period={self.grace_period} without a heartbeat_interval; "
                "accepted: both, or heartbeat_interval alone (grace_period: twice it)"
            )
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"{where}.grace_period={self.grace_period} is not longer than heartbeat_interval="
                f"{self.heartbeat_interval}: live trials would be failed; accepted: a grace_period "
                "longer than the interval"
            )
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


def visible_gpus() -> int:
    """How many CUDA GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpu_count(n_jobs: int, trial_cfg: Any) -> None:
    """Refuse ``n_jobs`` workers of ``distributed.nproc`` GPUs each when they need more GPUs
    than are visible (a trial on CUDA only; each local worker takes its own block of GPUs).

    Raises:
        ConfigError: One line with the counts and what is accepted.
    """
    from sweep.devices import resolve_device

    nproc = (trial_cfg.get("distributed") or {}).get("nproc", 1)
    if nproc == 1 or resolve_device(str(trial_cfg.device)).type != "cuda":
        return
    visible = visible_gpus()
    if n_jobs * nproc > visible:
        raise ConfigError(
            f"hydra.sweeper.n_jobs={n_jobs} workers x distributed.nproc={nproc} need "
            f"{n_jobs * nproc} GPUs and {visible} are visible; accepted: n_jobs x nproc <= "
            f"{visible}"
        )


def gpu_for_worker(worker: int, gpus: int, nproc: int = 1) -> int | None:
    """The GPU local worker ``worker`` (0 for the first) runs on: spread round-robin over the
    ``gpus`` visible ones, so that every GPU gets a worker before any gets two. With trials of
    ``nproc`` ranks, it is the index of a block of ``nproc`` GPUs (``device=cuda:K`` is block K,
    `sweep.distributed`); ``None`` when there is no GPU, or fewer than ``nproc``.

    Example:
        >>> [gpu_for_worker(i, 2) for i in range(5)], gpu_for_worker(0, 0)
        ([0, 1, 0, 1, 0], None)
        >>> [gpu_for_worker(i, 8, nproc=4) for i in range(3)], gpu_for_worker(9, 8, nproc=8)
        ([0, 1, 0], 0)
    """
    blocks = gpus // nproc
    return worker % blocks if blocks else None


def _n_jobs(value: Any, workers_per_gpu: Any) -> Any:
    """``auto``: ``workers_per_gpu`` workers per visible GPU, one without a GPU."""
    if value != "auto":
        return value
    if isinstance(workers_per_gpu, bool) or not isinstance(workers_per_gpu, int):
        return value  # refused by check()
    return max(1, visible_gpus() * workers_per_gpu)


def _home_expanded(url: str) -> str:
    """``sqlite:///~/st/optuna.db`` (the default under ``store.path='~/st'``) with the home
    folder in its path: SQLAlchemy would make a folder named ``~``."""
    if url.startswith("sqlite:///~"):
        path, query, rest = url.removeprefix("sqlite:///").partition("?")
        return f"sqlite:///{os.path.expanduser(path)}{query}{rest}"
    return url


def check_storage_folder(url: str, store: str | os.PathLike) -> None:
    """Refuse a SQLite database or a journal file whose folder does not exist, unless it is the
    store's folder (or inside it), which the sweep makes: any other missing folder is a typo,
    and `open_storage` would create it, a database and its lock files.

    Raises:
        ConfigError: Naming the URL and the missing folder.
    """
    if "://" not in url:
        folder = Path(url).expanduser().parent
    elif url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        folder = Path(url.removeprefix("sqlite:///").partition("?")[0]).expanduser().parent
    else:
        return
    folder, store = folder.resolve(), Path(store).expanduser().resolve()
    if folder.is_dir() or folder == store or folder.is_relative_to(store):
        return
    raise ConfigError(
        f"hydra.sweeper.storage={mask_password(url)!r}: folder {str(folder)!r} does not exist; "
        "accepted: a file in an existing folder, or in store.path (made by the sweep)"
    )


def open_storage(
    url: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    on_stale: Any = None,
    setting: str = "hydra.sweeper.storage",
) -> optuna.storages.BaseStorage:
    """An Optuna storage from a database URL (``sqlite:///...``, ``postgresql://...``,
    ``mysql://...``), Optuna's gRPC storage proxy (``grpc://host:port``, see `sweep.proxy`) or,
    for anything without ``://``, a journal file path.

    On a database, ``heartbeat_interval`` turns on Optuna's heartbeat: a trial with no heartbeat
    for ``grace_period`` seconds is stale, and `optuna.storages.fail_stale_trials` fails it and
    calls ``on_stale(study, frozen_trial)``. Journal files have no heartbeat. ``setting``: where
    the URL came from, for the message of one that cannot be opened."""
    url = _home_expanded(url)
    heartbeat = {}
    if heartbeat_interval is not None:
        heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
        if on_stale is not None:
            heartbeat[_STALE_CALLBACK] = on_stale
    if url.startswith(GRPC):
        return _grpc_proxy(url)
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
                write_ahead(database)
                return _retry_schema_race(
                    lambda: _rdb_storage(url, engine_kwargs=engine_kwargs, **heartbeat)
                )
        database_url = driver_url(url)
        return _retry_schema_race(
            lambda: _rdb_storage(database_url, engine_kwargs=engine_kwargs, **heartbeat)
        )
    except Exception as e:
        raise ConfigError(_cannot_open(url, e, setting)) from None


def driver_url(url: str) -> str:
    """``url`` with the PostgreSQL driver the ``postgres`` extra installs (psycopg 3) named,
    where this SQLAlchemy would take ``postgresql://`` for psycopg2 and that is missing:
    SQLAlchemy 2.0's default (the newest on Python 3.10); 2.1 takes psycopg 3 itself."""
    scheme = "postgresql://"
    if not url.startswith(scheme):
        return url  # another database, or a driver named (postgresql+psycopg2://)
    from sqlalchemy.dialects import postgresql

    default = postgresql.dialect.driver
    if importlib.util.find_spec(default) is not None or importlib.util.find_spec("psycopg") is None:
        return url
    return "postgresql+psycopg://" + url.removeprefix(scheme)


def probe_storage(url: str) -> None:
    """Connect once to a database storage and close, creating nothing, so that one that cannot
    be opened is refused before a store is made; a SQLite file, a journal file and the gRPC
    proxy are left to `open_storage` (opening them writes, or they check themselves).

    Raises:
        ConfigError: As `open_storage` says it.
    """
    if url.startswith((GRPC, "sqlite:///")) or "://" not in url:
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(driver_url(url))
        if not url.startswith("sqlite:"):  # sqlite://x.db: its URL alone is refused
            with engine.connect():
                pass
        engine.dispose()
    except Exception as e:
        raise ConfigError(_cannot_open(url, e)) from None


def _cannot_open(url: str, e: Exception, setting: str = "hydra.sweeper.storage") -> str:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (
        f"{setting}={mask_password(url)!r} cannot be opened ({reason}); accepted: "
        "sqlite:///file.db, postgresql://user:pass@host/db, mysql://..., grpc://host:port, or "
        "a journal file path"
    )


_GRPC_ACCEPTED = "accepted: grpc://host:port of a proxy started with python -m sweep.proxy"


def grpc_address(url: str) -> tuple[str, int]:
    """(host, port) of a ``grpc://host:port`` storage URL.

    Raises:
        ConfigError: The URL names no host and port.
    """
    host, _, port = url.removeprefix(GRPC).rstrip("/").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"hydra.sweeper.storage={url!r} names no host:port; {_GRPC_ACCEPTED}")
    return host, int(port)


def _grpc_proxy(url: str, timeout: float = 30.0) -> optuna.storages.BaseStorage:
    """A client of the gRPC storage proxy at ``grpc://host:port``, once the proxy answers."""
    host, port = grpc_address(url)
    from optuna.storages import GrpcStorageProxy

    try:
        with warnings.catch_warnings():  # experimental since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = GrpcStorageProxy(host=host, port=port)
    except ImportError as e:  # grpcio is optional
        raise ConfigError(
            f"hydra.sweeper.storage={url!r} needs grpcio ({e}); accepted: pip install "
            "'prune-sweep[grpc]'"
        ) from None
    try:
        proxy.wait_server_ready(timeout=timeout)
    except Exception:
        proxy.close()
        raise ConfigError(
            f"hydra.sweeper.storage={url!r}: no proxy answered at {host}:{port} within "
            f"{timeout:.0f} s; {_GRPC_ACCEPTED}"
        ) from None
    return proxy


def has_lock(url: str) -> bool:
    """Whether workers on ``url`` can hold a `study_lock`: every storage but the gRPC proxy,
    which passes Optuna's storage calls only (`ask_within_budget` then takes tickets)."""
    return not url.startswith(GRPC)


# File systems whose files only processes on this machine open: there SQLite can log in WAL
# mode, which needs memory shared by every process using the database ("WAL does not work over
# a network filesystem", SQLite's docs). Anything else (nfs, cifs, lustre, fuse...) keeps the
# rollback journal.
_LOCAL_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "tmpfs", "ramfs", "overlay"}
)


def write_ahead(database: Path) -> str | None:
    """Put a SQLite database on a local file system in write-ahead-log mode, and one on any
    other file system back in rollback-journal mode (its workers may run on other machines);
    return the mode it is in, or ``None`` where it was left as it was.

    In WAL mode a commit appends to one log file and syncs it once, instead of writing,
    syncing and deleting a rollback journal: 0.3 ms instead of 1.1 ms on this project's CI
    disk, and a small trial writes about 11 times between its ask and its tell. Durability
    is SQLite's default (``synchronous=FULL``): a committed trial survives a crash or a power
    cut. The mode is kept in the file, so every later connection uses it: other workers,
    ``optuna-dashboard``.

    While a sweep runs, the database is the ``.db`` file and its ``-wal`` file together; when
    the process ends, what it wrote is folded into the ``.db`` file (`_fold_logs`), so that
    the file alone, copied anywhere, holds every trial. A worker killed mid-sweep leaves its
    last commits in the ``-wal`` file, which the next connection to the database reads.
    """
    local = file_system(database) in _LOCAL_FILE_SYSTEMS
    if not local and not _in_wal_mode(database):
        return None
    try:
        with closing(sqlite3.connect(database, timeout=60)) as connection:
            wanted = "WAL" if local else "DELETE"
            mode = connection.execute(f"PRAGMA journal_mode={wanted}").fetchone()[0]
    except sqlite3.Error:  # not a database, or held: Optuna says what is wrong, as before
        return None
    if mode == "wal":
        if not _LOGGED:
            atexit.register(_fold_logs)
        _LOGGED.add(database.expanduser().resolve())
    return mode


def _in_wal_mode(database: Path) -> bool:
    """Whether a SQLite file's header says WAL mode (its read and write versions, bytes 18
    and 19, are 2), read without opening it as a database."""
    try:
        with open(database, "rb") as file:
            return file.read(20)[18:20] == b"\x02\x02"
    except OSError:
        return False


_LOGGED: set[Path] = set()  # the databases `write_ahead` put in WAL mode in this process


def _fold_logs() -> None:
    """Copy what the write-ahead logs of `_LOGGED` hold into their databases and empty the
    logs. It waits on no other worker (no busy timeout: where one is writing or reading, as
    much is copied as can be, and that worker's own exit folds in the rest)."""
    for database in _LOGGED:
        try:
            # mode=rw: a database deleted since is not made anew, empty
            uri = f"{database.as_uri()}?mode=rw"
            with closing(sqlite3.connect(uri, uri=True, timeout=0)) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass


def file_system(path: Path, table: Path = Path("/proc/self/mounts")) -> str | None:
    """The type of the file system ``path`` is on (``ext4``, ``nfs4``...), from the mount
    table (Linux); ``None`` where there is none to read."""
    try:
        mounts = table.read_text().splitlines()
    except OSError:
        return None
    path = path.expanduser().resolve()
    best, kind = -1, None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        # spaces and tabs in a mount point are octal escapes (\040); a later mount on the
        # same point hides the earlier one
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1]))
        if (path == point or path.is_relative_to(point)) and len(point.parts) >= best:
            best, kind = len(point.parts), fields[2]
    return kind


def _rdb_storage(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():  # the heartbeat is experimental since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **kwargs)


# Optuna 4.x calls it failed_trial_callback, 5.x heartbeat_stale_trial_callback
_STALE_CALLBACK = (
    "heartbeat_stale_trial_callback"
    if "heartbeat_stale_trial_callback"
    in inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    else "failed_trial_callback"
)


@contextmanager
def study_lock(storage: optuna.storages.BaseStorage, url: str, study_name: str) -> Iterator[None]:
    """Hold the study's lock, kept where the study is, so that workers need share nothing else:
    a PostgreSQL advisory lock or a MySQL named lock (released by the server when a holder's
    connection dies), a file lock beside a SQLite database or a journal file (one machine,
    or a file system every worker sees).

    Asking for a trial within the budget, registering a worker and recovering dead workers'
    trials happen under it, so the budget is never overshot however many workers ask.
    Through the gRPC proxy there is no lock (`has_lock`): the block runs unlocked.
    """
    if not has_lock(url):
        yield
        return
    digest = hashlib.sha256(f"prune-sweep:{study_name}".encode()).digest()
    engine = getattr(storage, "engine", None)
    dialect = engine.dialect.name if engine is not None else None
    if dialect in ("postgresql", "mysql"):
        from sqlalchemy import text

        if dialect == "postgresql":
            key = {"k": int.from_bytes(digest[:8], "big", signed=True)}
            take, release = "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)"
        else:
            key = {"k": f"prune-sweep-{digest.hex()[:40]}"}
            take, release = "SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)"
        with engine.connect() as connection:
            connection.execute(text(take), key)
            try:
                yield
            finally:
                connection.execute(text(release), key)
        return
    if "://" not in url:
        file = Path(url).expanduser().resolve()
    elif url.startswith("sqlite:///"):
        file = Path(url.removeprefix("sqlite:///")).expanduser().resolve()
    else:
        raise ConfigError(
            f"hydra.sweeper.storage={mask_password(url)!r}: no lock for this storage; accepted: "
            "postgresql://, mysql://, sqlite:/// or a journal file path"
        )
    file.parent.mkdir(parents=True, exist_ok=True)
    with locked(file.with_name(f".{file.name}.{digest.hex()[:16]}.lock")):
        yield


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
    # a grid's order and a scrambled QMC sequence are the study's, shared by every worker:
    # with seeds of their own, grid point 4 was another point in each (some ran twice, some
    # never), as Optuna says for distributed grid and QMC sampling
    offset = 0 if name in ("grid", "qmc") else seed_offset
    seed = None if seed is None else int(seed) + offset
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
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": _process_start(os.getpid()),
        "boot": _read("/proc/sys/kernel/random/boot_id"),
        "pidns": _link("/proc/self/ns/pid"),
    }


def is_dead(worker: Mapping[str, Any] | None) -> bool:
    """True when ``worker`` ran on this host and that process no longer exists: its pid is
    gone or reused, or the machine has booted since. A worker in another PID namespace of
    this kernel (a container sharing the host's name, as with host networking) cannot be seen
    from here: never dead, heartbeats tell."""
    if not worker or worker.get("host") != socket.gethostname():
        return False
    if worker.get("boot") and worker["boot"] != _read("/proc/sys/kernel/random/boot_id"):
        return True  # every process of that boot is gone
    if worker.get("pidns") and worker["pidns"] != _link("/proc/self/ns/pid"):
        return False
    pid = int(worker["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _process_start(pid) != worker.get("start")  # the pid was reused


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks


# A study user attribute per trial failed as stale: the trial itself is finished by then, and
# Optuna refuses to change a finished trial's attributes.
STALE_PREFIX = "interrupted-"
# The user attribute of a trial asked beyond the budget, failed unrun (`keep_ticket`)
OVER_BUDGET = "over_budget"


# The user attribute of a trial whose sampled parameters repeat another trial's: given back unrun
REPEAT_OF = "repeat_of"


def stale_trials(study: optuna.Study) -> dict[int, str]:
    """Trial number -> why, for the trials failed because their heartbeat stopped."""
    attrs = study.user_attrs
    return {int(k[len(STALE_PREFIX) :]): v for k, v in attrs.items() if k.startswith(STALE_PREFIX)}


def interrupted(trial: FrozenTrial, stale: Mapping[int, str]) -> bool:
    """Whether ``trial`` failed because its worker died (it uses no budget: it runs again)."""
    return trial.state == TrialState.FAIL and (
        bool(trial.user_attrs.get("interrupted")) or trial.number in stale
    )


def over_budget(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was asked beyond the budget and given back unrun (`keep_ticket`)."""
    return bool(trial.user_attrs.get(OVER_BUDGET))


def given_back(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was given back unrun: asked beyond the budget (`over_budget`), or
    sampled with the parameters of a trial that ran (`REPEAT_OF`). It has no row."""
    return over_budget(trial) or REPEAT_OF in trial.user_attrs


def counts(trial: FrozenTrial, stale: Mapping[int, str]) -> bool:
    """Whether ``trial`` uses budget: not failed because its worker died (it runs again) nor
    given back unrun (`given_back`)."""
    return not interrupted(trial, stale) and not given_back(trial)


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up the budget: finished ones (bar interrupted ones) and running ones."""
    stale = stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if t.state != TrialState.WAITING and counts(t, stale))


def keep_ticket(study: optuna.Study, number: int, n_trials: int) -> bool:
    """Whether the trial just asked, ``number``, is within the budget of ``n_trials``, where
    no lock serialises asking (`has_lock`): trial numbers are the tickets.

    The trial is kept when fewer than ``n_trials`` trials with a lower number count (waiting
    ones included: they will run). Numbers are given out in order, so every trial that ends up
    kept below a kept trial was already there when that trial was checked: the kept trials
    never exceed the budget. A trial that is not kept is failed at once, unrun, with
    `OVER_BUDGET` set; it uses no budget (`counted_trials`) and has no row.
    """
    stale = stale_trials(study)
    below = sum(
        1 for t in study.get_trials(deepcopy=False) if t.number < number and counts(t, stale)
    )
    if below < n_trials:
        return True
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    storage.set_trial_user_attr(trial_id, OVER_BUDGET, True)
    storage.set_trial_user_attr(
        trial_id,
        "error",
        "over budget: other workers took the study's last trials at the same moment; not run",
    )
    storage.set_trial_state_values(trial_id, TrialState.FAIL)
    return False
