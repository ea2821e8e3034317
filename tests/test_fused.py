"""Fused trials (issue 23): the group key, and K masked models trained as one giving what each
gives alone."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import prune

from sweep.data import Split, digits
from sweep.errors import TrialFailed
from sweep.fused import evaluate_fused, finetune_fused, fusion_key
from sweep.models import small_cnn
from sweep.training import evaluate, train
from tests.conftest import make_cfg

# ---------------------------------------------------------------- the group key


@pytest.mark.parametrize(
    "other",
    [
        ["amount=0.7"],
        ["method=ln_structured"],
        ["method=global_unstructured"],
        ["finetune.lr=0.01"],
        ["scope.exclude=[block2.conv]"],
        ["method.importance=taylor"],
        ["recalibrate.batches=3"],
        ["latency.repeats=5"],
        ["tag=mine"],
        ["store.models=none"],
    ],
)
def test_members_may_differ_in_masks_and_learning_rate(tmp_path, other):
    key, reason = fusion_key(make_cfg(tmp_path, "amount=0.3"))
    assert reason is None and key is not None
    assert fusion_key(make_cfg(tmp_path, "amount=0.3", *other)) == (key, None)


@pytest.mark.parametrize(
    "other",
    [
        ["model.width=8"],
        ["model=mlp"],
        ["dataset.split_seed=1"],
        ["seed=1"],
        ["pretrain.epochs=2"],
        ["finetune.batch_size=32"],
        ["finetune.epochs=2"],
        ["finetune.optimizer=sgd"],
        ["finetune.momentum=0.5"],
        ["finetune.weight_decay=0.1"],
        ["finetune.scheduler=cosine"],
        ["finetune.label_smoothing=0.1"],
        ["finetune.amp=false"],
        ["device=cpu"],
        ["channels_last=true"],
    ],
)
def test_what_a_group_shares_is_in_its_key(tmp_path, other):
    key, _ = fusion_key(make_cfg(tmp_path))
    other_key, reason = fusion_key(make_cfg(tmp_path, *other))
    assert reason is None
    assert other_key != key


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["compact=true"], "compact=true: compacted members have shapes of their own"),
        (["schedule=agp"], "schedule=agp: masks change during finetuning, member by member"),
        (["rewind=init"], "rewind=init: the finetuning restarts from rewound weights"),
        (["finetune.epochs=0"], "finetune.epochs=0: nothing is finetuned, so nothing runs batched"),
        (
            ["finetune.optimizer=torch.optim.RMSprop"],
            "finetune.optimizer=torch.optim.RMSprop: only sgd | adam | adamw are known to "
            "update each member's parameters apart",
        ),
    ],
)
def test_trials_that_cannot_fuse_say_why(tmp_path, overrides, reason):
    assert fusion_key(make_cfg(tmp_path, *overrides)) == (None, reason)


def test_the_key_reads_a_resolved_config_too(tmp_path):
    cfg = make_cfg(tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert fusion_key(resolved) == fusion_key(cfg)


# ---------------------------------------------------------------- the batched engine

SETTINGS = {
    "epochs": 2,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.01,
    "amp": True,
    "label_smoothing": 0.1,
    "scheduler": "cosine",
    "warmup_epochs": 1,
    "step_gamma": 0.1,
    "step_milestones": [0.5, 0.75],
}
LRS = [1e-3, 3e-3, 1e-2]


@pytest.fixture(scope="module")
def data():
    full = digits(val_fraction=0.15, test_fraction=0.2, split_seed=0)
    # a fifth of the training images: the test is about equality, not accuracy
    return full.train.x[:128], full.train.y[:128], full.val, full.test


def _members(base: nn.Module) -> list[nn.Module]:
    """Three differently pruned copies: unstructured, channels of the convolutions only (the
    classifier stays dense in that one), random."""
    torch.manual_seed(1)
    members = []
    for k in range(3):
        m = copy.deepcopy(base)
        for mod in m.modules():
            if k == 0 and isinstance(mod, nn.Conv2d | nn.Linear):
                prune.l1_unstructured(mod, "weight", amount=0.3)
            if k == 1 and isinstance(mod, nn.Conv2d):
                prune.ln_structured(mod, "weight", amount=0.5, n=2, dim=0)
            if k == 2 and isinstance(mod, nn.Conv2d | nn.Linear):
                prune.random_unstructured(mod, "weight", amount=0.7)
        members.append(m)
    return members


# adamw covers decoupled weight decay, warm-up, cosine and label smoothing; the others are slow
@pytest.mark.parametrize(
    "optimizer",
    [
        "adamw",
        pytest.param("sgd", marks=pytest.mark.slow),
        pytest.param("adam", marks=pytest.mark.slow),
    ],
)
def test_fused_finetuning_trains_each_member_as_it_trains_alone(data, optimizer):
    x, y, val, test = data
    train_split = Split(x, y)
    settings = OmegaConf.create({**SETTINGS, "optimizer": optimizer})
    torch.manual_seed(0)
    base = small_cnn(10, 1, 8)
    alone, fused = _members(base), _members(base)
    seen_alone, seen_fused = [], []
    for k, m in enumerate(alone):
        one = OmegaConf.merge(settings, {"lr": LRS[k]})
        record = lambda e, a, k=k: seen_alone.append((k, e, a))  # noqa: E731
        train(m, train_split, one, seed=0, val_split=val, on_epoch=record, progress=False)
    callbacks = [lambda e, a, k=k: seen_fused.append((k, e, a)) for k in range(3)]
    outcomes = finetune_fused(
        fused,
        train_split,
        settings,
        LRS,
        seed=0,
        val_split=val,
        on_epoch=callbacks,
        progress=False,
    )
    assert outcomes == [None, None, None]
    assert sorted(seen_fused) == sorted(seen_alone)  # the same validation accuracy every epoch
    for a, f in zip(alone, fused, strict=True):
        sa, sf = a.state_dict(), f.state_dict()
        assert sa.keys() == sf.keys()
        for name in sa:
            if name.endswith("_mask") or name.endswith("num_batches_tracked"):
                assert torch.equal(sa[name], sf[name]), name
            else:
                # grouped convolutions sum in another order than single ones: float32 rounding
                # (1e-7 relative) grown by two epochs of Adam steps at lr up to 1e-2
                torch.testing.assert_close(sf[name], sa[name], atol=1e-3, rtol=0, msg=name)
        # the pruned entries stay exactly zero
        for mod in f.modules():
            if hasattr(mod, "weight_mask"):
                assert not mod.weight[mod.weight_mask == 0].any()
    assert [r[0] for r in evaluate_fused(fused, test)] == [evaluate(m, test)[0] for m in alone]


def _reporters(epochs: dict[int, list[int]], stopped: int, message: str):
    """``k -> on_epoch`` callbacks that record each member's epochs in ``epochs[k]``; member
    ``stopped``'s trial pruner stops it at its first epoch."""

    def reporter(k):
        def on_epoch(epoch, acc):
            epochs[k].append(epoch)
            if k == stopped:
                raise optuna.TrialPruned(message.format(epoch))

        return on_epoch

    return reporter


