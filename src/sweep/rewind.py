"""Lottery-ticket rewinding: after the final mask, the surviving weights go back to earlier
values (Frankle & Carbin 2019: the initialisation; Frankle et al. 2020: an early pretraining
epoch) and train again with the mask fixed.

``rewind=init`` and ``rewind=epoch:K`` take those weights from the dense-baseline cache
(`sweep.baseline.load_or_train`), or from ``rewind_weights`` when the user gives them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from sweep.errors import ConfigError

__all__ = ["parse_rewind", "rewind"]

_ACCEPTED = "none | init | epoch:K (K an int >= 0, pretraining epochs)"


def parse_rewind(value: object) -> int | None:
    """The pretraining epoch to rewind to (0: the initialisation), or ``None`` for no rewind.

    Example:
        >>> parse_rewind("none"), parse_rewind("init"), parse_rewind("epoch:3")
        (None, 0, 3)
    """
    if value is None or value == "none":
        return None
    if value == "init":
        return 0
    match = re.fullmatch(r"epoch:(\d+)", str(value))
    if match is None:
        raise ConfigError(f"rewind={value!r} is not a rewind point; accepted: {_ACCEPTED}")
    return int(match.group(1))


@torch.no_grad()
def rewind(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Set every parameter and buffer of the pruned ``model`` to ``state``, a state dict of
    the dense model; masks are kept, so pruned entries stay zero and survivors take exactly
    their values in ``state``.

    Raises:
        KeyError: ``state`` lacks a tensor of the model, or holds one the model does not have.
    """
    own = model.state_dict()
    masks = {k for k in own if k.endswith("_mask")}
    for key, value in state.items():
        target = key if key in own else f"{key}_orig"
        if target not in own or target in masks:
            raise KeyError(f"rewind weights hold {key!r}, which the model does not have")
        own[target].copy_(value)
    expected = {k.removesuffix("_orig") for k in own if k not in masks}
    missing = sorted(expected - set(state))
    if missing:
        raise KeyError(f"rewind weights lack {missing[0]!r} (and {len(missing) - 1} more)")
    for module in model.modules():  # the masked weights, as the next forward would compute them
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                hook(module, ())
