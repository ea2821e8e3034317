"""FLOPs, parameter counts, latency and the per-layer table."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models as tv

from sweep import metrics, models
from sweep.metrics import (
    count_flops,
    count_nonzero,
    count_params,
    latency_ms,
    layer_table,
    removed_fraction,
    weight_numels,
)
from sweep.pruning import PruningMethod, Scope, make_permanent, prune_model


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def test_flops_of_known_layers():
    assert count_flops(nn.Linear(16, 8), torch.zeros(1, 16)) == 2 * 16 * 8
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert count_flops(conv, torch.zeros(1, 3, 5, 5)) == 2 * (3 * 9) * 4 * 25


def test_flops_skip_zeros():
    layer = nn.Linear(10, 10, bias=False)
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(10, 2, bias=False))
    dense = count_flops(model, torch.zeros(1, 10))
    prune.l1_unstructured(layer, "weight", 0.3)
    assert count_flops(model, torch.zeros(1, 10)) == dense - 2 * 30
    assert count_flops(model, torch.zeros(1, 10), zero_aware=False) == dense


@pytest.mark.parametrize(
    ("arch", "size"),
    [("resnet18", 32), ("mobilenet_v3_small", 32), ("vit", 32), ("small_cnn", 8)],
)
def test_flops_are_the_flop_counters_on_built_models(arch, size):
    """The tally `count_flops` runs gives `FlopCounterMode`'s total: convolutions, depthwise
    ones, attention, and the pieces it leaves uncounted."""
    torch.manual_seed(0)
    if arch == "small_cnn":
        model = models.small_cnn(10, 1, size)
        x = torch.randn(2, 1, size, size)
    elif arch == "vit":
        model = tv.VisionTransformer(size, 8, 2, 2, 32, 64, num_classes=10)
        x = torch.randn(2, 3, size, size)
    else:
        model = models.torchvision(10, 3, size, arch)
        x = torch.randn(2, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.train()(x)  # attention's regular path (in eval it runs one uncounted kernel)
    assert count_flops(model, x, zero_aware=False) == counter.get_total_flops() > 0


def _conv_net(stride: int) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=stride)
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _masked(dense: nn.Module, amount: float) -> nn.Module:
    model = copy.deepcopy(dense)
    prune_model(model, PruningMethod("l1", prune.L1Unstructured), amount, Scope(("Conv2d",)))
    make_permanent(model)
    return model


def test_flops_of_an_architecture_counted_before_equal_a_fresh_count():
    x = torch.zeros(1, 3, 9, 9)
    dense = _conv_net(1)
    conv_flops = 2 * 27 * 8 * 49
    fresh = {}
    for amount in (0.25, 0.5, 0.75):
        metrics._PROFILES.clear()
        fresh[amount] = count_flops(_masked(dense, amount), x)
    assert count_flops(dense, x) == conv_flops + 2 * 8 * 4
    for amount, flops in fresh.items():
        model = _masked(dense, amount)
        passes = []
        model.register_forward_hook(lambda *_, seen=passes: seen.append(1))
        assert count_flops(model, x) == flops == conv_flops + 64 - round(conv_flops * amount)
        assert passes == []  # the dense model's counted pass served: only zeros were counted
    # the same tensor shapes with another stride are another architecture
    assert count_flops(_conv_net(2), x) == 2 * 27 * 8 * 16 + 64


def test_params_and_nonzero_follow_masks():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2))
    assert count_params(model) == 110 + 22
    prune.l1_unstructured(model[0], "weight", 40)
    assert count_params(model) == 132  # masked entries still take memory
    assert count_nonzero(model) == 132 - 40


def test_layer_table_and_latency():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    dense = weight_numels(model)
    assert dense == {("0", "weight"): 16, ("2", "weight"): 8}
    prune.l1_unstructured(model[2], "weight", 3)
    rows = layer_table(model, dense, {"2": 3})
    assert rows == [
        {
            "layer": "0",
            "param": "weight",
            "numel": 16,
            "nonzero": 16,
            "in_scope": False,
            "amount": None,
        },
        {"layer": "2", "param": "weight", "numel": 8, "nonzero": 5, "in_scope": True, "amount": 3},
    ]
    assert removed_fraction(model, dense, {"2"}) == 3 / 8
    assert removed_fraction(model, dense, {"0", "2"}) == 3 / 24
    assert latency_ms(model, torch.zeros(8, 4), warmup=1, repeats=3) > 0


def test_attention_flops_count_projections_and_skip_zeros():
    torch.manual_seed(0)
    model = SelfAttention()
    x = torch.randn(2, 5, 8)  # 10 tokens
    slow_path = FlopCounterMode(display=False)  # training: attention's regular, counted path
    with slow_path:
        model.train()(x)
    dense = count_flops(model, x)
    assert dense == slow_path.get_total_flops() >= 2 * 10 * (24 * 8 + 8 * 8)
    prune_model(model, PruningMethod("l1", prune.L1Unstructured), 0.5, Scope(("Linear",)))
    # 96 zeros of in_proj_weight and 32 of out_proj.weight, 2 FLOPs each per token
    assert count_flops(model, x) == dense - 2 * 10 * (96 + 32)
    assert count_flops(model, x, zero_aware=False) == dense


def test_layer_table_lists_attention_projections():
    model = nn.Sequential(SelfAttention(), nn.Linear(8, 2))
    dense = weight_numels(model)
    assert dense == {
        ("0.attention", "in_proj_weight"): 192,
        ("0.attention.out_proj", "weight"): 64,
        ("1", "weight"): 16,
    }
    prune_model(model, PruningMethod("l1", prune.L1Unstructured), 0.25, Scope(("Linear",)))
    rows = layer_table(model, dense, {"0.attention": 0.25, "0.attention.out_proj": 0.25})
    assert rows == [
        {
            "layer": "0.attention",
            "param": "in_proj_weight",
            "numel": 192,
            "nonzero": 144,
            "in_scope": True,
            "amount": 0.25,
        },
        {
            "layer": "0.attention.out_proj",
            "param": "weight",
            "numel": 64,
            "nonzero": 48,
            "in_scope": True,
            "amount": 0.25,
        },
        {
            "layer": "1",
            "param": "weight",
            "numel": 16,
            "nonzero": 12,
            "in_scope": False,
            "amount": None,
        },
    ]
    assert removed_fraction(model, dense, {"0.attention", "0.attention.out_proj"}) == 0.25


def test_layers_in_scope_of_other_types_are_measured():
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16))
    dense = weight_numels(model)
    assert dense == {("0", "weight"): 144, ("1", "weight"): 16}
    prune.l1_unstructured(model[1], "weight", 4)
    assert layer_table(model, dense, {"1": 4}) == [
        {
            "layer": "0",
            "param": "weight",
            "numel": 144,
            "nonzero": 144,
            "in_scope": False,
            "amount": None,
        },
        {
            "layer": "1",
            "param": "weight",
            "numel": 16,
            "nonzero": 12,
            "in_scope": True,
            "amount": 4,
        },
    ]
    assert removed_fraction(model, dense, {"1"}) == 0.25