def test_a_member_stopped_by_its_trial_pruner_stops_alone(data):
    x, y, val, _ = data
    torch.manual_seed(0)
    members = _members(small_cnn(10, 1, 8))
    epochs = {0: [], 1: [], 2: []}
    callback = _reporters(epochs, stopped=1, message="stopped at epoch {}")

    torch.manual_seed(0)
    one_epoch = _members(small_cnn(10, 1, 8))[1]
    settings = OmegaConf.merge(SETTINGS, {"lr": LRS[1]})
    train(one_epoch, Split(x, y), settings, seed=0, stop_at_step=len(y) // 64, progress=False)
    outcomes = finetune_fused(
        members,
        Split(x, y),
        OmegaConf.create(SETTINGS),
        LRS,
        seed=0,
        val_split=val,
        on_epoch=[callback(k) for k in range(3)],
        progress=False,
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], optuna.TrialPruned)
    assert str(outcomes[1]) == "stopped at epoch 1"
    assert epochs == {0: [1, 2], 1: [1], 2: [1, 2]}
    # it keeps the weights of the epoch it stopped in, not those the group trained on to
    torch.testing.assert_close(members[1].state_dict(), one_epoch.state_dict(), atol=1e-4, rtol=0)


def test_a_member_with_a_nan_loss_fails_alone(data):
    x, y, val, _ = data
    torch.manual_seed(0)
    members = _members(small_cnn(10, 1, 8))
    with torch.no_grad():
        members[2].classifier.bias.fill_(float("nan"))
    outcomes = finetune_fused(
        members,
        Split(x, y),
        OmegaConf.create({**SETTINGS, "epochs": 1}),
        LRS,
        seed=0,
        val_split=val,
        progress=False,
    )
    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], TrialFailed)
    assert str(outcomes[2]) == "finetune: loss became nan in epoch 1"


