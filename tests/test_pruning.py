"""The pruning contract, checked for every conf/method option, plus scope and validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import prune

from sweep.errors import ConfigError
from sweep.models import small_cnn
from sweep.pruning import (
    PruningMethod,
    Scope,
    end_layers,
    make_permanent,
    plan_pruning,
    prune_model,
    sparsity,
)
from sweep.trial import prepare
from tests.conftest import make_cfg

METHODS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/method").glob("*.yaml"))
# methods whose amount is their own, not the trial's: their contract is in tests/test_nm.py
OWN_AMOUNT = {"nm"}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return small_cnn(num_classes=10, in_channels=1, image_size=8)


def _method(name: str, tmp_path) -> PruningMethod:
    return PruningMethod.from_config(make_cfg(tmp_path, f"method={name}").method)


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")}


def test_every_method_config_is_covered():
    assert {"none", "random_unstructured", "l1_unstructured", "random_structured"} <= set(METHODS)
    assert {"ln_structured", "global_unstructured"} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(set(METHODS) - OWN_AMOUNT))
def test_method_contract(name, tmp_path):
    """Achieved sparsity matches the amount; pruning again only removes more; the model runs."""
    method = _method(name, tmp_path)
    model = _model()
    targets = prune_model(model, method, 0.3, Scope())

    for t in targets:
        unit = t.weight.shape[method.dim] if method.structured else t.weight.numel()
        if method.cls is None:
            assert int((t.weight == 0).sum()) == 0
        elif method.structured:
            # whole slices along dim: exactly round(0.3 * slices) of them are zero
            dims = [d for d in range(t.weight.dim()) if d != method.dim % t.weight.dim()]
            dead = (t.weight.abs().sum(dim=dims) == 0).sum()
            assert int(dead) == round(0.3 * unit)
        elif not method.is_global:
            assert int((t.weight == 0).sum()) == round(0.3 * unit)
    if method.is_global:
        total = sum(t.weight.numel() for t in targets)
        assert sum(int((t.weight == 0).sum()) for t in targets) == round(0.3 * total)
    first = sparsity(targets)
    expected = 0.0 if method.cls is None else 0.3
    assert first == pytest.approx(expected, abs=0.02)

    before = _masks(model)
    prune_model(model, method, 0.3, Scope())
    after = _masks(model)
    assert before.keys() == after.keys()
    for layer, mask in before.items():
        assert bool((after[layer] <= mask).all()), f"{name}: a pruned entry of {layer} came back"
    assert sparsity(targets) >= first
    if method.cls is not None:
        assert sparsity(targets) > first

    out = model(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    make_permanent(model)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    assert torch.equal(model(torch.ones(2, 1, 8, 8)), model(torch.ones(2, 1, 8, 8)))


def test_int_amount_is_a_count():
    model = _model()
    method = PruningMethod("l1_unstructured", prune.L1Unstructured)
    targets = prune_model(model, method, 7, Scope())
    assert [int((t.weight == 0).sum()) for t in targets] == [7] * len(targets)


def test_l1_removes_smallest_magnitudes():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -3.0, 0.2, -0.05]]))
    model = nn.Sequential(layer)
    prune_model(model, PruningMethod("l1", prune.L1Unstructured), 0.5, Scope())
    assert (layer.weight != 0).tolist() == [[False, True, True, False]]


def test_structured_methods_keep_classifier_outputs_by_default():
    method = PruningMethod("ln_structured", prune.LnStructured, {"n": 2, "dim": 0})
    model = _model()
    names = [t.name for t in prune_model(model, method, 0.5, Scope())]
    assert names == ["block1.conv", "block2.conv", "block3.conv"]
    assert int((model.classifier.weight == 0).sum()) == 0

    model = _model()
    scope = Scope(prune_classifier_outputs=True)
    names = [t.name for t in prune_model(model, method, 0.5, scope)]
    assert names[-1] == "classifier"
    assert int((model.classifier.weight.abs().sum(1) == 0).sum()) == 5


def test_structured_along_inputs_may_prune_classifier():
    method = PruningMethod("ln_structured", prune.LnStructured, {"n": 1, "dim": 1})
    names = [t.name for t in prune_model(_model(), method, 0.25, Scope())]
    assert names[-1] == "classifier"


def test_unstructured_prunes_classifier():
    method = PruningMethod("l1", prune.L1Unstructured)
    names = [t.name for t in prune_model(_model(), method, 0.5, Scope())]
    assert names == ["block1.conv", "block2.conv", "block3.conv", "classifier"]


def test_per_type_amounts_and_exclusions():
    model = _model()
    scope = Scope(amounts={"Conv2d": 0.2, "Linear": 0.4}, exclude=("block1.*",))
    targets = prune_model(model, PruningMethod("l1", prune.L1Unstructured), 0.9, scope)
    got = {t.name: int((t.weight == 0).sum()) / t.weight.numel() for t in targets}
    assert set(got) == {"block2.conv", "block3.conv", "classifier"}
    assert got["block2.conv"] == pytest.approx(0.2, abs=1e-3)
    assert got["classifier"] == pytest.approx(0.4, abs=1e-3)
    assert int((model.block1.conv.weight == 0).sum()) == 0


def test_per_layer_amounts_by_name_and_pattern_most_specific_first():
    amounts = {
        "Conv2d": 0.2,
        "block2*": 0.6,
        "block3.*": 0.5,
        "block3.conv": 0.7,
        "classifier": 0.3,
    }
    targets = prune_model(
        _model(), PruningMethod("l1", prune.L1Unstructured), 0.9, Scope(amounts=amounts)
    )
    zeros = {t.name: int((t.weight == 0).sum()) for t in targets}
    assert zeros == {
        "block1.conv": round(0.2 * 144),  # its type
        "block2.conv": round(0.6 * 4608),  # the only pattern that matches it
        "block3.conv": round(0.7 * 18432),  # its name beats block3.* and Conv2d
        "classifier": round(0.3 * 640),  # its name; no Linear entry, so not 0.9 either
    }


def test_per_layer_amounts_from_the_command_line(tmp_path):
    # Hydra nests a dotted key: scope.amounts.block2.conv=0.1 is {block2: {conv: 0.1}}
    cfg = make_cfg(tmp_path, "+scope.amounts.block2.conv=0.1", "+scope.amounts.Linear=0.4")
    scope = Scope.from_config(cfg.scope)
    assert scope.amounts == {"block2.conv": 0.1, "Linear": 0.4}
    targets = plan_pruning(_model(), PruningMethod("l1", prune.L1Unstructured), 0.9, scope)
    assert {t.name: t.amount for t in targets} == {
        "block1.conv": 0.9,
        "block2.conv": 0.1,
        "block3.conv": 0.9,
        "classifier": 0.4,
    }
    # the same amounts written flat, as in a config file, are the same trial
    flat = make_cfg(tmp_path)
    OmegaConf.set_struct(flat, False)
    flat.scope.amounts = {"block2.conv": 0.1, "Linear": 0.4}
    assert prepare(flat, check_store=False).key == prepare(cfg, check_store=False).key


def test_a_per_layer_amount_that_matches_nothing_is_refused():
    method = PruningMethod("l1", prune.L1Unstructured)
    with pytest.raises(ConfigError) as e:
        plan_pruning(_model(), method, 0.5, Scope(amounts={"block9.conv": 0.1}))
    assert str(e.value) == (
        "scope.amounts entry 'block9.conv' matches no layer in scope; layers are: "
        "block1.conv, block2.conv, block3.conv, classifier"
    )


def test_dense_ends_keep_the_first_layer_and_the_classifier(tmp_path):
    model = _model()
    scope = Scope.from_config(make_cfg(tmp_path, fast=False).scope)  # the default: dense_ends
    assert scope.dense_ends
    targets = prune_model(model, PruningMethod("l1", prune.L1Unstructured), 0.9, scope)
    assert [t.name for t in targets] == ["block2.conv", "block3.conv"]
    assert int((model.block1.conv.weight == 0).sum()) == 0
    assert int((model.classifier.weight == 0).sum()) == 0
    assert sparsity(targets) == (round(0.9 * 4608) + round(0.9 * 18432)) / (4608 + 18432)
    off = Scope.from_config(make_cfg(tmp_path, "scope.dense_ends=false").scope)
    method = PruningMethod("l1", prune.L1Unstructured)
    assert [t.name for t in plan_pruning(_model(), method, 0.9, off)] == [
        "block1.conv",
        "block2.conv",
        "block3.conv",
        "classifier",
    ]


def test_an_end_layer_named_in_amounts_is_pruned_as_named(tmp_path):
    # issue 22: scope.amounts={block2.conv:0.1,classifier:0.3} left the classifier dense
    cfg = make_cfg(tmp_path, "scope.amounts={block2.conv:0.1,classifier:0.3}", fast=False)
    scope = Scope.from_config(cfg.scope)
    assert scope.dense_ends
    model = _model()
    targets = prune_model(model, PruningMethod("l1", prune.L1Unstructured), 0.5, scope)
    assert {t.name: t.amount for t in targets} == {
        "block2.conv": 0.1,
        "block3.conv": 0.5,
        "classifier": 0.3,
    }
    zeros = {
        n: int((m.weight == 0).sum())
        for n, m in model.named_modules()
        if n.endswith(("conv", "classifier"))
    }
    assert zeros == {
        "block1.conv": 0,  # the first layer, not named: dense_ends keeps it dense
        "block2.conv": round(0.1 * 4608),
        "block3.conv": round(0.5 * 18432),
        "classifier": round(0.3 * model.classifier.weight.numel()),
    }
    # only the exact name brings an end back: a pattern or a type entry does not
    for entry in ("classif*", "Linear"):
        kept = Scope(amounts={entry: 0.3}, dense_ends=True)
        assert "classifier" not in [name for name, _ in kept.modules(_model())]


def test_dense_ends_follow_registration_not_names():
    model = nn.Sequential(
        nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 3)
    )
    assert end_layers(model) == ("0", "5")
    scope = Scope(dense_ends=True)
    assert [name for name, _ in scope.modules(model)] == ["2", "4"]
    # with Linear out of scope, the first conv is still kept (the classifier is out anyway)
    assert [name for name, _ in Scope(("Conv2d",), dense_ends=True).modules(_model())] == [
        "block2.conv",
        "block3.conv",
    ]


def test_dense_ends_on_a_one_layer_model_leave_nothing():
    with pytest.raises(ConfigError) as e:
        method = PruningMethod("l1", prune.L1Unstructured)
        plan_pruning(nn.Linear(4, 2), method, 0.5, Scope(dense_ends=True))
    assert str(e.value) == (
        "no tensor in scope: model has no Conv2d / Linear layer left after scope.exclude=[] "
        "and scope.dense_ends=true (first layer and classifier)"
    )


def test_layer_types_limit_scope():
    targets = prune_model(
        _model(), PruningMethod("l1", prune.L1Unstructured), 0.5, Scope(("Linear",))
    )
    assert [t.name for t in targets] == ["classifier"]


def test_global_ranks_across_layers():
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.fill_(0.01)
    method = PruningMethod("global", prune.L1Unstructured, is_global=True)
    targets = prune_model(model, method, 0.5, Scope())
    assert int((model[0].weight == 0).sum()) == 0
    assert int((model[1].weight == 0).sum()) == 100
    assert sparsity(targets) == 0.5


def test_global_int_amount_counts_over_all_tensors():
    """amount=1000 is 1000 entries of all 23824 in scope, as prune.global_unstructured has it."""
    model, reference = _model(), _model()
    method = PruningMethod("global", prune.L1Unstructured, is_global=True)
    targets = prune_model(model, method, 1000, Scope())
    assert sum(int((t.weight == 0).sum()) for t in targets) == 1000
    modules = dict(reference.named_modules())
    prune.global_unstructured(
        [(modules[t.name], "weight") for t in targets],
        pruning_method=prune.L1Unstructured,
        amount=1000,
    )
    assert _masks(model).keys() == _masks(reference).keys()
    assert all(torch.equal(m, _masks(reference)[k]) for k, m in _masks(model).items())


def test_global_ranks_each_amount_setting_on_its_own():
    model = _model()
    method = PruningMethod("global", prune.L1Unstructured, is_global=True)
    targets = prune_model(model, method, 1000, Scope(amounts={"Linear": 100}))
    zeros = {t.name: int((t.weight == 0).sum()) for t in targets}
    assert sum(zeros[n] for n in ("block1.conv", "block2.conv", "block3.conv")) == 1000
    assert zeros["classifier"] == 100


def test_unstructured_methods_prune_batchnorm_weights():
    """torch prunes any tensor unstructured: BatchNorm's scale too (as network slimming does)."""
    model = _model()
    scope = Scope(layers=("BatchNorm2d",))
    targets = prune_model(model, PruningMethod("l1", prune.L1Unstructured), 0.5, scope)
    assert [(t.name, int((t.weight == 0).sum())) for t in targets] == [
        ("block1.bn", 8),
        ("block2.bn", 16),
        ("block3.bn", 32),
    ]
    assert torch.isfinite(model.train()(torch.randn(4, 1, 8, 8))).all()


