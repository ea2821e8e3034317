"""What a pruned model costs: parameters, non-zeros, FLOPs and latency."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

from sweep.pruning import weight_names

__all__ = [
    "LATENCY_COLUMNS",
    "Latency",
    "count_flops",
    "count_nonzero",
    "count_params",
    "latency_ms",
    "layer_table",
    "median_interval",
    "paired_latency",
    "removed_fraction",
    "weight_numels",
]

# Layers whose weights the FLOPs and the layer table follow.
_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)


def count_params(model: nn.Module) -> int:
    """Number of parameter entries (masked entries included: they still occupy memory)."""
    return sum(t.numel() for t in _weights_and_buffers(model))


def count_nonzero(model: nn.Module) -> int:
    """Number of parameter entries that are not zero, masks applied."""
    return sum(int(torch.count_nonzero(t)) for t in _weights_and_buffers(model))


@torch.no_grad()
def count_flops(model: nn.Module, example: torch.Tensor, *, zero_aware: bool = True) -> int:
    """FLOPs of one forward pass on ``example``, counted by ``torch.utils.flop_counter``.

    With ``zero_aware`` each Linear/Conv layer's FLOPs are scaled by the fraction of its weight
    that is non-zero, and so are those of ``nn.MultiheadAttention``'s projections: the work that
    remains when multiplications by zero are skipped.

    The counted pass is kept per architecture (the model's modules, their settings and tensor
    shapes) and input shape: a later model of the same architecture, such as every masked trial
    of one baseline, only has its zeros counted. FLOPs follow from shapes, not values, so
    the figure is the one a fresh count gives.

    Example:
        >>> count_flops(nn.Linear(4, 3, bias=False), torch.zeros(1, 4))
        24
    """
    model.eval()
    key = _architecture(model, example, zero_aware)
    profile = _PROFILES.pop(key, None) or _count_pass(model, example, zero_aware)
    _PROFILES[key] = profile  # most recently used last
    while len(_PROFILES) > _KEPT_PROFILES:
        del _PROFILES[next(iter(_PROFILES))]
    modules = dict(model.named_modules())
    skipped = sum(profile.skipped(name, modules[name]) for name in profile.inputs)
    return int(profile.total - skipped)


@dataclass
class _FlopProfile:
    """One counted forward pass: its total, and the inputs each watched layer first saw (by
    name), from which a layer's own FLOPs are counted once, when it first has zeros."""

    total: int
    inputs: dict[str, tuple[tuple, dict]]
    layer_flops: dict[str, int] = field(default_factory=dict)

    def skipped(self, name: str, module: nn.Module) -> float:
        """FLOPs ``module`` would not spend on the zeros of its weights."""
        args, kwargs = self.inputs[name]
        if isinstance(module, nn.MultiheadAttention):
            return _skipped_attention_flops(module, args, kwargs)
        density = float(torch.count_nonzero(module.weight)) / module.weight.numel()
        if density == 1.0:
            return 0
        if name not in self.layer_flops:
            with _FlopTally() as tally:
                module(*args, **kwargs)
            self.layer_flops[name] = tally.total
        return round(self.layer_flops[name] * (1.0 - density))


# Counted passes by architecture: a sweep's trials share a few (the dense model, its masked
# trials, compacted ones of one shape); each holds a single example's activations.
_PROFILES: dict[tuple, _FlopProfile] = {}
_KEPT_PROFILES = 8


