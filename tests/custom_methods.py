"""A user's own pruning method, outside the package: prunes every other still-unpruned entry."""

import torch
from torch.nn.utils import prune


class EveryOther(prune.BasePruningMethod):
    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        mask = default_mask.clone()
        alive = mask.flatten().nonzero().squeeze(1)
        mask.view(-1)[alive[::2]] = 0
        return mask


class Leading(prune.BasePruningMethod):
    """Prunes the first ``amount`` of the entries it is given (a fraction, floored), in order."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: float) -> None:
        self.amount = amount

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        mask = default_mask.clone()
        mask.view(-1)[: int(self.amount * t.numel())] = 0
        return mask


class Ln(prune.LnStructured):
    """A user's subclass of a built-in method: takes the built-in's arguments (n, dim)."""
