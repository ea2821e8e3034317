"""Compaction: channels removed for real, same function as the masks, honest fallbacks."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from sweep import load_layers, load_model
from sweep.metrics import count_params
from sweep.models import lenet, mlp, small_cnn, torchvision
from sweep.pruning import (
    PruningMethod,
    Scope,
    compact,
    not_compactable,
    prune_channel_groups,
    silence_dead_channels,
)
from sweep.sparse import dense_size, load_sparse, save_sparse, sparse_size
from sweep.trial import run_trial


def resnet18(**facts) -> nn.Module:
    return torchvision(arch="resnet18", **facts)


def vgg11(**facts) -> nn.Module:
    return torchvision(arch="vgg11_bn", classifier_width=512, **facts)


LN = PruningMethod("ln_structured", prune.LnStructured, {"n": 2, "dim": 0})
MODELS = [(small_cnn, 1, 8), (mlp, 1, 8), (lenet, 1, 8), (resnet18, 3, 32), (vgg11, 3, 32)]


def _trained_looking(build, channels, size) -> nn.Module:
    torch.manual_seed(0)
    model = build(num_classes=10, in_channels=channels, image_size=size)
    for m in model.modules():  # BatchNorm statistics and affine far from their initial values
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize(
    ("build", "channels", "size"), MODELS, ids=[b.__name__ for b, *_ in MODELS]
)
@pytest.mark.parametrize("amount", [0.25, 0.5])
def test_compacted_equals_masked(build, channels, size, amount):
    model = _trained_looking(build, channels, size)
    x = torch.randn(8, channels, size, size)
    _, groups, _ = prune_channel_groups(model, LN, amount, Scope(), x[:1])
    silence_dead_channels(groups)
    smaller = compact(model, groups, x[:1]).eval()
    with torch.no_grad():
        assert (model(x) - smaller(x)).abs().max() <= 1e-5
    assert count_params(smaller) < count_params(model)
    assert not any(hasattr(m, "weight_mask") for m in smaller.modules())
    assert any(hasattr(m, "weight_mask") for m in model.modules())  # the masked model is kept


def test_coupled_layers_lose_the_same_channels():
    model = _trained_looking(resnet18, 3, 32)
    _, groups, _ = prune_channel_groups(model, LN, 0.5, Scope(), torch.randn(1, 3, 32, 32))
    stage = next(g for g in groups if len(g.producers) > 2)  # a residual stream
    dead = [
        (m.weight_mask.flatten(1).sum(1) == 0).nonzero().squeeze(1).tolist()
        for m, _ in stage.producers
    ]
    assert all(d == dead[0] for d in dead) and len(dead[0]) == len(stage.dead) > 0


def test_layers_tied_to_one_outside_the_scope_are_named_not_left_dense_silently(
    cfg_factory, tmp_path, caplog
):
    """With the stem out of scope, layer1's convs that add into its residual stream keep
    their channels; the row said compacted, sparsity as asked, and nothing of them."""
    model = _trained_looking(resnet18, 3, 32)
    scope = Scope(exclude=["conv1"])
    _, _, tied = prune_channel_groups(model, LN, 0.5, scope, torch.randn(1, 3, 32, 32))
    assert tied == ["layer1.0.conv2", "layer1.1.conv2"]
    assert all(not hasattr(model.get_submodule(n), "weight_mask") for n in tied)

    # a trial: its dense stem (scope.dense_ends) ties the block's conv2; conv1 is compacted
    model = ["model._target_=tests.custom_models.TinyResidual", "model.name=tiny", "~model.width"]
    settings = ["method=ln_structured", "compact=true", "scope.dense_ends=true"]
    with caplog.at_level("WARNING", logger="sweep.trial"):
        row = run_trial(cfg_factory(*model, *settings))
    assert (row["compacted"], row["skipped_layers"]) == (True, "conv2")
    assert [m for m in caplog.messages if "tied" in m] == [
        "compact=true leaves dense the layers whose channels are tied (a residual add, a layer "
        "used twice) to a layer outside the scope: conv2; scope.dense_ends=false or "
        "scope.exclude brings those into the scope"
    ]
    kept = load_model(row["trial_key"], tmp_path / "results")
    assert (kept.conv1.out_channels, kept.conv2.out_channels) == (4, 8)  # conv2 only loses inputs


def test_an_amount_that_removes_every_channel_of_a_layer_says_so():
    """Masks may empty a layer; a compacted one cannot run: it was torch's 'expected weight to
    be at least 1 at dimension 0, but got weight of size [0, 16, 3, 3]'."""
    model = _trained_looking(small_cnn, 1, 8)
    x = torch.randn(1, 1, 8, 8)
    _, groups, _ = prune_channel_groups(model, LN, 0.99, Scope(), x)
    silence_dead_channels(groups)
    with pytest.raises(RuntimeError) as e:
        compact(model, groups, x)
    assert str(e.value) == (
        "the amount removes all 16 output channels of block1.conv (and of 1 more group(s)); a "
        "compacted layer keeps at least one"
    )


