from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from sweep.errors import ConfigError
from sweep.pruning._apply import make_permanent, plan_pruning, prune_model
from sweep.pruning._method import PruningMethod
from sweep.pruning._scope import Scope, classifier_name
from sweep.pruning._target import Scores, Target

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels of coupled layers that go together (one Torch-Pruning group).

    ``producers`` are (module, channel index per root channel) for every Conv/Linear whose
    output channels the group holds: through a residual addition several layers share them.
    ``dead`` are the root channel indices the method pruned.
    """

    root: nn.Module
    producers: tuple[tuple[nn.Module, torch.Tensor], ...]
    norms: tuple[tuple[nn.Module, torch.Tensor], ...]
    dead: torch.Tensor


def prune_channel_groups(
    model: nn.Module,
    method: PruningMethod,
    amount: float | int,
    scope: Scope,
    example: torch.Tensor,
    scores: Scores | None = None,
) -> tuple[list[Target], list[ChannelGroup], list[str]]:
    """Structured pruning of output channels by dependency group, ready for `compact`.

    Layer-wise ``torch.nn.utils.prune`` masks on two layers joined by a residual addition pick
    different channels, so neither can be removed. Here the method's own ``compute_mask`` sees
    each group's producers stacked into one ``(channels, -1)`` matrix, and every producer gets
    the same channel mask (a ``prune.custom_from_mask``), so the chosen channels can go.
    Groups that hold a layer outside the scope are left dense. A model `compact` refuses (one
    with ``nn.MultiheadAttention``) is pruned layer-wise by `prune_model` instead, with no
    groups, so its fallback to the masks is the model ``compact=false`` gives.

    Returns:
        The targets (as `prune_model` returns them), the groups with their dead channels, and
        the names of the layers in scope left dense because their group holds a layer outside
        it (a residual add to the dense stem, a layer applied twice).
    """
    targets = plan_pruning(model, method, amount, scope)
    reason = not_compactable(method)
    if reason is not None:
        raise ConfigError(reason)
    if _unsupported(model) is not None:
        return prune_model(model, method, amount, scope, scores), [], []
    in_scope = {t.module: t for t in targets}
    names = {m: n for n, m in model.named_modules()}
    tied: set[str] = set()
    graph = _graph(model, example)
    classifier = dict(model.named_modules()).get(classifier_name(model) or "")
    ignored = [classifier] if classifier is not None and classifier not in in_scope else []
    groups = []
    types = tuple(scope.types().values())
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=types):
        producers, norms = [], []
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            order = torch.tensor(item.idxs)[torch.argsort(torch.tensor(item.root_idxs))]
            if getattr(handler, "__name__", "") == "prune_out_channels":
                if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
                    producers.append((module, order))
                elif isinstance(module, _NORMS):
                    norms.append((module, order))
        if not producers:
            continue
        if any(m not in in_scope for m, _ in producers):
            tied.update(names[m] for m, _ in producers if m in in_scope)
            continue
        root = producers[0][0]
        rows = [
            (m.weight if scores is None else scores[(m, "weight")]).detach()[idx]
            for m, idx in producers
        ]
        stacked = torch.cat([r.reshape(len(r), -1) for r in rows], dim=1)
        group_amount = in_scope[root].amount
        mask = method.make(group_amount).compute_mask(stacked, torch.ones_like(stacked))
        dead = (mask.reshape(len(mask), -1).sum(1) == 0).nonzero().squeeze(1)
        for module, idx in producers:
            layer_mask = torch.ones_like(module.weight)
            layer_mask[idx[dead]] = 0
            prune.custom_from_mask(module, "weight", layer_mask)
        groups.append(ChannelGroup(root, tuple(producers), tuple(norms), dead))
    pruned = {names[m] for g in groups for m, _ in g.producers}
    order = {n: i for i, n in enumerate(names.values())}
    return targets, groups, sorted(tied - pruned, key=order.__getitem__)


def not_compactable(method: PruningMethod) -> str | None:
    """Why ``method``'s result cannot be compacted, or ``None`` when it can."""
    if method.cls is None:
        return "method none prunes nothing to remove"
    if not method.structured:
        return (
            f"{method.name} is unstructured: single zeros cannot be removed "
            "(size_bytes counts them); compaction needs a structured method with dim=0"
        )
    if method.dim != 0:
        return (
            f"{method.name} with dim={method.dim} prunes input slices; compaction removes "
            "output channels (dim=0)"
        )
    return None


