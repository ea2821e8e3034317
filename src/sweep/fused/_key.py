"""The group key: what every member of a fused group must share.

Members of one group train as one batched model on one device, on one pass over one dataset:
they share everything `train` reads except the learning rate, and everything before the
finetuning that is not per-member (the baseline, the data and its device layout). What stays
per member: the method, amount, scope and importance (so masks and scores), the learning rate,
recalibration, latency settings, store and Optuna labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep.hashing import config_hash, key_view

__all__ = ["PER_MEMBER_FINETUNE", "fusion_key"]

# The finetune settings a member keeps for itself: one optimizer parameter group each.
PER_MEMBER_FINETUNE = ("lr",)
# Optimizers known to update each parameter from its own gradient and state only; a user's
# optimizer may couple parameters (a global gradient norm, say), and then members would too.
_ELEMENTWISE_OPTIMIZERS = ("sgd", "adam", "adamw")


def fusion_key(cfg: DictConfig | Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The key of the group a trial can be fused in, or why it cannot be fused.

    Trials with equal keys can finetune and evaluate as one batched model (`finetune_fused`)
    and give the results each would alone: same architecture, baseline, data, data order and
    training budget; they differ in masks, importance scores and learning rate only.

    Args:
        cfg: A composed ``conf/config.yaml``, or its resolved form (`sweep.plan.Plan.resolved`,
            whose ``model`` also names a checkpoint by its content).

    Returns:
        ``(key, None)`` for a trial that can be fused, ``(None, reason)`` for one that must run
        alone; ``reason`` is one line naming the setting.

    Example:
        >>> from hydra import compose, initialize_config_module
        >>> with initialize_config_module("sweep.conf", version_base="1.3"):  # doctest: +SKIP
        ...     a, b = (compose("config", [f"amount={x}"]) for x in (0.3, 0.7))
        >>> fusion_key(a)[0] == fusion_key(b)[0]  # doctest: +SKIP
        True
    """
    resolved = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    reason = _why_alone(resolved)
    if reason is not None:
        return None, reason
    finetune = key_view("finetune", dict(resolved["finetune"]))
    shared = {
        "model": resolved["model"],
        "dataset": key_view("dataset", dict(resolved["dataset"])),
        # absent when model.checkpoint is the baseline: then the checkpoint names it
        "pretrain": key_view("pretrain", dict(resolved.get("pretrain") or {})),
        "seed": resolved["seed"],  # the baseline's, and the order of the finetuning batches
        "finetune": {k: v for k, v in finetune.items() if k not in PER_MEMBER_FINETUNE},
        "device": resolved["device"],
        "channels_last": resolved.get("channels_last", False),  # one device copy of the data
    }
    return config_hash(shared), None


def _why_alone(resolved: Mapping[str, Any]) -> str | None:
    """One line saying why the trial cannot share a batched model, or ``None``."""
    nproc = (resolved.get("distributed") or {}).get("nproc", 1)
    if nproc != 1:
        return f"distributed.nproc={nproc}: the trial runs over its own ranks"
    if resolved["finetune"]["epochs"] == 0:
        return "finetune.epochs=0: nothing is finetuned, so nothing runs batched"
    if resolved.get("compact"):
        return "compact=true: compacted members have shapes of their own"
    schedule = resolved.get("schedule", {}).get("name", "one_shot")
    if schedule != "one_shot":
        return f"schedule={schedule}: masks change during finetuning, member by member"
    rewind = resolved.get("rewind", "none")
    if rewind != "none":
        return f"rewind={rewind}: the finetuning restarts from rewound weights"
    optimizer = resolved["finetune"]["optimizer"]
    if optimizer not in _ELEMENTWISE_OPTIMIZERS:
        return (
            f"finetune.optimizer={optimizer}: only {' | '.join(_ELEMENTWISE_OPTIMIZERS)} are "
            "known to update each member's parameters apart"
        )
    return None