def test_models_of_different_architectures_do_not_fuse():
    with pytest.raises(ValueError, match="model 1 has other parameters than model 0"):
        evaluate_fused(
            [small_cnn(10, 1, 8), small_cnn(10, 1, 8, width=8)],
            Split(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)),
        )


# ---------------------------------------------------------------- fused trials, stored


# Three members that differ in method, amount, mask pattern and learning rate.
MEMBERS = [
    ["method=l1_unstructured", "amount=0.3", "finetune.lr=0.001"],
    ["method=ln_structured", "amount=0.5", "finetune.lr=0.003"],
    ["method=random_unstructured", "amount=0.7", "finetune.lr=0.01"],
]
# What differs between a fused row and the same trial run alone by design: timing and
# latency, where it was written, whether it trained the shared baseline (the first trial alone
# did), its group.
BY_DESIGN = {"fused", "started_at", "store_file", "store.path", "store.baselines"}
BY_DESIGN |= {"time_prune_s", "time_finetune_s", "time_total_s", "baseline_trained"}
BY_DESIGN |= {"latency_ms_dense", "latency_ms", "speedup"}


# Weights agree to float32 rounding, grown by training. With SGD, rounding stays rounding.
# Adam divides each step by the gradient's own scale, so an entry whose true gradient is zero
# but whose computed one is rounding noise (a weight that BatchNorm makes irrelevant, such as
# one reading a pruned channel's constant output) moves by up to lr per step in a direction
# the rounding picks, alone and fused alike: such entries agree to lr * steps (20 steps here),
# the outputs much closer, as the loss and accuracy show.
@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "atol"), [("sgd", 1e-5), ("adam", 20 * 1e-2)])
def test_a_fused_group_gives_what_its_trials_give_alone(tmp_path, optimizer, atol):
    """Issue 23, point 2: K=3 trials fused and the same three run one at a time."""
    from sweep import load_model
    from sweep.fused import run_fused
    from sweep.store import load_layers
    from sweep.trial import run_trial

    settings = [f"finetune.optimizer={optimizer}", f"store.baselines={tmp_path / 'baselines'}"]
    alone = [run_trial(make_cfg(tmp_path / "alone", *settings, *m)) for m in MEMBERS]
    recorded = []  # what an Optuna job puts on its trial just before the store's write

    def on_row(row, layers):
        file = tmp_path / "fused" / "results" / "trials" / f"{row['trial_key']}.parquet"
        recorded.append((dict(row), len(layers), file.exists()))

    cfgs = [make_cfg(tmp_path / "fused", *settings, *m) for m in MEMBERS]
    fused = run_fused(cfgs, on_row=[on_row] * len(cfgs))
    assert [(r["trial_key"], n, before) for r, n, before in recorded] == [
        (f["trial_key"], 4, False) for f in fused
    ]
    assert [r for r, _, _ in recorded] == [
        {k: v for k, v in f.items() if k != "store_file"} for f in fused
    ]

    assert [r["status"] for r in alone + fused] == ["complete"] * 6
    assert [r["fused"] for r in alone] == [1, 1, 1]
    assert [r["fused"] for r in fused] == [3, 3, 3]
    n_test = round(0.2 * 1797)
    for a, f in zip(alone, fused, strict=True):
        assert f["trial_key"] == a["trial_key"]
        # every column measured before finetuning or on the masks is exactly equal
        exact = [c for c in a if c not in BY_DESIGN | {"acc_finetuned", "loss_finetuned"}]
        assert {c: f[c] for c in exact} == {c: a[c] for c in exact}
        # a prediction may flip on a test image whose top two logits tie to rounding
        assert abs(f["acc_finetuned"] - a["acc_finetuned"]) <= 1 / n_test
        assert f["loss_finetuned"] == pytest.approx(a["loss_finetuned"], abs=2e-3)
        model_a = load_model(a["trial_key"], tmp_path / "alone").state_dict()
        model_f = load_model(f["trial_key"], tmp_path / "fused").state_dict()
        assert model_f.keys() == model_a.keys()
        for name, tensor in model_a.items():
            assert torch.equal(model_f[name] == 0, tensor == 0), name  # the same masks
            torch.testing.assert_close(model_f[name], tensor, atol=atol, rtol=0, msg=name)
    columns = ["trial_key", "layer", "param", "numel", "nonzero", "in_scope", "amount"]
    layers_a = load_layers(tmp_path / "alone")[columns].sort_values(columns[:3])
    layers_f = load_layers(tmp_path / "fused")[columns].sort_values(columns[:3])
    assert len(layers_a) > 0
    assert layers_f.reset_index(drop=True).equals(layers_a.reset_index(drop=True))


