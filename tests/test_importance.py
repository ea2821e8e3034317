"""Importance criteria: toy layers where each criterion's choice is known in advance, the
criteria through torch's methods and whole trials, and the combinations refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from sweep import load_layers
from sweep.errors import ConfigError
from sweep.pruning import (
    PruningMethod,
    Scope,
    check_importance,
    importance_scores,
    plan_pruning,
    prune_model,
)
from sweep.trial import prepare, run_trial
from tests.conftest import make_cfg

L1 = PruningMethod("l1_unstructured", prune.L1Unstructured)
LN = PruningMethod("ln_structured", prune.LnStructured, {"n": 1, "dim": 0})


def _linear(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    return layer


def _prune(model, method, amount, criterion, batches):
    # one-layer toys: that layer is the classifier, whose output rows are ours to prune here
    scope = Scope(prune_classifier_outputs=True)
    targets = plan_pruning(model, method, amount, scope)
    scores = importance_scores(model, targets, criterion, batches)
    prune_model(model, method, amount, scope, scores)
    return {name: m.weight_mask for name, m in model.named_modules() if hasattr(m, "weight_mask")}


def test_taylor_keeps_large_weights_the_loss_does_not_feel():
    # input feature 0 is always 0: its weights are the largest and change nothing
    model = nn.Sequential(_linear([[5.0, 1.0], [-5.0, -1.0]]))
    x = torch.tensor([[0.0, 1.0], [0.0, -2.0], [0.0, 3.0]])
    y = torch.tensor([1, 0, 1])
    masks = _prune(model, L1, 0.5, "taylor", [(x, y)])
    assert masks["0"].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    magnitude = nn.Sequential(_linear([[5.0, 1.0], [-5.0, -1.0]]))
    assert _prune(magnitude, L1, 0.5, "magnitude", [])["0"].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_taylor_sums_over_batches_and_leaves_no_gradient():
    model = nn.Sequential(_linear([[1.0, 2.0], [0.5, -1.0]]))
    batches = [(torch.tensor([[1.0, 1.0]]), torch.tensor([0])) for _ in range(3)]
    targets = plan_pruning(model, L1, 0.5, Scope())
    scores = importance_scores(model, targets, "taylor", batches)
    x, y = batches[0]
    w = model[0].weight
    g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), w)[0]
    assert torch.allclose(scores[(model[0], "weight")], 3 * (w * g).abs().detach())
    assert w.grad is None


def test_an_empty_calibration_is_refused():
    model = nn.Sequential(nn.Linear(2, 2))
    targets = plan_pruning(model, L1, 0.5, Scope())
    with pytest.raises(ValueError, match="importance taylor: no calibration batch"):
        importance_scores(model, targets, "taylor", [])


def test_wanda_weighs_each_weight_by_its_inputs_norm():
    # |w| says prune column 0; ||x_0|| = 10 x ||x_1|| says column 1 (|w| * ||x||: 10 vs 2)
    weight = [[1.0, 2.0], [-1.0, 2.0]]
    x = torch.tensor([[10.0, 1.0], [0.0, 0.0]])
    masks = _prune(nn.Sequential(_linear(weight)), L1, 0.5, "wanda", [(x, torch.tensor([0, 1]))])
    assert masks["0"].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    masks = _prune(nn.Sequential(_linear(weight)), L1, 0.5, "magnitude", [])
    assert masks["0"].tolist() == [[0.0, 1.0], [0.0, 1.0]]


def test_wanda_on_a_grouped_convolution_reads_each_groups_own_inputs():
    conv = nn.Conv2d(2, 2, 1, groups=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 1.0]).reshape(2, 1, 1, 1))
    x = torch.zeros(1, 2, 2, 2)
    x[0, 1] = 3.0  # input channel 1 feeds output channel 1 only: norm sqrt(4 * 9) = 6
    targets = plan_pruning(conv, L1, 0.5, Scope())
    scores = importance_scores(conv, targets, "wanda", [(x, torch.tensor([0]))])
    assert scores[(conv, "weight")].flatten().tolist() == [0.0, 6.0]


def test_apoz_prunes_the_channel_that_is_dead_after_batchnorm():
    # channel 0 has the larger weights and positive outputs, but BatchNorm shifts them below 0
    # and the ReLU after it zeroes them all: APoZ measured after BN prunes channel 0;
    # magnitude (or APoZ on the linear output itself) would prune channel 1
    def model():
        m = nn.Sequential(_linear([[3.0, 3.0], [1.0, 1.0]]), nn.BatchNorm1d(2), nn.ReLU())
        with torch.no_grad():
            m[1].bias.copy_(torch.tensor([-100.0, 0.0]))
        return m.eval()

    x = torch.rand(16, 2) + 0.1
    masks = _prune(model(), LN, 1, "apoz", [(x, torch.zeros(16, dtype=torch.long))])
    assert masks["0"].tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert _prune(model(), LN, 1, "magnitude", [])["0"].tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_apoz_scores_are_the_share_of_live_activations_per_channel():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.tensor([1.0, 2.0, -1.0, 0.5]).reshape(1, 1, 2, 2)  # 3 of 4 positive
    targets = plan_pruning(model, LN, 1, Scope(prune_classifier_outputs=True))
    scores = importance_scores(model, targets, "apoz", [(x, torch.tensor([0]))])[(conv, "weight")]
    assert scores.flatten().tolist() == [0.75, 0.25]
    assert model.training  # the mode it had


def test_global_pruning_ranks_importance_across_layers(tmp_path):
    # taylor on both layers at once: exactly half of all entries go, as by magnitude
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    method = PruningMethod("global_unstructured", prune.L1Unstructured, is_global=True)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
    targets = plan_pruning(model, method, 0.5, Scope())
    scores = importance_scores(model, targets, "taylor", batches)
    prune_model(model, method, 0.5, Scope(), scores)
    zeros = sum(int((m.weight == 0).sum()) for m in (model[0], model[2]))
    assert zeros == round(0.5 * (32 + 24))
    kept = torch.cat(
        [(scores[(m, "weight")] * m.weight_mask).flatten() for m in (model[0], model[2])]
    )
    dropped = torch.cat(
        [(scores[(m, "weight")][m.weight_mask == 0]).flatten() for m in (model[0], model[2])]
    )
    assert float(dropped.max()) <= float(kept[kept > 0].min())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["method.importance=apoz"],
            "method.importance=apoz scores output channels, and "
            "l1_unstructured is unstructured; accepted: apoz with a structured method along dim=0",
        ),
        (["method=global_unstructured", "method.importance=apoz"], "global_unstructured is global"),
        (
            ["method=ln_structured", "method.dim=1", "method.importance=apoz"],
            "ln_structured is structured along dim=1",
        ),
        (
            ["method=random_unstructured", "method.importance=taylor"],
            "method.importance=taylor but random_unstructured draws at random and ranks nothing; "
            "accepted: method.importance=magnitude",
        ),
        (
            ["method.importance=gradient"],
            "method.importance='gradient' is unknown; accepted: magnitude | taylor | apoz | wanda",
        ),
        (["method=nm", "method.importance=apoz"], "nm is unstructured"),
        (["importance.batches=0"], "importance.batches=0 is out of range; accepted: an int >= 1"),
    ],
)
def test_a_criterion_the_method_cannot_use_is_refused(overrides, message, tmp_path):
    with pytest.raises(ConfigError) as e:
        prepare(make_cfg(tmp_path, *overrides))
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "trials").exists()


def test_a_criterion_needing_activations_refuses_attention_projections():
    model = nn.Sequential(nn.Linear(4, 4))
    attention = nn.MultiheadAttention(4, 2)
    model.append(attention)
    method = PruningMethod("l1_unstructured", prune.L1Unstructured, importance="wanda")
    targets = plan_pruning(model, method, 0.5, Scope())
    with pytest.raises(ConfigError, match="layer '1' \\(in_proj_weight of MultiheadAttention\\)"):
        check_importance(method, targets, model)
    taylor = PruningMethod("l1_unstructured", prune.L1Unstructured, importance="taylor")
    check_importance(taylor, targets, model)  # gradients reach every parameter


def test_a_trial_ranks_by_the_criterion_and_keys_it(tmp_path):
    store = tmp_path / "results"
    rows = {
        criterion: run_trial(make_cfg(store, f"method.importance={criterion}", "amount=0.7"))
        for criterion in ("magnitude", "taylor", "wanda")
    }
    for criterion, row in rows.items():
        assert row["status"] == "complete", row["error"]
        assert row["method.importance"] == criterion
        assert row["sparsity"] == pytest.approx(0.7, abs=1e-3)
    keys = {row["trial_key"] for row in rows.values()}
    assert len(keys) == 3
    layers = load_layers(store)
    per_trial = layers.groupby("trial_key")["nonzero"].sum()
    assert per_trial.nunique() == 1  # the same count pruned, chosen differently


def test_importance_batches_count_only_for_a_data_driven_criterion(tmp_path):
    key = lambda *o: prepare(make_cfg(tmp_path, *o)).key  # noqa: E731
    assert key() == key("importance.batches=3")
    assert key("method.importance=taylor") != key(
        "method.importance=taylor", "importance.batches=3"
    )
    assert key() != key("method.importance=taylor")


def test_gradual_schedules_and_compaction_rank_by_the_criterion(tmp_path):
    store = tmp_path / "results"
    gradual = run_trial(
        make_cfg(
            store,
            "schedule=iterative",
            "schedule.steps=2",
            "method.importance=taylor",
            "amount=0.6",
            "finetune.epochs=2",
        )
    )
    assert gradual["status"] == "complete", gradual["error"]
    assert gradual["sparsity"] == pytest.approx(0.6, abs=1e-3)
    compacted = run_trial(
        make_cfg(
            store, "method=ln_structured", "compact=true", "method.importance=apoz", "amount=0.5"
        )
    )
    assert compacted["status"] == "complete", compacted["error"]
    assert compacted["compacted"] is True and compacted["flops"] < compacted["flops_dense"]
