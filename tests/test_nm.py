"""N:M semi-structured sparsity: the pattern exactly, layers it skips, trials, refusals, and the
2:4 kernels where a GPU of compute capability >= 8.0 runs them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from sweep import load_layers, load_results
from sweep.errors import ConfigError
from sweep.pruning import (
    NMSparsity,
    PruningMethod,
    Scope,
    importance_scores,
    make_permanent,
    nm_skipped,
    plan_pruning,
    prune_model,
    semi_structured,
    semi_structured_unavailable,
)
from sweep.trial import prepare, run_trial
from tests.conftest import make_cfg, run_cli


def _zeros_per_group(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Zeros in every group of m consecutive weights along dim 1 (input features/channels)."""
    return (weight.movedim(1, -1).reshape(-1, m) == 0).sum(1)


def _nm(n: int = 2, m: int = 4, **kwargs) -> PruningMethod:
    return PruningMethod("nm", NMSparsity, {"n": n, "m": m}, **kwargs)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8), (1, 2)])
def test_exactly_n_zeros_in_every_group_of_m_along_the_input(n, m):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(m, 2 * m, 3), nn.Flatten(), nn.Linear(2 * m, 3 * m))
    targets = prune_model(model, _nm(n, m), n / m, Scope())
    assert [t.name for t in targets] == ["0", "2"]
    for t in targets:
        assert _zeros_per_group(t.weight, m).tolist() == [n] * (t.weight.numel() // m)
        # the n smallest of each group: every zero was no larger than every survivor
        orig = t.module.weight_orig.detach().movedim(1, -1).reshape(-1, m).abs()
        keep = t.weight.detach().movedim(1, -1).reshape(-1, m) != 0
        dropped_max = orig.masked_fill(keep, -torch.inf).amax(1)
        kept_min = orig.masked_fill(~keep, torch.inf).amin(1)
        assert bool((dropped_max <= kept_min).all())


def test_groups_run_along_input_channels_of_a_convolution():
    conv = nn.Conv2d(4, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([4.0, -1.0, 3.0, 0.5]).reshape(1, 4, 1, 1))
    prune_model(conv, _nm(), 0.5, Scope())
    assert conv.weight.flatten().tolist() == [4.0, 0.0, 3.0, 0.0]


def test_pruning_again_keeps_the_pattern():
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    prune_model(layer, _nm(), 0.5, Scope())
    prune_model(layer, _nm(), 0.5, Scope())
    assert _zeros_per_group(layer.weight, 4).tolist() == [2] * 8


def test_layers_whose_input_is_not_a_multiple_of_m_are_skipped_and_named():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    assert nm_skipped(model, _nm(), Scope()) == ["0"]
    targets = prune_model(model, _nm(), 0.5, Scope())
    assert [t.name for t in targets] == ["2"]
    assert int((model[0].weight == 0).sum()) == 0
    only = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(ConfigError, match=r"whose input size is a multiple of method\.m=4"):
        plan_pruning(only, _nm(), 0.5, Scope())


def test_importance_ranks_within_each_group():
    # magnitude keeps columns 0 and 2 of each group; wanda's input norms keep 1 and 3
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[4.0, 1.0, 3.0, 1.0], [4.0, 1.0, 3.0, 1.0]]))
    x = torch.tensor([[0.1, 10.0, 0.1, 10.0]])
    method = _nm(importance="wanda")
    scope = Scope()
    targets = plan_pruning(layer, method, 0.5, scope)
    scores = importance_scores(layer, targets, "wanda", [(x, torch.tensor([0]))])
    prune_model(layer, method, 0.5, scope, scores)
    assert layer.weight_mask.tolist() == [[0.0, 1.0, 0.0, 1.0]] * 2


@pytest.mark.parametrize(
    "n, m, message",
    [
        (4, 4, "method.n=4 with method.m=4: n zeros in every group of m; accepted: 1 <= n < m"),
        (5, 4, "method.n=5 with method.m=4"),
        (0, 4, "method.n=0 with method.m=4"),
        (1, 1, "method.m=1 is too small; accepted: an int m >= 2"),
    ],
)
def test_bad_n_and_m_are_refused(n, m, message, tmp_path):
    with pytest.raises(ConfigError) as e:
        prepare(make_cfg(tmp_path, "method=nm", f"method.n={n}", f"method.m={m}"))
    assert message in str(e.value)


def test_bad_n_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    result = run_cli("method=nm", "method.n=4", f"store.path={tmp_path / 'results'}", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: method.n=4 with method.m=4: n zeros in every group of m; "
        "accepted: 1 <= n < m (2:4: n=2, m=4)"
    ]
    assert not (tmp_path / "results").exists()


