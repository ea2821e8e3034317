"""FLOPs, parameter counts, latency and the per-layer table."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from sweep.metrics import (
    count_flops,
    count_nonzero,
    count_params,
    latency_ms,
    layer_table,
    removed_fraction,
    weight_numels,
)


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


def test_params_and_nonzero_follow_masks():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2))
    assert count_params(model) == 110 + 22
    prune.l1_unstructured(model[0], "weight", 40)
    assert count_params(model) == 132  # masked entries still take memory
    assert count_nonzero(model) == 132 - 40


def test_layer_table_and_latency():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    dense = weight_numels(model)
    assert dense == {"0": 16, "2": 8}
    prune.l1_unstructured(model[2], "weight", 3)
    rows = layer_table(model, dense, {"2"})
    assert rows == [
        {"layer": "0", "param": "weight", "numel": 16, "nonzero": 16, "in_scope": False},
        {"layer": "2", "param": "weight", "numel": 8, "nonzero": 5, "in_scope": True},
    ]
    assert removed_fraction(model, dense, {"2"}) == 3 / 8
    assert removed_fraction(model, dense, {"0", "2"}) == 3 / 24
    assert latency_ms(model, torch.zeros(8, 4), warmup=1, repeats=3) > 0
