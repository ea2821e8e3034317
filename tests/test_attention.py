"""nn.MultiheadAttention pruned like any Linear: its own projections in scope, masks that hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torchvision.models import VisionTransformer

from sweep import load_layers
from sweep.pruning import (
    PruningMethod,
    Scope,
    compact,
    make_permanent,
    prune_channel_groups,
    prune_model,
)
from sweep.trial import run_trial
from tests.conftest import make_cfg

ATTENTION = "encoder.layers.encoder_layer_0.self_attention"
L1 = PruningMethod("l1_unstructured", prune.L1Unstructured)
GLOBAL = PruningMethod("global_unstructured", prune.L1Unstructured, is_global=True)
LN = PruningMethod("ln_structured", prune.LnStructured, {"n": 2, "dim": 0})


def _vit() -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=8, patch_size=4, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16,
        num_classes=10,
    )  # fmt: skip
    # torchvision starts the head at zero, which global pruning would remove first and whole
    nn.init.normal_(model.heads.head.weight, std=0.1)
    return model


def _attention(model: nn.Module) -> nn.MultiheadAttention:
    return model.get_submodule(ATTENTION)


def _zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


def _train(model: nn.Module, steps: int) -> None:
    torch.manual_seed(1)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


class CrossAttention(nn.Module):
    """Keys and values narrower than the queries: q/k/v projections are separate weights."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, kdim=4, vdim=6, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(q, k, v, need_weights=False)[0].mean(1))


def test_linear_scope_takes_attention_projections():
    targets = prune_model(_vit(), L1, 0.5, Scope())
    assert [(t.name, t.param) for t in targets] == [
        ("conv_proj", "weight"),
        (ATTENTION, "in_proj_weight"),
        (f"{ATTENTION}.out_proj", "weight"),
        ("encoder.layers.encoder_layer_0.mlp.0", "weight"),
        ("encoder.layers.encoder_layer_0.mlp.3", "weight"),
        ("heads.head", "weight"),
    ]
    only = prune_model(_vit(), L1, 0.5, Scope(layers=("MultiheadAttention",)))
    assert [(t.name, t.param) for t in only] == [(ATTENTION, "in_proj_weight")]
    convs = prune_model(_vit(), L1, 0.5, Scope(layers=("Conv2d",)))
    assert [t.name for t in convs] == ["conv_proj"]


@pytest.mark.parametrize("method", [L1, GLOBAL], ids=lambda m: m.name)
def test_pruned_attention_trains_stays_pruned_and_folds(method):
    model = _vit()
    reference = _vit()
    targets = prune_model(model, method, 0.5, Scope())
    attention = _attention(model)
    if method.is_global:  # the same masks as torch's own global_unstructured
        prune.global_unstructured(
            [(reference.get_submodule(t.name), t.param) for t in targets],
            pruning_method=prune.L1Unstructured,
            amount=0.5,
        )
        expected = _attention(reference)
        assert torch.equal(attention.in_proj_weight_mask, expected.in_proj_weight_mask)
        assert torch.equal(attention.out_proj.weight_mask, expected.out_proj.weight_mask)
        assert sum(_zeros(t.weight) for t in targets) == 488  # half of all 976 entries
    else:
        assert _zeros(attention.in_proj_weight) == 96
        assert _zeros(attention.out_proj.weight) == 32
    zeros = (attention.in_proj_weight == 0, attention.out_proj.weight == 0)
    before = attention.out_proj.weight_orig.detach().clone()

    _train(model, steps=5)

    assert not torch.equal(attention.out_proj.weight_orig, before)  # out_proj did learn
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        masked = model(x)
    assert torch.equal(attention.in_proj_weight == 0, zeros[0])
    assert torch.equal(attention.out_proj.weight == 0, zeros[1])
    make_permanent(model)
    with torch.no_grad():
        assert torch.equal(model(x), masked)
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in model.named_parameters())
    assert torch.equal(attention.in_proj_weight == 0, zeros[0])
    assert torch.equal(attention.out_proj.weight == 0, zeros[1])


def test_pruning_attention_again_only_removes_more():
    model = _vit()
    prune_model(model, L1, 0.5, Scope())
    attention = _attention(model)
    first = attention.in_proj_weight_mask.clone(), attention.out_proj.weight_mask.clone()
    prune_model(model, L1, 0.5, Scope())
    assert (_zeros(attention.in_proj_weight), _zeros(attention.out_proj.weight)) == (144, 48)
    assert bool((attention.in_proj_weight_mask <= first[0]).all())
    assert bool((attention.out_proj.weight_mask <= first[1]).all())
    # one PruningContainer for in_proj_weight and one hook that masks out_proj, not two
    assert len(attention._forward_pre_hooks) == 2
    _train(model, steps=2)