def test_a_trial_records_n_over_m_and_the_layers_it_skipped(tmp_path):
    store = tmp_path / "results"
    # small_cnn: block1.conv reads 1 input channel (skipped); the others read 16, 32, 32x...
    cfg = make_cfg(store, "method=nm", "amount=0.9", "compact=true")
    row = run_trial(cfg)
    assert row["status"] == "complete", row["error"]
    assert row["amount"] == 0.5  # n / m, whatever amount was asked
    assert row["skipped_layers"] == "block1.conv"
    assert row["sparsity"] == 0.5
    assert row["compacted"] is False
    assert "2:4 kernels need a CUDA GPU of compute capability >= 8.0" in row["compact_error"]
    layers = load_layers(store).set_index("layer")
    assert layers.loc["block1.conv", "nonzero"] == layers.loc["block1.conv", "numel"]
    pruned = layers.drop("block1.conv")
    assert (pruned["nonzero"] == pruned["numel"] // 2).all()
    assert load_results(store)["skipped_layers"].tolist() == ["block1.conv"]
    # the amount asked is not what N:M prunes: one trial whatever it was
    other = make_cfg(store, "method=nm", "amount=0.3", "compact=true")
    assert prepare(other).key == row["trial_key"]


def test_other_methods_record_no_skipped_layers(tmp_path):
    row = run_trial(make_cfg(tmp_path / "results", "amount=0.3"))
    assert row["skipped_layers"] is None


def test_semi_structured_is_refused_plainly_off_gpu():
    assert "runs on cpu" in semi_structured_unavailable(torch.device("cpu"), 2, 4)
    assert "2:4 only, not 1:4" in semi_structured_unavailable(torch.device("cpu"), 1, 4)


def _has_sparse_tensor_cores() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


@pytest.mark.skipif(not _has_sparse_tensor_cores(), reason="needs a CUDA GPU, compute >= 8.0")
def test_2_4_layers_run_on_semi_structured_kernels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128)).cuda()
    prune_model(model, _nm(), 0.5, Scope())
    make_permanent(model)
    fast, converted = semi_structured(model, {"0", "2"}, torch.float16)
    assert converted == ["0", "2"]
    x = torch.randn(64, 128, device="cuda", dtype=torch.float16)
    expected = model.half()(x)
    assert torch.allclose(fast(x), expected, atol=1e-2, rtol=1e-2)


def test_a_gradual_schedule_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="schedule=iterative needs a method that takes an amount"):
        prepare(make_cfg(tmp_path, "method=nm", "schedule=iterative"))


class _Transposed(prune.BasePruningMethod):
    """A user's method whose mask comes back in a permuted layout (the entries are right)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: float) -> None:
        self.amount = amount

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        keep = t.abs() > t.abs().flatten().kthvalue(int(self.amount * t.numel())).values
        return keep.movedim(1, -1).contiguous().movedim(-1, 1).to(default_mask.dtype)


@pytest.mark.parametrize(
    "method", [_nm(), PruningMethod("transposed", _Transposed)], ids=["nm", "user"]
)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_pruned_weight_keeps_the_dense_weights_layout(method, layout):
    """A mask in another layout than its weight made `weight_orig * mask` permuted, and the
    convolution run another kernel than dense: N:M read a 1.4x CPU speedup it did not earn."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3))
    model = model.to(memory_format=layout)
    strides = [model[0].weight.stride(), model[2].weight.stride()]
    prune_model(model, method, 0.5, Scope())
    for conv, stride in zip((model[0], model[2]), strides, strict=True):
        assert conv.weight_mask.stride() == stride
        assert conv.weight.stride() == stride
        assert conv.weight.is_contiguous(memory_format=layout)
        assert (conv.weight == 0).sum() == conv.weight.numel() // 2
        model(torch.randn(1, 8, 12, 12))  # the forward hook recomputes it
        assert conv.weight.stride() == stride


@pytest.mark.parametrize(
    "method",
    [["method=nm"], ["method._target_=tests.custom_methods.EveryOther", "method.name=every_other"]],
    ids=["nm", "user"],
)
def test_per_layer_amounts_are_refused_for_a_method_that_takes_no_amount(tmp_path, method):
    """scope.amounts.block2.conv=0 still pruned block2 2:4, and its layers row read amount 0."""
    cfg = make_cfg(tmp_path, *method, "+scope.amounts.block2.conv=0")
    with pytest.raises(
        ConfigError,
        match=r"^scope.amounts sets an amount per layer, but method (nm|every_other) "
        r"\((NMSparsity|EveryOther)\) takes no amount: it prunes every layer in scope alike; "
        r"accepted: scope.layers and scope.exclude to choose its layers, or a method whose "
        r"constructor takes amount$",
    ):
        prepare(cfg)
