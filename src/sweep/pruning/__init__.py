"""Pruning in the vocabulary of ``torch.nn.utils.prune``.

A `PruningMethod` names a `BasePruningMethod` subclass (built-in or the user's own) and its
arguments; a `Scope` decides which tensors it touches and with which amount (`weight_names`
says which tensors of a module are its weights); `prune_model` applies it, and `make_permanent`
folds the masks into the weights before deployment.
"""

from sweep.pruning._apply import (
    Target,
    make_permanent,
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
from sweep.pruning._method import PruningMethod
from sweep.pruning._schedule import SCHEDULES, Schedule
from sweep.pruning._scope import Scope, end_layers, weight_names

__all__ = [
    "SCHEDULES",
    "ChannelGroup",
    "PruningMethod",
    "Schedule",
    "Scope",
    "Target",
    "compact",
    "end_layers",
    "make_permanent",
    "not_compactable",
    "plan_pruning",
    "prune_channel_groups",
    "prune_model",
    "prune_toward",
    "silence_dead_channels",
    "sparsity",
    "weight_names",
]