@pytest.mark.parametrize("n", [1, 2, 0.5, 0, math.inf, "fro"])
def test_ln_structured_takes_the_norms_torch_computes(n):
    method = PruningMethod("ln", prune.LnStructured, {"n": n, "dim": 0})
    targets = prune_model(_model(), method, 0.5, Scope())
    assert [int((t.weight.flatten(1).abs().sum(1) == 0).sum()) for t in targets] == [8, 16, 32]


def test_fro_reaches_torch_as_the_2_norm_it_equals():
    """torch 2.11 takes 'fro' of a Linear's or a Conv2d's slices as a matrix norm and fails
    ("linalg.matrix_norm: dim must be a 2-tuple"): method.n=fro crashed every trial there."""
    method = PruningMethod("ln", prune.LnStructured, {"n": "fro", "dim": 0})
    assert method.arguments(0.5) == {"n": 2, "dim": 0, "amount": 0.5}
    assert method.kwargs["n"] == "fro"  # the config and the row keep what was asked


def test_nuclear_norm_on_3d_weights():
    model = nn.Sequential(nn.Conv1d(2, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    method = PruningMethod("ln", prune.LnStructured, {"n": "nuc", "dim": 0})
    targets = prune_model(model, method, 0.5, Scope(layers=("Conv1d",)))
    assert int((targets[0].weight.flatten(1).abs().sum(1) == 0).sum()) == 4


def test_custom_method_from_config(tmp_path):
    cfg = make_cfg(
        tmp_path, "method._target_=tests.custom_methods.EveryOther", "method.name=every_other"
    )
    method = PruningMethod.from_config(cfg.method)
    model = _model()
    targets = prune_model(model, method, 0.0, Scope())
    for t in targets:
        assert int((t.weight == 0).sum()) == math.ceil(t.weight.numel() / 2)
    prune_model(model, method, 0.0, Scope())
    for t in targets:
        n = t.weight.numel()
        assert int((t.weight == 0).sum()) == math.ceil(n / 2) + math.ceil(
            (n - math.ceil(n / 2)) / 2
        )


def test_a_method_target_replaced_on_a_preset_is_named_after_it(tmp_path):
    """method._target_=my.Method on the default l1_unstructured stored rows named
    l1_unstructured; on ln_structured it also passed the preset's n and dim to the new class."""
    user = "method._target_=tests.custom_methods.EveryOther"
    plans = [
        prepare(make_cfg(tmp_path, *overrides), check_store=False)
        for overrides in ([user], ["method=ln_structured", user], [user, "method.name=every_other"])
    ]
    assert [p.method.name for p in plans] == ["EveryOther", "EveryOther", "every_other"]
    assert [p.resolved["method"]["name"] for p in plans] == [p.method.name for p in plans]
    from sweep._build import code_digest

    assert plans[0].resolved["method"] == {
        "name": "EveryOther",
        "_target_": "tests.custom_methods.EveryOther",
        "importance": "magnitude",
        "code_sha256": code_digest({"_target_": "tests.custom_methods.EveryOther"}),
    }
    assert plans[1].key == plans[0].key != plans[2].key  # the same method, the same trial
    assert plans[1].method.kwargs == {}  # LnStructured's n and dim left behind
    plain = prepare(make_cfg(tmp_path, "method=ln_structured", "method.n=1"), check_store=False)
    assert (plain.method.name, plain.method.kwargs) == ("ln_structured", {"n": 1, "dim": 0})
    # a subclass of the preset's class takes its arguments: they stay, as set or not
    sub = ["method=ln_structured", "method._target_=tests.custom_methods.Ln"]
    for extra, kwargs in (([], {"n": 2, "dim": 0}), (["method.n=1"], {"n": 1, "dim": 0})):
        plan = prepare(make_cfg(tmp_path, *sub, *extra), check_store=False)
        assert (plan.method.name, plan.method.kwargs) == ("Ln", kwargs)


def test_amount_zero_as_a_count_or_a_fraction_is_one_trial(tmp_path):
    keys = {
        prepare(make_cfg(tmp_path, a), check_store=False).key for a in ("amount=0", "amount=0.0")
    }
    assert len(keys) == 1
    assert prepare(make_cfg(tmp_path, "amount=0"), check_store=False).resolved["amount"] == 0.0


ACCEPTED = "accepted: a float in [0, 1) (a fraction) or an int >= 0 (a count)"
METHODS_BY_KEY = {
    "l1": ("l1", prune.L1Unstructured, {}, False),
    "global": ("global", prune.L1Unstructured, {}, True),
    "ln0": ("ln", prune.LnStructured, {"n": 2, "dim": 0}, False),
    "ln4": ("ln", prune.LnStructured, {"n": 2, "dim": 4}, False),
    "ln_abc": ("ln", prune.LnStructured, {"n": "abc", "dim": 0}, False),
    "ln_nan": ("ln", prune.LnStructured, {"n": math.nan, "dim": 0}, False),
    "ln_true": ("ln", prune.LnStructured, {"n": True, "dim": 0}, False),
    "ln_nuc": ("ln", prune.LnStructured, {"n": "nuc", "dim": 0}, False),
    # torch computes these, but they rank a slice by its smallest entry (a zero makes it 0)
    "ln_neg": ("ln", prune.LnStructured, {"n": -1, "dim": 0}, False),
    "ln_neg_inf": ("ln", prune.LnStructured, {"n": -math.inf, "dim": 0}, False),
}
NORMS = "accepted: a number p >= 0 (the p-norm; 0 counts non-zeros), inf, 'fro' or 'nuc'"


@pytest.mark.parametrize(
    ("method", "amount", "scope", "message"),
    [
        ("l1", 1.0, {}, f"amount=1.0 is outside [0, 1); {ACCEPTED}"),
        ("l1", -0.2, {}, f"amount=-0.2 is outside [0, 1); {ACCEPTED}"),
        ("l1", -3, {}, f"amount=-3 is negative; {ACCEPTED}"),
        (
            "l1",
            145,
            {},
            "amount=145 is larger than layer 'block1.conv' (144 prunable units); "
            "accepted: an int up to 144 or a float in [0, 1)",
        ),
        ("l1", "half", {}, f"amount='half' is not a number; {ACCEPTED}"),
        (
            "ln0",
            17,
            {},
            "amount=17 is larger than layer 'block1.conv' (16 prunable units); "
            "accepted: an int up to 16 or a float in [0, 1)",
        ),
        (
            "ln4",
            0.5,
            {},
            "method.dim=4 does not exist for layer 'block1.conv' (weight of shape "
            "(16, 1, 3, 3)); accepted: an int from -4 to 3",
        ),
        (
            "l1",
            0.5,
            {"amounts": {"Linear": 1.5}},
            f"scope.amounts.Linear=1.5 is outside [0, 1); {ACCEPTED}",
        ),
        (
            "l1",
            0.5,
            {"exclude": ("nope*",)},
            "scope.exclude pattern 'nope*' matches no layer in scope; "
            "layers are: block1.conv, block2.conv, block3.conv, classifier",
        ),
        (
            "l1",
            0.5,
            {"exclude": ("*",)},
            "no tensor in scope: model has no Conv2d / Linear layer left after scope.exclude=['*']",
        ),
        (
            "global",
            30000,
            {},
            "amount=30000 is larger than all layers in scope (23824 prunable units); "
            "accepted: an int up to 23824 or a float in [0, 1)",
        ),
        (
            "global",
            100,
            {"amounts": {"Linear": 641}},
            "scope.amounts.Linear=641 is larger than the layers it applies to (640 prunable "
            "units); accepted: an int up to 640 or a float in [0, 1)",
        ),
        (
            "l1",
            0.5,
            {"layers": ()},
            "scope.layers is empty; accepted: torch.nn module type names such as Conv2d, Linear",
        ),
        (
            "l1",
            0.5,
            {"layers": "Conv2d"},
            "scope.layers='Conv2d' is not a list; accepted: a list of torch.nn module type "
            "names such as Conv2d, Linear",
        ),
        (
            "l1",
            0.5,
            {"exclude": "block1.*"},
            "scope.exclude='block1.*' is not a list; accepted: a list of fnmatch patterns of "
            "module names such as features.0, layer4.*",
        ),
        (
            "l1",
            0.5,
            {"amounts": 0.5},
            "scope.amounts=0.5 is not a mapping; accepted: amounts by layer type, name or "
            "pattern, e.g. {Conv2d: 0.2, block2.conv: 0.1}",
        ),
        (
            "ln0",
            0.5,
            {"layers": ("BatchNorm2d",)},
            "method ln is structured and needs weights of 2 or more dims; layer 'block1.bn' "
            "has a weight of shape (16,); accepted: scope.layers whose weights have 2 or more "
            "dims (Conv2d, Linear...), or an unstructured method",
        ),
        ("ln_abc", 0.5, {}, f"method.n='abc' is not a norm; {NORMS}"),
        ("ln_nan", 0.5, {}, f"method.n=nan is not a norm; {NORMS}"),
        ("ln_true", 0.5, {}, f"method.n=True is not a norm; {NORMS}"),
        ("ln_neg", 0.5, {}, f"method.n=-1 is not a norm; {NORMS}"),
        ("ln_neg_inf", 0.5, {}, f"method.n=-inf is not a norm; {NORMS}"),
        (
            "ln_nuc",
            0.5,
            {},
            "method.n='nuc' needs weights of 3 dims; layer 'block1.conv' has a weight of "
            "shape (16, 1, 3, 3); accepted: a number p >= 0, inf or 'fro'",
        ),
    ],
)
def test_bad_input_is_rejected_before_any_change(method, amount, scope, message):
    name, cls, kwargs, is_global = METHODS_BY_KEY[method]
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as e:
        prune_model(model, PruningMethod(name, cls, kwargs, is_global), amount, Scope(**scope))
    assert str(e.value) == message
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["method._target_=nope.Nope"],
            "method._target_='nope.Nope' does not import (no module named 'nope')",
        ),
        (
            ["method._target_=torch.nn.Linear"],
            "is not a torch.nn.utils.prune.BasePruningMethod subclass",
        ),
        (
            ["method=global_unstructured", "method.pruning_method=l2"],
            "method.pruning_method='l2' does not import",
        ),
        (
            ["method=ln_structured", "+method.bogus=1"],
            "method.bogus=1 is not a setting of ln_structured (LnStructured); accepted: amount, n, dim",
        ),
        (["method=ln_structured", "method.n=abc"], f"method.n='abc' is not a norm; {NORMS}"),
        (
            ["method=global_unstructured", "+method.n=2"],
            "method.n=2 is not a setting of global_unstructured (L1Unstructured); accepted: amount",
        ),
    ],
)
def test_bad_method_configs(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=None) as e:
        PruningMethod.from_config(make_cfg(tmp_path, *overrides).method)
    assert message in str(e.value)


