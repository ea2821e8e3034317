"""What pruning acts on: a tensor in scope (`Target`), and scores that rank its entries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Scores", "Target"]

# A score per entry of each tensor in scope, by (module, parameter name): what a method ranks
# instead of the weights (torch's ``importance_scores``).
Scores = dict[tuple[nn.Module, str], torch.Tensor]


@dataclass(frozen=True)
class Target:
    """One tensor in scope: ``param`` of module ``name``, pruned by ``amount``.

    ``param`` is ``weight``, or an input projection of ``nn.MultiheadAttention``
    (``in_proj_weight``...); ``name`` is the module's name either way.
    """

    name: str
    module: nn.Module
    amount: float | int
    param: str = "weight"

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self.module, self.param)
