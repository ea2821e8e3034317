"""N:M semi-structured sparsity: n zeros in every group of m consecutive weights along the
input dimension, the pattern NVIDIA's sparse tensor cores run (2:4) from compute capability 8.0.
"""

from __future__ import annotations

import copy
from collections.abc import Collection

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = ["NMSparsity", "nm_eligible", "semi_structured", "semi_structured_unavailable"]


class NMSparsity(prune.BasePruningMethod):
    """Zero the ``n`` least important of every ``m`` consecutive weights along the input
    dimension (dim 1: a Linear's input features, a convolution's input channels), ranked by
    absolute value, or by the ``importance_scores`` given to `apply`.

    The sparsity is ``n / m`` whatever ``amount`` a trial asks for. NVIDIA counts N:M by its
    non-zeros (2:4: at most 2 of 4 kept); here ``n`` counts the zeros, which for 2:4 is the same.
    ``PRUNING_TYPE`` is ``"global"`` in torch's sense (the method sees the whole tensor): pruned
    again, it keeps the groups and zeros the ``n`` smallest of each that are not zero already.

    Example:
        >>> w = torch.tensor([[4.0, -1.0, 3.0, 2.0, 0.5, 6.0, -7.0, 0.1]])
        >>> NMSparsity(n=2, m=4).compute_mask(w, torch.ones_like(w))
        tensor([[1., 0., 1., 0., 0., 1., 1., 0.]])
    """

    PRUNING_TYPE = "global"

    def __init__(self, n: int = 2, m: int = 4) -> None:
        self.n, self.m = n, m

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if t.dim() < 2 or t.shape[1] % self.m:
            raise ValueError(
                f"N:M {self.n}:{self.m} needs a weight whose dim 1 is a multiple of {self.m}; "
                f"got shape {tuple(t.shape)}"
            )
        # entries already pruned count first among the zeros of their group
        score = torch.where(default_mask == 0, -1.0, t.detach().abs().to(torch.float32))
        groups = score.movedim(1, -1).reshape(-1, self.m)
        drop = groups.topk(self.n, dim=1, largest=False).indices
        keep = torch.ones_like(groups).scatter_(1, drop, 0.0)
        shape = score.movedim(1, -1).shape
        mask = keep.reshape(shape).movedim(-1, 1)
        # in the weight's own layout: a permuted mask would make `weight_orig * mask` permuted,
        # and the convolution behind it another, slower or faster kernel than the dense one's
        return torch.empty_like(default_mask).copy_(mask).mul_(default_mask)


def nm_eligible(weight: torch.Tensor, m: int) -> bool:
    """Whether ``weight`` has an input dimension that groups of ``m`` divide."""
    return weight.dim() >= 2 and weight.shape[1] % m == 0


def semi_structured_unavailable(device: torch.device, n: int, m: int) -> str | None:
    """Why 2:4 kernels cannot run here, or ``None`` when they can."""
    if (n, m) != (2, 4):
        return f"semi-structured kernels run 2:4 only, not {n}:{m}; the masks are kept"
    if device.type != "cuda":
        return (
            f"2:4 kernels need a CUDA GPU of compute capability >= 8.0 and this trial runs on "
            f"{device.type}; the masks are kept"
        )
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return (
            f"2:4 kernels need compute capability >= 8.0; {torch.cuda.get_device_name(device)} "
            f"has {major}.{minor}; the masks are kept"
        )
    return None


def semi_structured(
    model: nn.Module, names: Collection[str], dtype: torch.dtype
) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` in ``dtype`` whose Linear layers among ``names`` hold their 2:4
    weights as ``torch.sparse.SparseSemiStructuredTensor`` (``to_sparse_semi_structured``).

    Layers the kernels cannot take (not Linear, not 2:4 in every group, sizes the kernels
    refuse) stay dense. ``model`` must have its masks folded in (`make_permanent`).

    Returns:
        The copy and the names of the layers converted.
    """
    from torch.sparse import to_sparse_semi_structured

    copied = copy.deepcopy(model).to(dtype)
    converted = []
    for name, module in copied.named_modules():
        if name not in names or type(module) is not nn.Linear:
            continue
        w = module.weight.detach()
        if not _is_2_4(w):
            continue
        try:
            module.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
        except (RuntimeError, ValueError):
            continue  # shapes or layouts the kernels refuse: this layer stays dense
        converted.append(name)
    return copied, converted


def _is_2_4(w: torch.Tensor) -> bool:
    if w.dim() != 2 or w.shape[1] % 4:
        return False
    return bool(((w.reshape(-1, 4) != 0).sum(1) <= 2).all())
