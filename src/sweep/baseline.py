"""The dense-baseline cache: each baseline is trained once and loaded by every later trial.

A baseline is identified by the hash of exactly what determines its weights: the model and
dataset configs, the seed, the pretraining settings and the device type. Concurrent workers
that need the same baseline wait on a file lock instead of training it twice; files appear
under their final names only when complete (write to a temporary name, then rename).
"""

from __future__ import annotations

import json
import logging
import os
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

__all__ = ["baseline_key", "load_or_train"]

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
) -> dict[str, Any]:
    """Fill ``model`` with its dense baseline weights, training and caching them if needed.

    Args:
        model: Freshly built (seeded) model on the data's device.
        data: The dataset; the baseline trains on ``data.train``.
        settings: ``model``, ``dataset``, ``seed``, ``pretrain``, ``device_type``: the cache key.
        cache_dir: Folder of ``<key>.pt`` weights and ``<key>.json`` facts.
        progress: Show a progress bar while training.

    Returns:
        The cached facts: ``key``, ``trained`` (this call trained it), ``time_s``.

    Raises:
        TrialFailed: Pretraining diverged (a NaN or infinite loss or output); nothing is cached.
    """
    key = baseline_key(settings)
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    weights, facts = folder / f"{key}.pt", folder / f"{key}.json"
    with locked(folder / f"{key}.lock"):
        if weights.exists() and facts.exists():
            state = torch.load(weights, map_location=_device(model), weights_only=True)
            model.load_state_dict(state)
            log.info("dense baseline %s loaded from %s", key, weights)
            return {**json.loads(facts.read_text()), "trained": False}
        start = time.perf_counter()
        torch.manual_seed(settings["seed"])
        train(
            model,
            data.train,
            settings["pretrain"],
            seed=settings["seed"],
            desc="pretrain",
            progress=progress,
        )
        # before saving: a baseline that trained to NaN must not be cached for every later trial
        acc, loss = evaluate(model, data.val, desc="pretrained model")
        info = {
            "key": key,
            "time_s": time.perf_counter() - start,
            "val_acc": acc,
            "val_loss": loss,
            "settings": settings,
        }
        atomic_write(weights, lambda f: torch.save(model.state_dict(), f))
        atomic_write(facts, lambda f: f.write(json.dumps(info, indent=2, default=str).encode()))
        log.info("dense baseline %s trained in %.1f s, saved to %s", key, info["time_s"], weights)
        return {**info, "trained": True}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
