"""The dense-baseline cache: each baseline is trained once and loaded by every later trial.

A baseline is identified by the hash of exactly what determines its weights: the model and
dataset configs, the seed, the pretraining settings and the device type. Concurrent workers
that need the same baseline wait on a file lock instead of training it twice; files appear
under their final names only when complete (write to a temporary name, then rename).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweep._files import atomic_write, locked
from sweep.data import Dataset
from sweep.hashing import config_hash
from sweep.training import evaluate, train

__all__ = ["baseline_key", "load_or_train", "weights_file"]

log = logging.getLogger(__name__)


def baseline_key(settings: Mapping[str, Any]) -> str:
    """Hash of the settings that determine a baseline's weights."""
    return config_hash(settings)


def load_or_train(
    model: nn.Module,
    data: Dataset,
    settings: Mapping[str, Any],
    cache_dir: str | os.PathLike,
    *,
    progress: bool = True,
    rewind_epoch: int | None = None,
) -> dict[str, Any]:
    """Fill ``model`` with its dense baseline weights, training and caching them if needed.

    Args:
        model: Freshly built (seeded) model on the data's device.
        data: The dataset; the baseline trains on ``data.train``.
        settings: ``model``, ``dataset``, ``seed``, ``pretrain``, ``device_type``: the cache key.
        cache_dir: Folder of ``<key>.pt`` weights and ``<key>.json`` facts.
        progress: Show a progress bar while training.
        rewind_epoch: Also return the weights after this many pretraining epochs (0: the
            initialisation), cached beside the baseline as ``<key>.epoch<K>.pt``. A baseline
            cached without them replays its first K epochs (same seed, same batches, the
            learning-rate schedule of the whole pretraining) to get them.

    Returns:
        The cached facts: ``key``, ``trained`` (this call trained it), ``time_s``; with
        ``rewind_epoch``, ``rewind_state`` too (a state dict on the model's device).

    Raises:
        TrialFailed: Pretraining diverged (a NaN or infinite loss or output), or a file of any
            split could not be read (every split is read once before caching); nothing is
            cached.
    """
    key = baseline_key(settings)
    folder = Path(cache_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    weights, facts = weights_file(folder, key), folder / f"{key}.json"
    snapshot = None if rewind_epoch is None else folder / f"{key}.epoch{rewind_epoch}.pt"
    loaded = _LOADED.get(key)
    if (
        snapshot is None
        and loaded is not None
        and loaded[0] == _stamps(weights, facts, model) != ()
    ):
        model.load_state_dict(loaded[1])  # the files this process read last, unchanged since
        log.info("dense baseline %s loaded from %s (as read before)", key, weights)
        return {**loaded[2], "trained": False}
    with locked(folder / f"{key}.lock"):
        stamps = _stamps(weights, facts, model)
        cached = _read_cache(weights, facts, model) if weights.exists() and facts.exists() else None
        if cached is not None:
            state, info = cached
            rewind = {}
            if snapshot is not None:
                rewind["rewind_state"] = _snapshot(model, data, settings, rewind_epoch, snapshot)
            model.load_state_dict(state)
            log.info("dense baseline %s loaded from %s", key, weights)
            _LOADED.clear()  # one baseline kept: a sweep's trials share theirs
            _LOADED[key] = (stamps, state, info)
            return {**info, "trained": False, **rewind}
        start = time.perf_counter()
        if snapshot is not None and rewind_epoch == 0:
            _save(model, snapshot)

        def keep(epoch: int) -> None:
            if snapshot is not None and epoch == rewind_epoch:
                _save(model, snapshot)

        torch.manual_seed(settings["seed"])
        train(
            model,
            data.train,
            settings["pretrain"],
            seed=settings["seed"],
            desc="pretrain",
            progress=progress,
            after_epoch=keep,
        )
        # before saving: a baseline that trained to NaN must not be cached for every later trial
        acc, loss = evaluate(model, data.val, desc="pretrained model")
        # nor one whose data could not all be read: streamed files are read only as passes go,
        # and the test split is the one pretraining never reads
        test_acc, _ = evaluate(model, data.test, desc="pretrained model, test split")
        info = {
            "key": key,
            "time_s": time.perf_counter() - start,
            "val_acc": acc,
            "val_loss": loss,
            "test_acc": test_acc,
            "settings": settings,
        }
        atomic_write(weights, lambda f: torch.save(model.state_dict(), f))
        atomic_write(facts, lambda f: f.write(json.dumps(info, indent=2, default=str).encode()))
        log.info("dense baseline %s trained in %.1f s, saved to %s", key, info["time_s"], weights)
        rewind = {} if snapshot is None else {"rewind_state": _load(snapshot, model)}
        return {**info, "trained": True, **rewind}


def _read_cache(
    weights: Path, facts: Path, model: nn.Module
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The cached weights (on the model's device) and facts; ``None``, with a warning, where
    either cannot be read (a damaged disk, a file edited by hand) or the weights do not fit
    the model (its code changed in a module its key does not hold): the baseline is then
    trained again and replaced, rather than failing every trial that needs it."""
    try:
        # to the CPU first: the GPU's memory running short is not a damaged file
        state = torch.load(weights, map_location="cpu", weights_only=True)
        info = json.loads(facts.read_text())
        if not isinstance(state, dict) or not isinstance(info, dict):
            raise ValueError("not a state dict and its facts")
        expected = model.state_dict()  # left as built: a rewind snapshot starts from it
        if set(expected) != set(state) or any(
            tuple(expected[k].shape) != tuple(state[k].shape) for k in expected
        ):  # the model's code changed in a module its key does not hold
            raise ValueError("the weights do not fit the model")
    # what a damaged, truncated or foreign file raises; OSError (a disk, a network file
    # system that fails) propagates: the file may be sound, and another trial may read it
    except (RuntimeError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning(
            "dense baseline cache %s or %s cannot be read (%s): trained again and replaced",
            weights,
            facts.name,
            reason,
        )
        return None
    device = _device(model)
    return {k: v.to(device) for k, v in state.items()}, info


# The baseline this process loaded last: its files' stamps when read, its weights and facts.
# Files are only ever replaced whole (`atomic_write`), so unchanged stamps mean unchanged
# content, and a trial of a sweep loads its baseline from memory instead of from the file.
_LOADED: dict[str, tuple[tuple, dict[str, torch.Tensor], dict[str, Any]]] = {}


def _stamps(weights: Path, facts: Path, model: nn.Module) -> tuple:
    """What identifies the two files as read, and the device they were loaded to."""
    try:
        stats = [weights.stat(), facts.stat()]
    except OSError:
        return ()
    return (
        *(
            (str(p.resolve()), s.st_ino, s.st_mtime_ns, s.st_size)
            for p, s in zip((weights, facts), stats, strict=True)
        ),
        str(_device(model)),
    )


def weights_file(cache_dir: str | os.PathLike, key: str) -> Path:
    """Where `load_or_train` keeps the weights of the baseline ``key``."""
    return Path(cache_dir).expanduser() / f"{key}.pt"


def _snapshot(
    model: nn.Module, data: Dataset, settings: Mapping[str, Any], epoch: int, file: Path
) -> dict[str, torch.Tensor]:
    """The weights of ``file``; made first, from the freshly built ``model``, if missing."""
    if not file.exists():
        fresh = copy.deepcopy(model)
        if epoch > 0:
            log.info("replaying %d pretraining epoch(s) for the rewind weights %s", epoch, file)
            torch.manual_seed(settings["seed"])
            steps = math.ceil(len(data.train) / int(settings["pretrain"]["batch_size"]))
            train(
                fresh,
                data.train,
                settings["pretrain"],
                seed=settings["seed"],
                desc=f"pretrain to epoch {epoch}",
                progress=False,
                stop_at_step=epoch * steps,
            )
        _save(fresh, file)
    return _load(file, model)


def _save(model: nn.Module, file: Path) -> None:
    atomic_write(file, lambda f: torch.save(model.state_dict(), f))


def _load(file: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    return torch.load(file, map_location=_device(model), weights_only=True)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
