"""Trials over several processes with torch.distributed: NCCL on CUDA (one GPU each), gloo on
the CPU.

``distributed.nproc=N`` runs a trial as N ranks. From ``python -m sweep`` (or a sweep's worker,
or ``run_trial`` in a notebook) the calling process is rank 0 and spawns the other N-1 for the
trial; under ``torchrun`` the ranks are the processes torchrun made (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), and torchrun's count wins over ``distributed.nproc=1``.

Every rank runs the same pipeline (`sweep.trial`). Rank 0 alone loads or trains the dense
baseline and broadcasts it; it alone computes data-driven importance scores, and the pruned
weights and masks are broadcast from it after every pruning step (`sync`), so every rank holds
rank 0's masks. Each rank reads its part of every global batch (`sweep.data.shard`);
gradients are summed over the ranks after each backward pass (`sum_gradients`), so that an
optimizer step is the one of the global batch; BatchNorm running statistics are averaged over
the ranks (`average_batchnorm`); evaluation sums the correct counts (`all_sum`). Rank 0 alone
writes: the row, the model file, the per-layer rows, the baseline cache. The other ranks
("followers") write nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweep.devices import resolve_device
from sweep.errors import ConfigError, TrialFailed

if TYPE_CHECKING:
    from sweep.data import Dataset

__all__ = [
    "Ranks",
    "all_sum",
    "average_batchnorm",
    "check",
    "is_follower",
    "launched",
    "rank_failure",
    "ranks",
    "shard",
    "share_baseline",
    "sum_gradients",
    "sync",
    "world_size",
]

log = logging.getLogger(__name__)

# Set in the processes a trial spawns (with RANK, WORLD_SIZE...): their GPU is picked as the
# trial's rank 0 picks them, not as torchrun's LOCAL_RANK
_SPAWNED_ENV = "SWEEP_DDP_SPAWNED"


@dataclass(frozen=True)
class Ranks:
    """This process's place in a trial's process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


# the group of the trial under way in this process (world_size 1: none)
_current = Ranks()
# the spawned ranks' queue to their rank 0 (`_helper`), and why a spawned rank failed
_to_lead: Any = None
_failure: str | None = None


def check(cfg: DictConfig) -> None:
    """Refuse ``distributed`` settings that cannot work with the rest of ``cfg``, in one line,
    before anything is written.

    Raises:
        ConfigError: ``nproc`` or ``timeout_s`` not an int >= 1; a ``distributed.nproc``
            other than 1 that differs from torchrun's ``WORLD_SIZE``; a global batch size not
            divisible by the ranks; more GPUs than are visible; an Optuna sweep under torchrun.
    """
    node = cfg.get("distributed") or {}
    for key, accepted in (("nproc", "an int >= 1 (1: one process)"), ("timeout_s", "an int >= 1")):
        value = node.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"distributed.{key}={value!r} is out of range; accepted: {accepted}")
    env = launched()
    nproc = node.get("nproc", 1)
    if env is not None and nproc not in (1, env.world_size):
        raise ConfigError(
            f"distributed.nproc={nproc} but torchrun started {env.world_size} processes "
            f"(WORLD_SIZE); accepted: distributed.nproc={env.world_size}, or 1 (torchrun's "
            "count wins)"
        )
    world = world_size(cfg)
    if world == 1:
        return
    if env is not None and not spawned() and cfg.optuna.study is not None:
        raise ConfigError(
            "an Optuna sweep under torchrun: every rank would run its own sweep; accepted: "
            "python -m sweep -m ... distributed.nproc=N (each trial spawns its ranks)"
        )
    batch = cfg.finetune.batch_size
    if batch % world:
        raise ConfigError(
            f"finetune.batch_size={batch} is not divisible by the {world} ranks (the global "
            f"batch is split evenly); accepted: a multiple of {world}"
        )
    device = resolve_device(str(cfg.device))
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        first, last = _gpus(device, world, env)
        if last >= visible:
            raise ConfigError(
                f"distributed.nproc={world} with device={cfg.device} needs GPUs cuda:{first} to "
                f"cuda:{last} and {visible} are visible; accepted: nproc x (N+1) <= {visible} "
                "for device=cuda:N (N=0 for cuda and auto)"
            )


def world_size(cfg: DictConfig) -> int:
    """How many ranks run the trial ``cfg``: torchrun's ``WORLD_SIZE`` when launched by it,
    else ``distributed.nproc``."""
    env = launched()
    return (
        env.world_size if env is not None else int((cfg.get("distributed") or {}).get("nproc", 1))
    )


def launched() -> Ranks | None:
    """The rank torchrun (or a trial's rank 0) started this process as, from the environment;
    ``None`` outside such a group (or in a group of one)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return Ranks(
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
    )


def spawned() -> bool:
    """Whether a trial's rank 0 started this process as one of its ranks (not torchrun)."""
    return bool(os.environ.get(_SPAWNED_ENV))