def _count_pass(model: nn.Module, example: torch.Tensor, zero_aware: bool) -> _FlopProfile:
    names = {m: name for name, m in model.named_modules()}
    inputs: dict[str, tuple[tuple, dict]] = {}

    def keep_inputs(module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs.setdefault(names[module], (args, kwargs))

    watched = [m for m in model.modules() if isinstance(m, _WEIGHTED)] if zero_aware else []
    hooks = [m.register_forward_pre_hook(keep_inputs, with_kwargs=True) for m in watched]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # In eval, attention runs one fused kernel the counter has no formula for: its projections
    # would count as nothing. The regular path computes the same with counted matmuls.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with _FlopTally() as tally:
            model(example)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in hooks:
            h.remove()
    return _FlopProfile(tally.total, inputs)


class _FlopTally(TorchDispatchMode):
    """The FLOPs of the operations run under it, by ``torch.utils.flop_counter``'s formulas
    (and any a user added with ``register_flop_formula``): `FlopCounterMode`'s total, without
    its per-module table.

    `FlopCounterMode`'s dispatch, like every dispatch mode's, is wrapped to keep
    ``torch.compile`` out of it, and that wrapper imports ``torch._dynamo`` on its first call:
    about a second, in every process that counts. This mode counts eager passes only and opts
    out of the wrapper (the opt-out ``TorchDispatchMode`` documents): a proxy search that
    never finetunes then never imports the compiler.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not torch.ops.prim.device.default:
            with self:  # a composite operation is counted by its parts, as FlopCounterMode does
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        formula = flop_counter.flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def _architecture(model: nn.Module, example: torch.Tensor, zero_aware: bool) -> tuple:
    """What the counted pass depends on: module classes and settings (their ``repr``), tensor
    names and shapes (a masked layer's ``weight_orig`` too), the input's shape."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    return (
        repr(model),
        tuple(type(m) for m in model.modules()),
        tuple((name, tuple(t.shape), t.dtype, t.device) for name, t in tensors),
        (tuple(example.shape), example.dtype, example.device),
        zero_aware,
    )


@torch.no_grad()
def latency_ms(model: nn.Module, batch: torch.Tensor, *, warmup: int, repeats: int) -> float:
    """Median time of one forward pass on ``batch`` in milliseconds, after ``warmup`` passes."""
    model.eval()
    with torch.no_grad():
        for _ in range(warmup):
            model(batch)
        return 1000.0 * statistics.median(_time(model, batch) for _ in range(repeats))


# What `Latency.columns` fills in a row; a trial that times nothing leaves them empty.
LATENCY_COLUMNS = (
    *(
        f"{name}{end}"
        for name in ("latency_ms_dense", "latency_ms", "speedup")
        for end in ("", "_low", "_high")
    ),
    "latency_rounds",
    "latency_noisy",
)


@dataclass(frozen=True)
class Latency:
    """Two models timed against each other: medians in ms with their confidence intervals,
    and the median of the paired ratios (dense / pruned), with its interval."""

    dense_ms: tuple[float, float, float]  # (low, median, high)
    ms: tuple[float, float, float]
    speedup: tuple[float, float, float]
    rounds: int
    noisy: bool

    def columns(self) -> dict[str, Any]:
        """The row's columns: ``latency_ms`` etc. with ``_low``/``_high`` beside each."""
        row: dict[str, Any] = {}
        for name, (low, mid, high) in (
            ("latency_ms_dense", self.dense_ms),
            ("latency_ms", self.ms),
            ("speedup", self.speedup),
        ):
            row.update({name: mid, f"{name}_low": low, f"{name}_high": high})
        return {**row, "latency_rounds": self.rounds, "latency_noisy": self.noisy}


def paired_latency(
    dense: nn.Module,
    pruned: nn.Module,
    batch: torch.Tensor,
    *,
    warmup: int,
    repeats: int,
    max_repeats: int,
    width: float,
    confidence: float = 0.95,
) -> Latency:
    """Time ``dense`` and ``pruned`` on ``batch`` in the same moments, until the speedup is
    known to within ``width``.

    Each round times one forward pass of each, in alternating order (A B, B A, ...), so that a
    machine that slows down or speeds up meanwhile slows both alike; the speedup is the median
    of the rounds' ratios. After ``repeats`` rounds, rounds go on until the ``confidence``
    interval of that median (distribution-free: order statistics of a binomial) is narrower
    than ``width`` times the median, or ``max_repeats`` rounds were run; then ``noisy`` says
    whether it still is wider. A model that computes exactly what the other does reads a
    speedup whose interval holds 1.

    Args:
        dense, pruned: The models, on the device of ``batch`` (put in eval mode here).
        batch: The input both run on.
        warmup: Passes of each before timing.
        repeats, max_repeats: The fewest and the most rounds.
        width: The widest interval accepted, as a fraction of the median speedup.
        confidence: Of the intervals.

    Example:
        >>> net = nn.Linear(64, 64)
        >>> lat = paired_latency(net, net, torch.zeros(8, 64), warmup=1, repeats=5,
        ...                      max_repeats=50, width=1.0)
        >>> lat.speedup[0] <= 1.0 <= lat.speedup[2]
        True
    """
    dense.eval(), pruned.eval()
    with torch.no_grad():
        for _ in range(warmup):
            dense(batch), pruned(batch)
        a, b, ratios = [], [], []
        while len(ratios) < max_repeats:
            if len(ratios) % 2:
                tb, ta = _time(pruned, batch), _time(dense, batch)
            else:
                ta, tb = _time(dense, batch), _time(pruned, batch)
            a.append(ta), b.append(tb), ratios.append(ta / tb)
            if len(ratios) >= repeats:
                low, mid, high = median_interval(ratios, confidence)
                if high - low <= width * mid:
                    break
    speedup = median_interval(ratios, confidence)
    ms = [tuple(1000.0 * v for v in median_interval(t, confidence)) for t in (a, b)]
    noisy = speedup[2] - speedup[0] > width * speedup[1]
    return Latency(ms[0], ms[1], speedup, len(ratios), noisy)


def median_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """(low, median, high): the median of ``values`` and a distribution-free ``confidence``
    interval for it, from the order statistics whose ranks a Binomial(n, 1/2) bounds (normal
    approximation; the sample's extremes for small n).

    Example:
        >>> median_interval(list(range(1, 101)))
        (40, 50.5, 61)
    """
    ordered = sorted(values)
    n = len(ordered)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half) - 1)
    high = min(n - 1, math.ceil(n / 2 + half))
    return ordered[low], statistics.median(ordered), ordered[high]


