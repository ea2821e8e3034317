"""Faults once a trial runs: every outcome is a row, and a broken model never reads complete.

The models and the pruning method below are users' own code, built by ``_target_`` from this
module; each breaks at one stage of the trial.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from sweep import load_results
from sweep.trial import run_trial


class TinyNet(nn.Module):
    """One linear layer over the flattened image: trains in milliseconds."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class CrashesInTraining(TinyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("forward failed in training mode")
        return super().forward(x)


class NaNInEval(TinyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * math.nan if not self.training else out


class NaNWeights(TinyNet):
    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__(num_classes, in_channels, image_size)
        nn.init.constant_(self.fc.weight, math.nan)


class NaNOncePruned(TinyNet):
    """Finite while dense; NaN as soon as any weight is exactly zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = bool((self.fc.weight != 0).all())
        return super().forward(x) * (1.0 if dense else math.nan)


class Exits(prune.BasePruningMethod):
    """A user's method that ends the process, as a script's ``sys.exit(3)`` would."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        raise SystemExit(3)


def _model(builder: str) -> list[str]:
    return [f"model._target_=tests.test_faults.{builder}", f"model.name={builder}", "~model.width"]


def _stored(tmp_path) -> list[tuple[str, str | None]]:
    df = load_results(tmp_path / "results")
    # a column of nothing but nulls reads back as NaN
    return [(s, None if pd.isna(e) else e) for s, e in zip(df.status, df.error, strict=True)]


def _baselines(tmp_path) -> list:
    return sorted((tmp_path / "results" / "baselines").glob("*.pt"))


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (_model("NaNInEval"), "pretrained model: outputs are not finite (nan)"),
        (
            [*_model("NaNWeights"), "pretrain.epochs=0"],
            "pretrained model: outputs are not finite (nan)",
        ),
        (_model("NaNOncePruned"), "pruned model: outputs are not finite (nan)"),
        (["pretrain.lr=1e30"], "pretrain: loss became nan in epoch 1"),
    ],
)
def test_non_finite_model_is_a_failed_row(cfg_factory, tmp_path, overrides, error):
    row = run_trial(cfg_factory(*overrides, "finetune.epochs=0"))
    assert (row["status"], row["error"]) == ("failed", error)
    assert _stored(tmp_path) == [("failed", error)]
    if error.startswith("pretrain"):
        assert _baselines(tmp_path) == []  # the next trial trains again, it does not load NaN


def test_nan_baseline_in_the_cache_is_never_complete(cfg_factory, tmp_path):
    """The issue's case: NaN weights, no finetuning, once stored complete at accuracy 0.1058."""
    assert run_trial(cfg_factory("finetune.epochs=0"))["status"] == "complete"
    [weights] = _baselines(tmp_path)
    state = torch.load(weights, weights_only=True)
    torch.save({k: v.float().fill_(math.nan) for k, v in state.items()}, weights)
    row = run_trial(cfg_factory("finetune.epochs=0"))
    error = "dense model: outputs are not finite (nan)"
    assert (row["status"], row["error"], row["baseline_trained"]) == ("failed", error, False)
    assert "acc_dense" not in row
    # the row of the first run, before the cache went bad, stays: a failed rerun loses nothing
    assert _stored(tmp_path) == [("complete", None)]
    row = run_trial(cfg_factory("finetune.epochs=0", "amount=0.3"))  # another trial, same cache
    assert (row["status"], row["error"]) == ("failed", error)
    assert sorted(_stored(tmp_path), key=str) == [("complete", None), ("failed", error)]


@pytest.mark.parametrize(
    "damage", ["truncated weights", "garbage facts", "weights that do not fit"]
)
def test_an_unreadable_baseline_cache_is_trained_again(cfg_factory, tmp_path, caplog, damage):
    """A truncated .pt (torch's "PytorchStreamReader failed reading zip archive") or a
    garbage .json failed every trial of the baseline, without naming the file."""
    first = run_trial(cfg_factory("finetune.epochs=0"))
    [weights] = _baselines(tmp_path)
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "weights that do not fit":
        torch.save({"block1.conv.weight": torch.zeros(1)}, weights)
    else:
        weights.with_suffix(".json").write_text("{not json")
    row = run_trial(cfg_factory("finetune.epochs=0", "amount=0.3"))
    assert (row["status"], row["baseline_trained"]) == ("complete", True)
    assert row["acc_dense"] == first["acc_dense"]  # the same seed trains the same baseline
    [warning] = [m for m in caplog.messages if "cannot be read" in m]
    assert warning.startswith(
        f"dense baseline cache {weights} or {weights.stem}.json cannot be read ("
    )
    assert warning.endswith("): trained again and replaced")
    again = run_trial(cfg_factory("finetune.epochs=0", "amount=0.4"))
    assert again["baseline_trained"] is False  # the replaced cache reads


def test_forward_raising_in_pretraining_is_a_failed_row(cfg_factory, tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="sweep.trial"):
        row = run_trial(cfg_factory(*_model("CrashesInTraining")))
    error = "RuntimeError: forward failed in training mode"
    assert (row["status"], row["error"]) == ("failed", error)
    assert _stored(tmp_path) == [("failed", error)]
    assert [r.exc_info[0] for r in caplog.records] == [RuntimeError]  # the traceback is logged
    assert _baselines(tmp_path) == []
    assert row["time_total_s"] > 0 and row["started_at"] is not None


def test_method_calling_sys_exit_is_a_failed_row(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("method._target_=tests.test_faults.Exits", "method.name=exits"))
    assert (row["status"], row["error"]) == ("failed", "SystemExit: 3")
    assert _stored(tmp_path) == [("failed", "SystemExit: 3")]
    assert row["acc_dense"] > 0.5  # the dense measures before the fault stay in the row


def test_huge_finite_loss_is_a_complete_row(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("finetune.lr=1e6"))
    assert (row["status"], row["error"]) == ("complete", None)
    assert math.isfinite(row["loss_finetuned"]) and row["loss_finetuned"] > 1e3
    assert _stored(tmp_path) == [("complete", None)]


def test_keyboard_interrupt_stops_without_a_row(cfg_factory, tmp_path):
    def interrupt(epoch: int, acc: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg_factory(), on_epoch=interrupt)
    assert list((tmp_path / "results" / "trials").glob("*")) == []