def silence_dead_channels(groups: list[ChannelGroup]) -> None:
    """Zero the biases and norm-layer affine entries of pruned channels.

    A masked channel still adds its bias, and BatchNorm's ``beta`` turns its zeros into a
    constant; zeroed, the masked model computes what the compacted one will.
    """
    with torch.no_grad():
        for g in groups:
            for module, idx in g.producers:
                if module.bias is not None:
                    module.bias[idx[g.dead]] = 0
            for module, idx in g.norms:
                if getattr(module, "weight", None) is not None:
                    module.weight[idx[g.dead]] = 0
                if getattr(module, "bias", None) is not None:
                    module.bias[idx[g.dead]] = 0


def compact(model: nn.Module, groups: list[ChannelGroup], example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with the groups' dead channels physically removed.

    Torch-Pruning's dependency graph removes each channel everywhere it lives: the producers'
    rows and biases, norm-layer entries, the consumers' input channels and residual partners.
    ``model`` itself is left as it was (masked), so a failure can fall back to it.

    Raises:
        NotImplementedError: ``model`` has ``nn.MultiheadAttention``, whose packed projections
            and head split the dependency graph does not follow.
        RuntimeError: The compacted model computes something else than the masked one.
    """
    reason = _unsupported(model)
    if reason is not None:
        raise NotImplementedError(reason)
    names = {m: n for n, m in model.named_modules()}
    order = {m: i for i, m in enumerate(names)}
    # a layer of no channel cannot run (a conv of weight [0, 16, 3, 3])
    emptied = [g for g in groups if len(g.dead) == len(g.producers[0][1]) > 0]
    if emptied:
        first = min(emptied, key=lambda g: order[g.root])
        raise RuntimeError(
            f"the amount removes all {len(first.dead)} output channels of {names[first.root]}"
            + (f" (and of {len(emptied) - 1} more group(s))" if len(emptied) > 1 else "")
            + "; a compacted layer keeps at least one"
        )
    for module in model.modules():
        # a masked module's `weight` is orig * mask, a non-leaf tensor deepcopy refuses; the
        # pruning hook recomputes it on the next forward anyway
        if hasattr(module, "weight_orig"):
            module.weight = module.weight.detach()
    copied = copy.deepcopy(model)
    modules = dict(copied.named_modules())
    make_permanent(copied)
    graph = _graph(copied, example)
    for g in groups:
        if len(g.dead) == 0:
            continue
        root = modules[names[g.root]]
        root_idx = g.producers[0][1]
        fn = graph.get_pruner_of_module(root).prune_out_channels
        graph.get_pruning_group(root, fn, root_idx[g.dead].tolist()).prune()
    _check_same_function(model, copied, example)
    return copied


def _unsupported(model: nn.Module) -> str | None:
    # Torch-Pruning's graph couples the residual stream through attention with wrong shapes
    # ("shape '[1, 8, 4]' is invalid"), and no group holds in_proj_weight: refuse plainly.
    name = next((n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)), None)
    if name is not None:
        return (
            f"compaction does not support nn.MultiheadAttention (layer {name!r}); the masks are "
            "kept"
        )
    # Grouped convolutions other than depthwise ones: the groups' channel indices come out of
    # the graph out of bounds ("INDICES element is out of DATA bounds"), or the result differs.
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups != m.in_channels:
            return (
                f"compaction does not support grouped convolutions (layer {name!r}, "
                f"groups={m.groups} of {m.in_channels} input channels; depthwise ones work); "
                "the masks are kept"
            )
    return None


def _check_same_function(masked: nn.Module, compacted: nn.Module, example: torch.Tensor) -> None:
    # A graph the dependency tracer misreads gives a model that runs but computes something
    # else; one forward pass on the example tells.
    modes = masked.training, compacted.training
    masked.eval()
    compacted.eval()
    try:
        with torch.no_grad():
            expected, got = masked(example), compacted(example)
    finally:
        masked.train(modes[0])
        compacted.train(modes[1])
    if got.shape != expected.shape:
        raise RuntimeError(
            f"the compacted model's output is {tuple(got.shape)}, the masked one's "
            f"{tuple(expected.shape)}; this graph is not supported"
        )
    scale = float(expected.abs().max()) + 1e-12
    if float((got - expected).abs().max()) > 1e-4 * scale:
        diff = float((got - expected).abs().max())
        raise RuntimeError(
            f"the compacted model computes something else than the masked one "
            f"(max |difference| {diff:.3g} on the example input); this graph is not supported"
        )


def _graph(model: nn.Module, example: torch.Tensor):
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    finally:
        model.train(was_training)
