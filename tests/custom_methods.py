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