def test_trials_that_cannot_fuse_run_alone_and_say_why(tmp_path, caplog):
    from sweep.fused import run_fused

    quick = ["finetune.epochs=1", "pretrain.epochs=0", "recalibrate.batches=0"]
    cfgs = [
        make_cfg(tmp_path, "amount=0.3", *quick),
        make_cfg(tmp_path, "amount=0.6", *quick),
        make_cfg(tmp_path, "method=ln_structured", "compact=true", *quick),
        make_cfg(tmp_path, "amount=0.6", "finetune.batch_size=32", *quick),
    ]
    with caplog.at_level("INFO", logger="sweep.fused"):
        rows = run_fused(cfgs)
    assert [r["status"] for r in rows] == ["complete"] * 4
    assert [r["fused"] for r in rows] == [2, 2, 1, 1]
    assert [r["compacted"] for r in rows] == [False, False, True, False]
    message = f"trial {rows[2]['trial_key']} runs alone: compact=true: compacted members have "
    assert message + "shapes of their own" in caplog.messages


def test_a_trial_twice_in_a_group_runs_once(tmp_path):
    """amount=0.3,0.3 (or method none at every amount) in one group was finetuned and written
    once per job, and counted twice in fused; alone, the repeat reads the row stored."""
    from sweep.fused import run_fused

    quick = ["finetune.epochs=1"]
    cfgs = [make_cfg(tmp_path, a, *quick) for a in ("amount=0.3", "amount=0.3", "amount=0.5")]
    written = []
    rows = run_fused(cfgs, on_row=[lambda row, layers: written.append(row["amount"])] * 3)
    assert written == [0.3, 0.5]  # each trial written once
    assert [r["fused"] for r in rows] == [2, 2, 2]
    assert rows[1]["store_file"] == "already in the store"
    assert {k: v for k, v in rows[1].items() if k != "store_file"} == {
        k: v for k, v in rows[0].items() if k != "store_file"
    }


def test_a_group_without_finetuning_stacks_nothing(tmp_path):
    """finetune.epochs=0: nothing runs batched (not even a model vmap cannot batch), and
    each row is the trial's row alone, fused=1."""
    from sweep.fused import run_fused
    from sweep.trial import run_trial

    model = ["model._target_=tests.custom_models.ItemNet", "model.name=item_net", "~model.width"]
    quick = [*model, "pretrain.epochs=1", "finetune.epochs=0"]
    quick.append(f"store.baselines={tmp_path / 'baselines'}")
    amounts = ("amount=0.3", "amount=0.6")
    rows = run_fused([make_cfg(tmp_path / "fused", *quick, a) for a in amounts])
    assert [(r["status"], r["fused"]) for r in rows] == [("complete", 1)] * 2
    alone = [run_trial(make_cfg(tmp_path / "alone", *quick, a)) for a in amounts]
    columns = ["sparsity", "acc_pruned", "acc_recalibrated", "acc_finetuned", "flops"]
    assert [[r[c] for c in columns] for r in rows] == [[r[c] for c in columns] for r in alone]


