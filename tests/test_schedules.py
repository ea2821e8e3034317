"""Pruning schedules (one-shot, iterative, AGP) and lottery-ticket rewinding."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from sweep import baseline, load_model
from sweep.errors import ConfigError
from sweep.pruning import PruningMethod, Schedule, Scope, prune_model, prune_toward
from sweep.rewind import parse_rewind, rewind
from sweep.trial import prepare, run_trial
from tests.custom_methods import EveryOther, Leading

METHODS = {
    "l1_unstructured": PruningMethod("l1_unstructured", prune.L1Unstructured),
    "random_unstructured": PruningMethod("random_unstructured", prune.RandomUnstructured),
    "ln_structured": PruningMethod("ln_structured", prune.LnStructured, {"n": 2, "dim": 0}),
    "global_l1": PruningMethod("global", prune.L1Unstructured, is_global=True),
    "global_random": PruningMethod("global", prune.RandomUnstructured, is_global=True),
    "custom_leading": PruningMethod("leading", Leading),
}
SCHEDULES = {
    "iterative": Schedule("iterative", steps=3),
    "agp": Schedule("agp", initial=0.1, start=0.1, end=0.8, frequency=7),
    "agp_every_step": Schedule("agp", frequency=1),
}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 10, 3), nn.ReLU(), nn.Flatten(), nn.Linear(10 * 6 * 6, 33), nn.Linear(33, 7)
    )


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_mask")}


def _pruned_counts(model: nn.Module, method: PruningMethod) -> dict[str, int]:
    counts = {}
    for name, mask in _masks(model).items():
        if method.structured:
            counts[name] = int((mask.flatten(1).sum(1) == 0).sum())
        else:
            counts[name] = int((mask == 0).sum())
    return counts


def _run_schedule(model, method, amount, scope, schedule, total_steps=100):
    """Apply every event of ``schedule`` as finetuning would, the weights moving in between."""
    history = []
    for event in schedule.events(total_steps):
        prune_toward(model, method, amount, scope, None if event.final else event.sparsity)
        history.append(_masks(model))
        with torch.no_grad():  # training moves the surviving weights: rankings change
            for p in model.parameters():
                p.add_(torch.randn_like(p))
    return history


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "amount,amounts",
    [(0.9, None), (0.37, {"Linear": 0.8}), (50, None)],
    ids=["0.9", "per-type", "int"],
)
def test_every_schedule_ends_at_the_one_shot_count(schedule, method, amount, amounts):
    method_ = METHODS[method]
    if method_.structured and isinstance(amount, int):
        amount = 5  # slices, not entries
    if method == "custom_leading" and isinstance(amount, int):
        pytest.skip("Leading takes fractions only")
    scope = Scope.from_config({"layers": ["Conv2d", "Linear"], "amounts": amounts})
    torch.manual_seed(1)
    once = _net()
    prune_model(once, method_, amount, scope)
    gradual = _net()
    history = _run_schedule(gradual, method_, amount, scope, SCHEDULES[schedule])

    expected, got = _pruned_counts(once, method_), _pruned_counts(gradual, method_)
    if method_.is_global:  # entries are counted over each group, not per tensor
        assert sum(got.values()) == sum(expected.values())
    elif method == "custom_leading":  # floors its own fraction: within one entry per tensor
        assert all(abs(got[k] - expected[k]) <= 1 for k in expected), (got, expected)
    else:
        assert got == expected
    # masks only grow: nothing pruned comes back
    for before, after in itertools.pairwise(history):
        assert all(bool((after[k] <= before[k]).all()) for k in before)
    assert len(history) == len(SCHEDULES[schedule].events(100))


def test_iterative_removes_the_same_fraction_of_what_is_left_each_round():
    model = nn.Sequential(nn.Linear(100, 100))
    method = METHODS["l1_unstructured"]
    left = []
    for event in Schedule("iterative", steps=4).events(40):
        prune_toward(model, method, 0.9375, Scope(), None if event.final else event.sparsity)
        left.append(int(model[0].weight_mask.sum()))
    assert left == [5000, 2500, 1250, 625]  # halved each round: 1 - 0.9375 = 0.5 ** 4


def test_agp_follows_the_cubic():
    events = Schedule("agp", initial=0.0, start=0.0, end=0.5, frequency=10).events(100)
    assert [e.step for e in events] == [0, 10, 20, 30, 40, 50]
    assert [round(e.sparsity(0.8), 4) for e in events] == [0.0, 0.3904, 0.6272, 0.7488, 0.7936, 0.8]
    assert [e.final for e in events] == [False] * 5 + [True]
    # no finetuning: every step at once, the last one final
    assert {e.step for e in Schedule("agp").events(0)} == {0}


@pytest.mark.parametrize(
    "node,message",
    [
        (
            {"name": "gradual"},
            "schedule.name='gradual' is unknown; accepted: one_shot | iterative | agp",
        ),
        (
            {"name": "iterative", "steps": 0},
            "schedule.steps=0 is out of range; accepted: an int >= 1",
        ),
        ({"name": "agp", "start": 0.5, "end": 0.5}, "schedule.end=0.5 is out of range"),
        ({"name": "agp", "steps": 3}, "schedule.steps is not a key of schedule agp"),
        ({"name": "one_shot", "steps": 3}, "accepted: none besides name"),
    ],
)
def test_bad_schedules_say_what_is_accepted(node, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Schedule.from_config(node)


def test_a_method_without_amount_cannot_follow_a_schedule():
    with pytest.raises(ConfigError, match="schedule=iterative needs a method that takes an amount"):
        Schedule("iterative", steps=2).check_method(PruningMethod("every_other", EveryOther))
    Schedule().check_method(PruningMethod("every_other", EveryOther))  # one-shot: fine


def test_parse_rewind():
    assert [parse_rewind(v) for v in ("none", None, "init", "epoch:0", "epoch:12")] == [
        None,
        None,
        0,
        0,
        12,
    ]
    with pytest.raises(
        ConfigError, match=r"rewind='epoch:-1' is not a rewind point; accepted: none"
    ):
        parse_rewind("epoch:-1")


def test_rewind_resets_survivors_and_keeps_pruned_entries_at_zero():
    model = _net()
    saved = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    prune_model(model, METHODS["l1_unstructured"], 0.7, Scope())
    masks = _masks(model)
    rewind(model, saved)
    assert all(torch.equal(masks[k], v) for k, v in _masks(model).items())
    for name in ("0", "3", "4"):
        layer, mask = model.get_submodule(name), masks[f"{name}.weight_mask"]
        assert torch.equal(layer.weight_orig, saved[f"{name}.weight"])
        assert torch.equal(layer.weight, saved[f"{name}.weight"] * mask)  # before any forward
        assert int((layer.weight[mask == 0] != 0).sum()) == 0
        assert torch.equal(layer.bias, saved[f"{name}.bias"])
    with pytest.raises(KeyError, match="rewind weights hold 'extra'"):
        rewind(model, {**saved, "extra": torch.zeros(1)})


def test_rewind_point_is_cached_and_a_replay_gives_the_same_weights(tmp_path, cfg_factory):
    plan = prepare(cfg_factory("pretrain.epochs=3"), check_store=False)
    settings = {
        "model": plan.resolved["model"],
        "dataset": plan.resolved["dataset"],
        "seed": 0,
        "pretrain": plan.resolved["pretrain"],
        "device_type": "cpu",
    }
    fresh = {k: v.clone() for k, v in plan.model.state_dict().items()}
    model = plan.model
    facts = baseline.load_or_train(
        model, plan.data, settings, tmp_path, progress=False, rewind_epoch=2
    )
    saved = tmp_path / f"{facts['key']}.epoch2.pt"
    assert saved.exists() and facts["trained"]
    epoch2 = facts["rewind_state"]
    assert not torch.equal(epoch2["block1.conv.weight"], fresh["block1.conv.weight"])
    assert not torch.equal(epoch2["block1.conv.weight"], model.state_dict()["block1.conv.weight"])
    # a later trial with the baseline cached but not this point replays epochs 1-2 exactly
    saved.unlink()
    model.load_state_dict(fresh)
    again = baseline.load_or_train(
        model, plan.data, settings, tmp_path, progress=False, rewind_epoch=2
    )
    assert not again["trained"] and saved.exists()
    assert all(torch.equal(v, again["rewind_state"][k]) for k, v in epoch2.items())
    # the initialisation: the freshly built model, saved when first asked for
    rebuilt = prepare(cfg_factory("pretrain.epochs=3"), check_store=False).model
    init = baseline.load_or_train(
        rebuilt, plan.data, settings, tmp_path, progress=False, rewind_epoch=0
    )
    assert (tmp_path / f"{facts['key']}.epoch0.pt").exists()
    assert all(torch.equal(v, init["rewind_state"][k]) for k, v in fresh.items())


@pytest.mark.parametrize("schedule", ["iterative", "agp"])
def test_trial_with_a_schedule_ends_at_the_amount(cfg_factory, schedule):
    seen = []
    cfg = cfg_factory(f"schedule={schedule}", "amount=0.9", "finetune.epochs=2")
    row = run_trial(cfg, on_epoch=lambda epoch, acc: seen.append(epoch))
    assert seen == [1, 2]
    once = run_trial(cfg_factory("amount=0.9", "finetune.epochs=2"))
    # torch rounds each tensor's count: 2616 of 24058 weights left, as one-shot leaves them
    assert row["status"] == "complete" and row["params_nonzero"] == once["params_nonzero"] == 2616
    assert row["sparsity"] == once["sparsity"]
    # the columns before finetuning describe the baseline pruned at once, for every schedule
    assert row["acc_pruned"] == once["acc_pruned"]
    assert row["trial_key"] != once["trial_key"]
    assert row["schedule"] == row["schedule.name"] == schedule


def test_trial_rewound_to_init_holds_the_initial_weights_under_the_mask(cfg_factory, tmp_path):
    cfg = cfg_factory("rewind=init", "finetune.epochs=0", "store.models=dense")
    init = {k: v.clone() for k, v in prepare(cfg, check_store=False).model.state_dict().items()}
    row = run_trial(cfg)
    assert row["status"] == "complete" and row["sparsity"] == 0.5
    final = load_model(row["trial_key"], cfg.store.path).state_dict()
    for key, value in final.items():
        if key.endswith("weight") and value.dim() > 1:  # pruned: init survivors, zeros elsewhere
            kept = value != 0
            assert 0.4 < kept.float().mean() < 0.6
            assert torch.equal(value[kept], init[key][kept])
        elif "running" not in key and "num_batches" not in key:
            assert torch.equal(value, init[key]), key


def test_trial_pruner_sees_epochs_on_across_the_rewind(cfg_factory):
    seen = []
    cfg = cfg_factory(
        "schedule=iterative", "schedule.steps=2", "rewind=epoch:1", "finetune.epochs=2"
    )
    row = run_trial(cfg, on_epoch=lambda epoch, acc: seen.append(epoch))
    assert row["status"] == "complete" and row["sparsity"] == 0.5
    # the rounds train epoch 1, stop at the final mask (step 1 of 2 epochs), then 2 rewound epochs
    assert seen == [1, 2, 3]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["schedule=agp", "method=ln_structured", "compact=true"],
            "schedule=agp with compact=true: channels are removed once, after one-shot pruning",
        ),
        (["rewind=init", "method=ln_structured", "compact=true"], "rewind=init with compact=true"),
        (
            ["rewind=epoch:9"],
            "rewind=epoch:9 but pretraining has 3 epochs; accepted: none | init | epoch:0 to epoch:3",
        ),
        (["rewind=later"], "rewind='later' is not a rewind point"),
        (["rewind_weights=/x.pt"], "rewind_weights='/x.pt' is set but rewind=none"),
        (
            ["rewind=init", "rewind_weights=/nonexistent.pt"],
            "rewind_weights='/nonexistent.pt' is not a file",
        ),
        (
            ["schedule=iterative", "method._target_=tests.custom_methods.EveryOther"],
            "schedule=iterative needs a method that takes an amount",
        ),
        (
            ["schedule=agp", "schedule.initial=0.9", "amount=0.5"],
            "schedule.initial=0.9 is above amount=0.5: agp rises from its initial sparsity to "
            "the amount; accepted: schedule.initial <= amount",
        ),
    ],
)
def test_bad_protocols_fail_before_anything_is_written(cfg_factory, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_trial(cfg_factory(*overrides))
    assert not (tmp_path / "results").exists()


def test_rewind_with_a_checkpoint_needs_the_weights_to_rewind_to(cfg_factory, tmp_path):
    plan = prepare(cfg_factory(), check_store=False)
    torch.save(plan.model.state_dict(), tmp_path / "trained.pt")
    torch.manual_seed(5)
    state = plan.model.state_dict()
    init = {
        k: v if "running" in k or "batches" in k else torch.randn_like(v) for k, v in state.items()
    }
    torch.save(init, tmp_path / "init.pt")
    checkpoint = f"model.checkpoint={tmp_path / 'trained.pt'}"
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "rewind=init needs the weights from before training, and model.checkpoint gives only the "
            "trained ones; accepted: rewind_weights=/path/to/those_weights.pt, or rewind=none"
        ),
    ):
        prepare(cfg_factory(checkpoint, "rewind=init"), check_store=False)
    given = cfg_factory(
        checkpoint,
        "rewind=init",
        f"rewind_weights={tmp_path / 'init.pt'}",
        "finetune.epochs=0",
        "store.models=dense",
    )
    row = run_trial(given)
    assert row["status"] == "complete", row["error"]
    saved = torch.load(tmp_path / "init.pt")
    final = load_model(row["trial_key"], given.store.path).state_dict()
    kept = final["classifier.weight"] != 0
    assert torch.equal(final["classifier.weight"][kept], saved["classifier.weight"][kept])
    # the key follows the weights' content, not where the file lies
    (tmp_path / "moved.pt").write_bytes((tmp_path / "init.pt").read_bytes())
    moved = cfg_factory(
        checkpoint, "rewind=init", f"rewind_weights={tmp_path / 'moved.pt'}", "finetune.epochs=0"
    )
    assert prepare(moved, check_store=False).key == row["trial_key"]


def test_defaults_keep_existing_keys(cfg_factory):
    plain = prepare(cfg_factory(), check_store=False).key
    assert prepare(cfg_factory("schedule=one_shot", "rewind=none"), check_store=False).key == plain
    assert prepare(cfg_factory("rewind=init"), check_store=False).key != plain
