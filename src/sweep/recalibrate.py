"""BatchNorm recalibration: re-estimate running statistics after pruning, no weight update.

Pruning changes what every later layer sees, so the running means and variances BatchNorm
learnt on the dense model no longer describe its inputs, and a pruned model evaluated with them
can look far worse than it is. EagleEye (Li et al. 2020, "adaptive batch normalization")
re-estimates them on a few training batches in train mode with no gradient: a cheap proxy for
the accuracy finetuning will recover.
"""

from __future__ import annotations

import torch
from torch import nn

from sweep import distributed
from sweep.data import DataSplit

__all__ = ["recalibrate_batchnorm"]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, split: DataSplit, batches: int, batch_size: int, *, seed: int
) -> bool:
    """Replace the running statistics of every BatchNorm layer of ``model`` by their plain
    average over ``batches`` shuffled batches of ``split``; no parameter changes.

    Returns:
        Whether anything was done: ``False`` when ``batches`` is 0 or the model has no
        BatchNorm layer (its running statistics are then untouched).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    norms = [m for m in norms if m.track_running_stats]
    if batches <= 0 or not norms:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    was_training = model.training
    model.train()
    try:
        generator = torch.Generator().manual_seed(seed)
        for i, (x, _) in enumerate(split.batches(batch_size, shuffle=True, generator=generator)):
            if i == batches:
                break
            if len(x):  # a DDP rank's part of a last batch may be empty
                model(x)
        if getattr(split, "part", None) is not None:
            distributed.average_batchnorm(model)  # each rank saw its parts of the batches
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return True