def is_follower() -> bool:
    """Whether this process is a rank other than 0 of a trial: it writes nothing."""
    env = launched()
    return env is not None and env.rank != 0


@contextmanager
def ranks(
    cfg: DictConfig, device: torch.device, trial: Callable[[DictConfig], dict]
) -> Iterator[torch.device]:
    """Join the trial's process group for the duration of the block; the trial's ``device`` as
    this rank's. One rank: the block runs as without it. ``trial`` is what a spawned rank runs
    (`sweep.trial.run_trial`, passed in: this module sits below the trial).

    Rank 0 started by ``python -m sweep`` spawns the other ranks first and ends them after the
    block (they write nothing, and a rank still waiting in a collective once rank 0 is done,
    as after a trial pruner stopped it, has nothing left to do). A rank that dies is named in
    the trial's reason (`rank_failure`).

    Raises:
        TrialFailed: A spawned rank died before joining.
    """
    global _current, _failure
    _failure = None
    world = world_size(cfg)
    if world == 1:
        yield device
        return
    env = launched()
    timeout = int(cfg.distributed.timeout_s)
    threads = torch.get_num_threads()
    spawned = None
    sweep_log = logging.getLogger("sweep")
    level = sweep_log.level
    try:
        if env is None:
            me = Ranks(0, world, 0)
            port = _free_port()
            spawned = _Spawned(cfg, world, port, threads, trial)
            spawned.wait_ready(timeout)
            init = f"tcp://127.0.0.1:{port}"
        else:
            me = env
            init = "env://"
            if me.rank != 0:
                sweep_log.setLevel(logging.ERROR)  # a follower's log holds its own errors only
            if _to_lead is not None:
                _to_lead.put(("ready", me.rank, None))
        device = _device(device, me, world)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:  # the CPU's cores are shared by the ranks
            torch.set_num_threads(max(1, threads // world if env is None else threads))
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            init_method=init,
            rank=me.rank,
            world_size=world,
            timeout=dt.timedelta(seconds=timeout),
        )
        _current = me
        yield device
    except Exception as e:
        if spawned is not None and not isinstance(e, TrialFailed):
            _failure = spawned.failure()  # rank 0 lost a collective: say which rank broke it
        raise
    finally:
        _current = Ranks()
        if dist.is_initialized():
            dist.destroy_process_group()
        if spawned is not None:
            spawned.stop()
        torch.set_num_threads(threads)
        sweep_log.setLevel(level)


def rank_failure() -> str | None:
    """Why the last trial's spawned rank failed, when one did (its error, or the signal that
    killed it); rank 0's own error is then only the collective that lost it. Read once."""
    global _failure
    reason, _failure = _failure, None
    return reason


def shard(data: Dataset) -> Dataset:
    """``data`` as this rank reads it in the trial under way (`sweep.data.shard`)."""
    if _current.world_size == 1:
        return data
    from sweep.data import shard as shard_data

    return shard_data(data, _current.rank, _current.world_size)


def share_baseline(
    model: nn.Module, rewind_state: dict[str, torch.Tensor] | None
) -> dict[str, torch.Tensor] | None:
    """Rank 0's baseline weights into every rank's ``model``; rank 0's rewind weights."""
    if _current.world_size == 1:
        return rewind_state
    sync(model)
    box = [None if rewind_state is None else {k: v.cpu() for k, v in rewind_state.items()}]
    dist.broadcast_object_list(box, src=0)
    device = next(iter(model.state_dict().values())).device
    return None if box[0] is None else {k: v.to(device) for k, v in box[0].items()}


def sync(model: nn.Module) -> None:
    """Every rank's parameters and buffers (pruning masks among them) become rank 0's.

    Raises:
        TrialFailed: A rank's model has other tensors than rank 0's (a compaction that
            removed other channels).
    """
    if _current.world_size == 1:
        return
    state = model.state_dict()
    shapes = [{k: tuple(v.shape) for k, v in state.items()}]
    mine = shapes[0]
    dist.broadcast_object_list(shapes, src=0)
    if shapes[0] != mine:
        raise TrialFailed(
            f"rank {_current.rank}'s pruned model has other tensors than rank 0's; with "
            "compact=true use method.importance=magnitude or distributed.nproc=1"
        )
    for tensor in state.values():  # a state dict's tensors are the model's own storage
        dist.broadcast(tensor, src=0)


def sum_gradients(params: list[nn.Parameter]) -> None:
    """Sum each parameter's gradient over the ranks, in one all-reduce; a parameter no rank
    has a gradient for keeps none (as one process would leave it)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = [float(p.grad is not None) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    flat = torch.cat([flat, torch.tensor(has, device=flat.device)])
    dist.all_reduce(flat)
    start = 0
    for p in params:
        n = p.numel()
        p.grad = flat[start : start + n].view_as(p).to(p.dtype).clone()
        start += n
    for p, count in zip(params, flat[start:].tolist(), strict=True):
        if count == 0:
            p.grad = None


def average_batchnorm(model: nn.Module) -> None:
    """Average the BatchNorm running means and variances over the ranks (each saw its part of
    every batch)."""
    stats = [
        t
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for t in (m.running_mean, m.running_var)
        if t is not None
    ]
    if not stats:
        return
    flat = torch.cat([t.reshape(-1).double() for t in stats])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    start = 0
    for t in stats:
        t.copy_(flat[start : start + t.numel()].view_as(t))
        start += t.numel()


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks (a copy)."""
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def _gpus(device: torch.device, world: int, env: Ranks | None) -> tuple[int, int]:
    """The first and last GPU of the trial's ranks on this machine: ``cuda:N`` with nproc
    ranks is the N-th block of nproc GPUs (a sweep's worker N, `gpu_for_worker`); under
    torchrun, ``cuda:LOCAL_RANK``."""
    if env is not None and not os.environ.get(_SPAWNED_ENV):
        return env.local_rank, env.local_rank
    first = (device.index or 0) * world
    return first, first + world - 1


def _device(device: torch.device, me: Ranks, world: int) -> torch.device:
    """This rank's device: its GPU of the trial's (`_gpus`), or the CPU."""
    if device.type != "cuda":
        return device
    env = launched()
    if env is not None and not os.environ.get(_SPAWNED_ENV):  # torchrun's
        return torch.device("cuda", env.local_rank)
    return torch.device("cuda", (device.index or 0) * world + me.rank)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Spawned:
    """The ranks 1..N-1 rank 0 starts for a trial: processes running `_helper`."""

    def __init__(
        self,
        cfg: DictConfig,
        world: int,
        port: int,
        threads: int,
        trial: Callable[[DictConfig], dict],
    ) -> None:
        context = multiprocessing.get_context("spawn")
        container = OmegaConf.to_container(cfg, resolve=True)
        container["progress"] = False  # rank 0's bars say it all
        self.queue = context.Queue()
        self.procs = [
            context.Process(
                target=_helper,
                args=(trial, rank, world, port, container, max(1, threads // world), self.queue),
            )
            for rank in range(1, world)
        ]
        for p in self.procs:
            p.start()
        self.errors: dict[int, str] = {}

    def wait_ready(self, timeout: float) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(ready) < len(self.procs):
            self._read(ready, wait=1.0)
            if len(ready) == len(self.procs):
                return
            reason = self.failure(wait=0)
            if reason is not None:
                raise TrialFailed(reason)
            if time.monotonic() > deadline:
                raise TrialFailed(
                    f"ranks {sorted(set(range(1, len(self.procs) + 1)) - ready)} "
                    f"did not start within distributed.timeout_s={timeout}"
                )

    def failure(self, wait: float = 3.0) -> str | None:
        """Why a spawned rank failed, if one has (waiting up to ``wait`` s for one to end: it
        may be on its way out while rank 0 sees the collective break)."""
        deadline = time.monotonic() + wait
        while True:
            self._read(set(), wait=0)
            for rank, p in enumerate(self.procs, start=1):
                if rank in self.errors:
                    return f"rank {rank} failed: {self.errors[rank]}"
                if p.exitcode is not None and p.exitcode != 0:
                    self._read(set(), wait=0.5)  # its error may still be on its way
                    if rank in self.errors:
                        return f"rank {rank} failed: {self.errors[rank]}"
                    return f"rank {rank} died: {_exit_reason(p.exitcode)}"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def stop(self) -> None:
        """End the spawned ranks: those that are done exit by themselves; those still waiting
        in a collective rank 0 will never join are terminated."""
        deadline = time.monotonic() + 2.0
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join()
        self.queue.close()

    def _read(self, ready: set[int], wait: float) -> None:
        try:
            while True:
                kind, rank, message = (
                    self.queue.get(timeout=wait) if wait else self.queue.get_nowait()
                )
                wait = 0
                if kind == "ready":
                    ready.add(rank)
                else:
                    self.errors.setdefault(rank, message)
        except queue.Empty:
            pass


def _exit_reason(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _helper(
    trial: Callable[[DictConfig], dict],
    rank: int,
    world: int,
    port: int,
    container: dict,
    threads: int,
    to_lead: Any,
) -> None:
    """Rank ``rank`` of a trial spawned by its rank 0: the same trial, writing nothing; its
    error goes to rank 0, which names it in the row."""
    global _to_lead
    _to_lead = to_lead
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        **{_SPAWNED_ENV: "1"},
    )
    logging.getLogger("sweep").addHandler(logging.NullHandler())
    logging.getLogger("sweep").propagate = False  # its errors go to rank 0, not the console
    torch.set_num_threads(threads)
    try:
        row = trial(OmegaConf.create(container))
    except BaseException as e:
        to_lead.put(("error", rank, f"{type(e).__name__}: {e}"))
        to_lead.close()
        to_lead.join_thread()
        sys.exit(1)
    if row["status"] == "failed":
        to_lead.put(("error", rank, row["error"]))
        to_lead.close()
        to_lead.join_thread()
        sys.exit(1)