def test_grouped_convolutions_are_refused_plainly_and_depthwise_ones_compact():
    """A conv of groups=4 (RegNet's, ResNeXt's) failed inside Torch-Pruning: 'INDICES element
    is out of DATA bounds', or a model that computed something else."""
    x = torch.randn(1, 1, 8, 8)

    def net(groups: int) -> nn.Module:
        torch.manual_seed(0)
        conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), conv, nn.Flatten(), nn.Linear(512, 10)
        ).eval()

    grouped = net(4)
    _, groups, _ = prune_channel_groups(grouped, LN, 0.5, Scope(), x)
    assert groups == [] and hasattr(grouped[0], "weight_mask")  # masked layer-wise instead
    with pytest.raises(NotImplementedError) as e:
        compact(grouped, groups, x)
    assert str(e.value) == (
        "compaction does not support grouped convolutions (layer '2', groups=4 of 8 input "
        "channels; depthwise ones work); the masks are kept"
    )
    depthwise = net(8)
    _, groups, _ = prune_channel_groups(depthwise, LN, 0.5, Scope(), x)
    silence_dead_channels(groups)
    smaller = compact(depthwise, groups, x)
    assert (smaller[0].out_channels, smaller[2].groups) == (4, 4)
    with torch.no_grad():
        assert (smaller(x) - depthwise(x)).abs().max() <= 1e-5


def test_compacted_layer_sizes_resnet18():
    model = _trained_looking(resnet18, 3, 32)
    x = torch.randn(1, 3, 32, 32)
    _, groups, _ = prune_channel_groups(model, LN, 0.5, Scope(), x)
    silence_dead_channels(groups)
    smaller = compact(model, groups, x)
    assert (smaller.conv1.out_channels, smaller.layer1[0].conv1.out_channels) == (32, 32)
    assert (
        smaller.layer4[1].conv2.out_channels,
        smaller.fc.in_features,
        smaller.fc.out_features,
    ) == (256, 256, 10)
    assert smaller.conv1.in_channels == 3


def test_what_cannot_be_compacted_says_why():
    assert not_compactable(LN) is None
    assert not_compactable(PruningMethod("ln", prune.LnStructured, {"n": 2, "dim": 1})) == (
        "ln with dim=1 prunes input slices; compaction removes output channels (dim=0)"
    )
    assert "is unstructured" in not_compactable(PruningMethod("l1", prune.L1Unstructured))


def test_trial_finetunes_and_measures_the_compacted_model(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("method=ln_structured", "amount=0.5", "compact=true"))
    assert row["compacted"] and row["compact_error"] is None
    assert row["params"] == 6274 and row["params_nonzero"] == 6274  # no zeros left to count
    assert row["flops"] == 304768 < row["flops_dense"] == 1199360
    assert row["sparsity"] == 1 - (72 + 1152 + 4608) / (
        144 + 4608 + 18432
    )  # rows and inputs removed
    assert row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
    assert row["acc_finetuned"] > row["acc_pruned"]
    layers = load_layers(tmp_path / "results").set_index("layer")
    assert (
        layers.loc["block2.conv", "numel"] == 4608
        and layers.loc["block2.conv", "nonzero"] == 4608 // 4
    )
    assert layers.loc["classifier", "nonzero"] == 320 and not layers.loc["classifier", "in_scope"]


def test_trial_without_compactable_method_keeps_masks(cfg_factory):
    row = run_trial(cfg_factory("method=l1_unstructured", "amount=0.9", "compact=true"))
    assert not row["compacted"] and row["compact_error"].startswith(
        "l1_unstructured is unstructured"
    )
    assert row["params"] == 24058 and row["size_bytes"] < 0.3 * row["size_bytes_dense"]


def test_unsupported_graph_falls_back_to_masks(cfg_factory):
    row = run_trial(
        cfg_factory(
            "model._target_=tests.custom_models.ChannelShuffleNet",
            "model.name=shuffle",
            "~model.width",
            "method=ln_structured",
            "amount=0.5",
            "compact=true",
        )
    )
    assert row["status"] == "complete" and not row["compacted"]
    assert row["compact_error"].startswith(
        "RuntimeError: the compacted model computes something else than the masked one"
    )
    assert row["sparsity"] == 0.5 and row["params"] == count_params(
        __import__("tests.custom_models").custom_models.ChannelShuffleNet(10, 1, 8)
    )


def test_sparse_checkpoint_round_trip():
    torch.manual_seed(0)
    model = small_cnn(num_classes=10, in_channels=1, image_size=8)
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            prune.l1_unstructured(m, "weight", 0.9)
            prune.remove(m, "weight")
    state = model.state_dict()
    buf = io.BytesIO()
    save_sparse(state, buf)
    buf.seek(0)
    back = load_sparse(buf)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) and back[k].dtype == state[k].dtype for k in state)
    assert sparse_size(state) == buf.getbuffer().nbytes < 0.25 * dense_size(state)
    dense_only = {"w": torch.randn(100)}  # nothing to gain: stored as it is
    assert abs(sparse_size(dense_only) - dense_size(dense_only)) < 100