def test_scope_rejects_unknown_layer_type():
    with pytest.raises(ConfigError, match=r"scope\.layers entry 'Conv9d' is not a module type"):
        Scope(layers=("Conv9d",))
    with pytest.raises(ConfigError, match=r"scope\.amounts names Conv1d, not in scope\.layers"):
        Scope(amounts={"Conv1d": 0.1})


def test_scope_refuses_a_layer_type_with_no_weight_to_prune():
    """LSTM keeps weight_ih_l0...: it was left out silently, its amounts shown as applied."""
    model = nn.Sequential(nn.LSTM(4, 8), nn.Linear(8, 2))
    with pytest.raises(ConfigError) as e:
        Scope(layers=["LSTM", "Linear"]).modules(model)
    assert str(e.value) == (
        "scope.layers entry 'LSTM' matches '0', which has no tensor named weight to prune (its "
        "own: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0); accepted: layer types with "
        "a weight (Conv2d, Linear...) or nn.MultiheadAttention"
    )
    assert [name for name, _ in Scope(layers=["Linear"]).modules(model)] == ["1"]


def test_scope_from_config_refuses_a_string_for_a_list():
    with pytest.raises(ConfigError) as e:
        Scope.from_config({"layers": "Conv2d", "amounts": None, "exclude": []})
    assert str(e.value) == (
        "scope.layers='Conv2d' is not a list; accepted: a list of torch.nn module type names "
        "such as Conv2d, Linear"
    )
    with pytest.raises(ConfigError, match=r"^scope\.layers entry 3 is not a string"):
        Scope(layers=("Conv2d", 3))


def test_plan_pruning_touches_nothing():
    model = _model()
    plan_pruning(model, PruningMethod("l1", prune.L1Unstructured), 0.5, Scope())
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