def _time(model: nn.Module, batch: torch.Tensor) -> float:
    """Seconds of one forward pass, the device's queue drained before and after."""
    cuda = batch.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(batch.device)
    start = time.perf_counter()
    model(batch)
    if cuda:
        torch.cuda.synchronize(batch.device)
    return time.perf_counter() - start


def weight_numels(model: nn.Module) -> dict[tuple[str, str], int]:
    """Entries of every weight by (layer, param): the dense sizes to compare against.

    The weights are those `sweep.pruning.weight_names` gives: every ``weight``, and the input
    projections of ``nn.MultiheadAttention``.

    Example:
        >>> weight_numels(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
        {('0', 'weight'): 8}
    """
    return {key: t.numel() for key, t in _weights(model)}


def removed_fraction(
    model: nn.Module, dense: dict[tuple[str, str], int], names: Collection[str]
) -> float:
    """Sparsity over the layers ``names``: the share of their dense entries now zero or removed.

    For a masked model that is the share of zeros; for a compacted one it also counts the rows
    and input channels that were physically removed.

    Args:
        model: The model now, masked or compacted.
        dense: `weight_numels` of the dense model.
        names: Layers in scope; all their weights count (all of attention's projections).
    """
    kept = total = 0
    for key, t in _weights(model):
        if key[0] in names:
            kept += int(torch.count_nonzero(t))
            total += dense[key]
    return 1.0 - kept / total if total else 0.0


def layer_table(
    model: nn.Module, dense: dict[tuple[str, str], int], amounts: Mapping[str, float | int]
) -> list[dict]:
    """Per-weight rows: ``layer, param, numel, nonzero, in_scope, amount``.

    ``amounts`` maps each layer in scope to the amount it was pruned with (the trial's
    ``amount`` or its ``scope.amounts`` entry); ``amount`` is ``None`` for the layers out of
    scope. The rows cover the Linear, Conv and attention layers, and any other layer in scope (a
    BatchNorm). ``numel`` is the dense weight's size, so ``1 - nonzero / numel`` is
    its sparsity whether its zeros are masked or removed. Attention's input projections are
    rows of their own (``param`` ``in_proj_weight``); its ``out_proj`` is a Linear layer.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2))
        >>> layer_table(model, weight_numels(model), {"0": 0.5})[0]["amount"]
        0.5
    """
    modules = dict(model.named_modules())
    return [
        {
            "layer": layer,
            "param": param,
            "numel": dense.get((layer, param), t.numel()),
            "nonzero": int(torch.count_nonzero(t)),
            "in_scope": layer in amounts,
            "amount": amounts.get(layer),
        }
        for (layer, param), t in _weights(model)
        if layer in amounts or isinstance(modules[layer], _WEIGHTED)
    ]


def _skipped_attention_flops(attention: nn.MultiheadAttention, args: tuple, kwargs: dict) -> int:
    # Each projection is a matmul: 2 FLOPs per weight entry and token, so a zero saves 2 per
    # token. out_proj (never called as a module) projects one output per query token.
    given = dict(zip(("query", "key", "value"), args, strict=False)) | kwargs
    query, key, value = given["query"], given["key"], given["value"]
    if attention._qkv_same_embed_dim:
        w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight
    pairs = [(query, w_q), (key, w_k), (value, w_v), (query, attention.out_proj.weight)]
    return sum(2 * (x.numel() // x.shape[-1]) * int((w == 0).sum()) for x, w in pairs)


def _weights(model: nn.Module):
    for name, module in model.named_modules():
        for param in weight_names(module):
            yield (name, param), getattr(module, param)


def _weights_and_buffers(model: nn.Module):
    # A pruned module's parameter is `weight_orig` and the effective tensor `weight` (an attribute).
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("_orig"):
                yield getattr(module, name[: -len("_orig")])
            else:
                yield p
