"""Fused trials: K trials that share an architecture, a baseline, data and a training budget
finetune and evaluate as one batched model on one device (horizontal fusion).

`run_fused` runs trial configs with each group fused, every trial stored as if alone;
`fusion_key` says which trials can share a group; `finetune_fused` and `evaluate_fused` run a
group's members as `sweep.training.train` and `evaluate` run each alone.
"""

from sweep.fused._engine import evaluate_fused, finetune_fused
from sweep.fused._jobs import fused_row, group_size, hand_over
from sweep.fused._key import PER_MEMBER_FINETUNE, fusion_key
from sweep.fused._run import run_fused
from sweep.fused._size import AUTO_LIMIT, fuse_size

__all__ = [
    "AUTO_LIMIT",
    "PER_MEMBER_FINETUNE",
    "evaluate_fused",
    "finetune_fused",
    "fuse_size",
    "fused_row",
    "fusion_key",
    "group_size",
    "hand_over",
    "run_fused",
]