def test_a_group_that_cannot_run_batched_runs_one_at_a_time(tmp_path, caplog):
    from sweep.fused import run_fused
    from sweep.trial import run_trial

    model = ["model._target_=tests.custom_models.ItemNet", "model.name=item_net", "~model.width"]
    quick = [*model, "pretrain.epochs=1", f"store.baselines={tmp_path / 'baselines'}"]
    amounts = ("amount=0.3", "amount=0.6")
    recorded = []  # as an Optuna job's record_row, which puts them on its trial
    with caplog.at_level("WARNING", logger="sweep.fused"):
        cfgs = [make_cfg(tmp_path / "fused", *quick, a) for a in amounts]
        rows = run_fused(cfgs, on_row=[lambda row, layers: recorded.append(dict(row))] * 2)
    assert [r["status"] for r in rows] == ["complete", "complete"]
    assert [r["fused"] for r in rows] == [1, 1]
    assert recorded == [{k: v for k, v in r.items() if k != "store_file"} for r in rows]
    [told] = [r.getMessage() for r in caplog.records if r.name.startswith("sweep.fused")]
    assert told.startswith("the group of 2 cannot run batched (")
    assert told.endswith("); each finetunes alone")
    alone = [run_trial(make_cfg(tmp_path / "alone", *quick, a)) for a in amounts]
    assert [r["acc_finetuned"] for r in rows] == [r["acc_finetuned"] for r in alone]


def test_a_batched_test_pass_that_fails_tests_each_member_alone(tmp_path, caplog, monkeypatch):
    """The finetuning ran batched; its test pass fails (the GPU's memory, an operation the eval
    mode alone uses): each member is tested alone, and keeps its batched finetuning."""
    import sweep.fused._run
    from sweep.fused import run_fused

    quick = ["finetune.epochs=1", "pretrain.epochs=0", "recalibrate.batches=0"]
    quick.append(f"store.baselines={tmp_path / 'baselines'}")
    amounts = ("amount=0.3", "amount=0.6")
    batched = run_fused([make_cfg(tmp_path / "batched", *quick, a) for a in amounts])

    def fails(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(sweep.fused._run, "evaluate_fused", fails)
    with caplog.at_level("WARNING", logger="sweep.fused"):
        rows = run_fused([make_cfg(tmp_path / "alone", *quick, a) for a in amounts])
    assert [(r["status"], r["fused"]) for r in rows] == [("complete", 2)] * 2
    assert [m for m in caplog.messages if "test pass" in m] == [
        "the group's batched test pass failed (CUDA out of memory); each member is tested alone"
    ]
    n_test = round(0.2 * 1797)
    for r, b in zip(rows, batched, strict=True):
        assert abs(r["acc_finetuned"] - b["acc_finetuned"]) <= 1 / n_test
        assert r["loss_finetuned"] == pytest.approx(b["loss_finetuned"], abs=1e-4)


def test_a_member_stopped_before_the_batched_model_fails_keeps_its_outcome(
    tmp_path, caplog, monkeypatch
):
    """The batched model fails in epoch 2 (the GPU's memory in a validation pass); member 0's
    trial pruner had stopped it after epoch 1. It was trained again alone, reported from epoch
    1 again and stored complete; now it stays pruned, and the other finetunes alone."""
    import sweep.fused._engine
    from sweep.fused import run_fused

    quick = ["finetune.epochs=3", "pretrain.epochs=0", "recalibrate.batches=0"]
    cfgs = [make_cfg(tmp_path, *quick, a) for a in ("amount=0.3", "amount=0.6")]
    seen: dict[int, list[int]] = {0: [], 1: []}
    reporter = _reporters(seen, stopped=0, message="pruned at epoch {}")

    evaluate, passes = sweep.fused._engine._evaluate, []

    def fails_in_epoch_2(stack, *args):
        passes.append(1)
        if len(passes) == 2:
            raise RuntimeError("CUDA out of memory")
        return evaluate(stack, *args)

    monkeypatch.setattr(sweep.fused._engine, "_evaluate", fails_in_epoch_2)
    with caplog.at_level("WARNING", logger="sweep.fused"):
        rows = run_fused(cfgs, on_epoch=[reporter(0), reporter(1)])
    assert [(r["status"], r["error"]) for r in rows] == [
        ("pruned", "pruned at epoch 1"),
        ("complete", None),
    ]
    assert [r["fused"] for r in rows] == [2, 1]
    assert seen == {0: [1], 1: [1, 1, 2, 3]}  # member 1 again from its pruned weights
    assert (
        "the group of 2 cannot run batched (CUDA out of memory); each finetunes alone "
        "(1 stopped before keep their outcome)" in caplog.messages
    )


# ---------------------------------------------------------------- the fuse key


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("1", 1), ("8", 8)])
def test_fuse_takes_an_int_or_auto_and_is_in_no_trial_key(tmp_path, value, expected):
    from sweep.trial import prepare

    cfg = make_cfg(tmp_path, f"fuse={value}")
    assert cfg.fuse == expected
    assert prepare(cfg).key == prepare(make_cfg(tmp_path, "fuse=1")).key


