"""Pruning in the vocabulary of ``torch.nn.utils.prune``.

A `PruningMethod` names a `BasePruningMethod` subclass (built-in, `NMSparsity`, or the user's
own) and its arguments; a `Scope` decides which tensors it touches and with which amount
(`weight_names` says which tensors of a module are its weights); `importance_scores` measures
what the method ranks when the criterion is not magnitude; `prune_model` applies it, and
`make_permanent` folds the masks into the weights before deployment.
"""

from sweep.pruning._apply import (
    make_permanent,
    nm_skipped,
    plan_pruning,
    prune_model,
    prune_toward,
    sparsity,
)
from sweep.pruning._compact import (
    ChannelGroup,
    compact,
    not_compactable,
    prune_channel_groups,
    silence_dead_channels,
)
from sweep.pruning._importance import IMPORTANCE, check_importance, importance_scores
from sweep.pruning._method import PruningMethod
from sweep.pruning._nm import NMSparsity, semi_structured, semi_structured_unavailable
from sweep.pruning._schedule import SCHEDULES, Schedule
from sweep.pruning._scope import Scope, end_layers, weight_names
from sweep.pruning._target import Scores, Target

__all__ = [
    "IMPORTANCE",
    "SCHEDULES",
    "ChannelGroup",
    "NMSparsity",
    "PruningMethod",
    "Schedule",
    "Scope",
    "Scores",
    "Target",
    "check_importance",
    "compact",
    "end_layers",
    "importance_scores",
    "make_permanent",
    "nm_skipped",
    "not_compactable",
    "plan_pruning",
    "prune_channel_groups",
    "prune_model",
    "prune_toward",
    "semi_structured",
    "semi_structured_unavailable",
    "silence_dead_channels",
    "sparsity",
    "weight_names",
]