def test_prune_remove_on_out_proj_leaves_no_hook():
    model = _vit()
    prune_model(model, L1, 0.5, Scope())
    attention = _attention(model)
    prune.remove(attention.out_proj, "weight")
    prune.remove(attention, "in_proj_weight")
    _train(model, steps=2)
    assert not attention._forward_pre_hooks and not attention.out_proj._forward_pre_hooks


def test_separate_query_key_value_projections():
    torch.manual_seed(0)
    model = CrossAttention()
    targets = prune_model(model, L1, 0.5, Scope())
    assert [(t.name, t.param, _zeros(t.weight)) for t in targets] == [
        ("attention", "q_proj_weight", 32),
        ("attention", "k_proj_weight", 16),
        ("attention", "v_proj_weight", 24),
        ("attention.out_proj", "weight", 32),
        ("head", "weight", 12),
    ]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 3, 4), torch.randn(2, 3, 6)
    for _ in range(3):
        optimizer.zero_grad()
        model(q, k, v).sum().backward()
        optimizer.step()
    model(q, k, v)
    assert [_zeros(t.weight) for t in targets] == [32, 16, 24, 32, 12]


def test_structured_removes_projection_rows_but_not_classes():
    model = _vit()
    targets = prune_model(model, LN, 0.5, Scope())
    assert "heads.head" not in [t.name for t in targets]
    attention = _attention(model)
    assert int((attention.in_proj_weight.abs().sum(1) == 0).sum()) == 12  # of 24 q/k/v rows
    assert int((attention.out_proj.weight.abs().sum(1) == 0).sum()) == 4
    _train(model, steps=2)


def test_compaction_refuses_attention_and_keeps_layerwise_masks():
    model, reference = _vit(), _vit()
    example = torch.randn(1, 3, 8, 8)
    _, groups, _ = prune_channel_groups(model, LN, 0.5, Scope(), example)
    prune_model(reference, LN, 0.5, Scope())
    assert groups == []
    masks = {n: b for n, b in model.named_buffers() if n.endswith("_mask")}
    assert masks.keys() == {n for n, _ in reference.named_buffers() if n.endswith("_mask")}
    assert all(torch.equal(b, reference.get_buffer(n)) for n, b in masks.items())
    with pytest.raises(NotImplementedError) as e:
        compact(model, groups, example)
    assert str(e.value) == (
        f"compaction does not support nn.MultiheadAttention (layer '{ATTENTION}'); "
        "the masks are kept"
    )


@pytest.fixture(scope="module")
def vit_store(tmp_path_factory):
    """One store for the trials below, so the tiny ViT's dense baseline is trained once."""
    return tmp_path_factory.mktemp("vit") / "results"


def _vit_trial(store, *overrides: str) -> dict:
    model = ["model._target_=tests.custom_models.tiny_vit", "model.name=tiny_vit", "~model.width"]
    return run_trial(make_cfg(store, *model, *overrides))


def test_trial_prunes_attention_exactly(vit_store):
    row = _vit_trial(vit_store, "method=l1_unstructured", "amount=0.5")
    assert (row["status"], row["error"], row["sparsity"]) == ("complete", None, 0.5)
    layers = load_layers(vit_store)
    layers = layers[layers.trial_key == row["trial_key"]].set_index(["layer", "param"])
    attention = f"vit.{ATTENTION}"
    projections = layers.loc[[(attention, "in_proj_weight"), (f"{attention}.out_proj", "weight")]]
    assert projections[["numel", "nonzero", "in_scope"]].values.tolist() == [
        [192, 96, True],
        [64, 32, True],
    ]
    assert (layers.nonzero * 2 == layers.numel).all() and len(layers) == 6


def test_trial_compaction_falls_back_for_attention(vit_store):
    row = _vit_trial(vit_store, "method=ln_structured", "amount=0.5", "compact=true")
    assert (row["status"], row["compacted"]) == ("complete", False)
    assert row["compact_error"] == (
        f"NotImplementedError: compaction does not support nn.MultiheadAttention "
        f"(layer 'vit.{ATTENTION}'); the masks are kept"
    )
    assert row["sparsity"] == 0.5  # the layer-wise masks of compact=false