@pytest.mark.parametrize("value", ["0", "-2", "x", "2.5", "true", "null"])
def test_a_bad_fuse_is_one_line_and_writes_nothing(tmp_path, value):
    from sweep.errors import ConfigError
    from sweep.trial import prepare

    shown = {"x": "'x'"}.get(value, value)  # null, true: as the command line writes them
    wrong = "is out of range" if value in ("0", "-2", "2.5") else "is not valid"
    message = f"fuse={shown} {wrong}; accepted: 1 (off) | an int K >= 2 | auto"
    with pytest.raises(ConfigError) as e:
        prepare(make_cfg(tmp_path / "results", f"fuse={value}"))
    assert str(e.value) == message
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("setting", "device", "free", "expected"),
    [
        ("auto", "cpu", None, 1),  # a CPU: fusion does not pay there (issue 23)
        (4, "cpu", None, 4),  # asked for: whatever the device
        ("auto", "cuda", 5 * 10**9, 4),  # 80% of 5 GB in members of 1 GB
        ("auto", "cuda", 10**9, 1),  # not even one fits: alone
        ("auto", "cuda", 10**12, 16),  # at most AUTO_LIMIT
    ],
)
def test_fuse_size(setting, device, free, expected):
    from sweep.fused import fuse_size

    assert fuse_size(setting, torch.device(device), 10**9, free_bytes=free) == expected


