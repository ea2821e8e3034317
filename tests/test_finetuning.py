"""Finetuning as papers do it: BatchNorm recalibration after pruning, learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from sweep.data import Split
from sweep.models import mlp, small_cnn
from sweep.recalibrate import recalibrate_batchnorm
from sweep.trial import prepare, run_trial
from tests.conftest import EARLIER_DEFAULTS


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    return Split(3 + 2 * torch.randn(n, 1, 8, 8, generator=g), torch.zeros(n, dtype=torch.long))


def test_running_statistics_change_and_no_weight_does():
    torch.manual_seed(0)
    model = small_cnn(num_classes=10, in_channels=1, image_size=8).eval()
    params = {k: v.clone() for k, v in model.named_parameters()}
    before = model.block1.bn.running_mean.clone()
    assert recalibrate_batchnorm(model, _data(), batches=2, batch_size=16, seed=0)
    assert not model.training  # the mode it had
    assert not torch.equal(model.block1.bn.running_mean, before)
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    # a plain average over exactly the 2 batches drawn: the same statistics again
    again = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_batchnorm(model, _data(), batches=2, batch_size=16, seed=0)
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())
    assert model.block1.bn.momentum == 0.1  # restored
    assert int(model.block1.bn.num_batches_tracked) == 2


def test_first_layer_statistics_are_the_batches_own():
    torch.manual_seed(0)
    model = small_cnn(num_classes=10, in_channels=1, image_size=8)
    data = _data(32)
    recalibrate_batchnorm(model, data, batches=1, batch_size=32, seed=0)
    with torch.no_grad():
        conv = model.block1.conv(data.x)
    assert torch.allclose(model.block1.bn.running_mean, conv.mean((0, 2, 3)), atol=1e-5)


def test_nothing_to_do():
    model = mlp(num_classes=10, in_channels=1, image_size=8)
    assert not recalibrate_batchnorm(model, _data(), batches=5, batch_size=16, seed=0)
    model = small_cnn(num_classes=10, in_channels=1, image_size=8)
    before = model.block1.bn.running_var.clone()
    assert not recalibrate_batchnorm(model, _data(), batches=0, batch_size=16, seed=0)
    assert torch.equal(model.block1.bn.running_var, before)


def test_trial_records_both_accuracies(cfg_factory):
    off = run_trial(cfg_factory("method=ln_structured", "amount=0.5", "recalibrate.batches=0"))
    assert off["recalibrated"] is False and off["acc_recalibrated"] == off["acc_pruned"]
    on = run_trial(cfg_factory("method=ln_structured", "amount=0.5", "recalibrate.batches=10"))
    assert on["recalibrated"] is True and on["acc_pruned"] == off["acc_pruned"]
    assert on["acc_recalibrated"] != on["acc_pruned"]
    assert on["trial_key"] != off["trial_key"]
    # a fast proxy search: no finetuning at all
    proxy = run_trial(
        cfg_factory(
            "method=ln_structured", "amount=0.5", "recalibrate.batches=10", "finetune.epochs=0"
        )
    )
    assert proxy["acc_recalibrated"] == on["acc_recalibrated"] == proxy["acc_finetuned"]


def test_off_keeps_existing_keys(cfg_factory):
    off = prepare(cfg_factory(*EARLIER_DEFAULTS), check_store=False).key
    assert off == "265616c46077d97b"  # the key before recalibration existed
    assert prepare(cfg_factory("recalibrate.batches=10"), check_store=False).key != off
    assert (
        prepare(cfg_factory("recalibrate.batches=1"), check_store=False).key
        != prepare(cfg_factory("recalibrate.batches=10"), check_store=False).key
    )


def test_no_batchnorm_says_nothing_was_done(cfg_factory):
    row = run_trial(cfg_factory("model=mlp", "recalibrate.batches=10", "amount=0.5"))
    assert row["recalibrated"] is False and row["acc_recalibrated"] == row["acc_pruned"]


def _rates(settings, steps_per_epoch=4):
    from torch import nn

    from sweep.training import make_scheduler

    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    schedule = make_scheduler(optimizer, settings, steps_per_epoch)
    rates = []
    for _ in range(settings["epochs"] * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_learning_rate_schedules():
    import math

    base = {"epochs": 4, "step_gamma": 0.1, "step_milestones": [0.5, 0.75]}
    assert _rates({**base, "scheduler": "constant"}) == [1.0] * 16
    warm = _rates({**base, "scheduler": "constant", "warmup_epochs": 1})
    assert warm[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    step = _rates({**base, "scheduler": "step"})
    assert step == pytest.approx([1.0] * 8 + [0.1] * 4 + [0.01] * 4)
    cosine = _rates({**base, "scheduler": "cosine", "warmup_epochs": 1})
    assert cosine[:4] == [0.25, 0.5, 0.75, 1.0]
    assert cosine[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 12)) for k in range(12)])


def test_schedule_and_label_smoothing_change_training_and_keys(cfg_factory):
    plain = cfg_factory("amount=0.5", *EARLIER_DEFAULTS)
    cosine = cfg_factory(
        "amount=0.5", *EARLIER_DEFAULTS, "finetune.scheduler=cosine", "finetune.warmup_epochs=1"
    )
    smooth = cfg_factory("amount=0.5", *EARLIER_DEFAULTS, "finetune.label_smoothing=0.1")
    keys = {prepare(c, check_store=False).key for c in (plain, cosine, smooth)}
    assert len(keys) == 3
    assert prepare(plain, check_store=False).key == "265616c46077d97b"  # as before they existed
    rows = [run_trial(c) for c in (plain, cosine, smooth)]
    assert len({r["loss_finetuned"] for r in rows}) == 3