def test_a_grid_multirun_fuses_its_jobs_in_groups_of_fuse(tmp_path):
    """``-m amount=... fuse=2``: the first job of each group runs the next one with it; each
    job keeps its line, its row and the key it has alone."""
    from sweep import load_results
    from sweep.trial import prepare
    from tests.conftest import FAST, run_cli

    amounts = ("0.2", "0.4", "0.6")
    result = run_cli("-m", f"amount={','.join(amounts)}", "fuse=2", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("]")[0].split(",")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"]
    rows = load_results(tmp_path / "results").sort_values("amount")
    assert rows["fused"].tolist() == [2, 2, 1]  # the last job has no partner left
    assert rows["sparsity"].tolist() == pytest.approx([0.2, 0.4, 0.6], abs=1e-4)  # per tensor
    keys = [
        prepare(make_cfg(tmp_path / "results", f"amount={a}"), check_store=False).key
        for a in amounts
    ]
    assert rows["trial_key"].tolist() == keys


@pytest.mark.slow  # about 12 s: the default suite stays under 10 minutes
def test_a_rerun_grid_groups_only_the_trials_not_yet_in_the_store(tmp_path):
    """skip_completed=true: jobs already in the store counted toward a group's size, so that
    a rerun's new trials, between them, each finetuned alone."""
    from sweep import load_results
    from tests.conftest import FAST, run_cli

    first = run_cli("-m", "amount=0.4,0.8", *FAST, cwd=tmp_path)  # one at a time
    assert first.returncode == 0, first.stderr
    args = ["-m", "amount=0.2,0.4,0.6,0.8", "fuse=2", "skip_completed=true", *FAST]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = load_results(tmp_path / "results").sort_values("amount")
    assert rows[["amount", "fused"]].values.tolist() == [[0.2, 2], [0.4, 1], [0.6, 2], [0.8, 1]]
    assert "already in the store" in result.stdout


def test_jobs_that_each_store_in_their_own_folder_run_alone(tmp_path):
    """hydra.job.chdir=true with the relative store.path=results: a group's later jobs were
    written to the first job's folder, k/0/results, where alone each has its own."""
    from sweep import load_results
    from tests.conftest import FAST, run_cli

    args = ["-m", "hydra.job.chdir=true", "hydra.sweep.dir=k", "amount=0.2,0.4", "fuse=2"]
    result = run_cli(*args, *FAST, "store.path=results", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for job, amount in enumerate((0.2, 0.4)):
        rows = load_results(tmp_path / "k" / str(job) / "results")
        assert rows[["amount", "fused"]].values.tolist() == [[amount, 1]]
        log = (tmp_path / "k" / str(job) / "sweep.log").read_text()
        assert f"job {job} runs alone: hydra.job.chdir=true with a relative store.path" in log


@pytest.mark.slow  # two searches of four trials (about 50 s)
def test_an_optuna_search_asks_fuse_trials_runs_them_fused_and_tells_each(tmp_path):
    """``fuse=3`` in a search: trials are asked three at a time and run fused; each is told
    its own row, and the rows are those of the same search run one trial at a time."""
    import optuna

    from sweep import load_results
    from tests.conftest import FAST, run_cli

    def search(name: str, fuse: int):
        result = run_cli(
            "-m",
            "search=tradeoff",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.n_trials=4",
            f"hydra.sweeper.study_name={name}",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/{name}.db",
            f"store.path={tmp_path / name}",
            f"fuse={fuse}",
            # the first and last layers kept dense: a trial pruned there to chance accuracy
            # trains chaotically, and float rounding alone moves its accuracy by percents
            *[a for a in FAST if a != "scope.dense_ends=false"],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/{name}.db")
        return result, study, load_results(tmp_path / name).sort_values("optuna.trial")

    result, study, fused = search("fused", 3)
    _, _, alone = search("alone", 1)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    # trials 0-2 fused (their methods and amounts differ: masks only), then the one the
    # budget has left, alone
    assert fused["fused"].tolist() == [3, 3, 3, 1]
    assert alone["fused"].tolist() == [1] * 4
    assert fused["trial_key"].tolist() == alone["trial_key"].tolist()
    assert fused["sparsity"].tolist() == alone["sparsity"].tolist()
    assert [t.user_attrs["trial_key"] for t in study.trials] == fused["trial_key"].tolist()
    before = ["acc_dense", "acc_pruned", "acc_recalibrated"]
    assert fused[before].to_numpy().tolist() == alone[before].to_numpy().tolist()
    # a prediction may flip on a test image whose top two logits tie to rounding
    diff = fused["acc_finetuned"].to_numpy() - alone["acc_finetuned"].to_numpy()
    assert abs(diff).max() <= 1 / round(0.2 * 1797)
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split(",")[0] for line in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"]


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_row_small_on_any_machine(tmp_path):
    """experiments/benchmarks/gpu_sweep.py, the one GPU command, keeps working where no GPU is:
    its --smoke run prints a row for each way of running trials."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "experiments" / "benchmarks" / "gpu_sweep.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split()[0:2] for line in done.stdout.splitlines()[3:]]
    assert [" ".join(r) for r in rows] == [
        "hand 2",
        "alone 2",
        "fused 2",
        "sweep fuse=2",
        "workers 1",
    ]
