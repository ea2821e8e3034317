"""search=layerwise: one Optuna amount per prunable layer, bounded by a sensitivity result."""

from __future__ import annotations

import re

import optuna
import pytest
from hydra import compose, initialize_config_module

from sweep import load_layers, load_results
from sweep.errors import ConfigError
from sweep.search import study_settings
from sweep.search._layerwise import amounts_text, layer_params
from sweep.sensitivity import save_amounts
from tests.conftest import FAST, run_cli

OPTUNA_FAST = [*FAST, "finetune.epochs=1", "progress=false"]


def _composed(tmp_path, *overrides):
    with initialize_config_module("sweep.conf", version_base="1.3"):
        return compose(
            "config",
            ["search=layerwise", *FAST, f"store.path={tmp_path / 'results'}", *overrides],
            return_hydra_config=True,
        )


def test_one_param_per_layer_the_trial_prunes(tmp_path):
    cfg = _composed(tmp_path)
    settings, _ = study_settings(cfg.hydra.sweeper, [], trial_cfg=cfg)
    names = [p.name for p in settings.space.params]
    # FAST prunes every layer; scope.dense_ends=true (the default) leaves the two ends dense
    layers = ("block1.conv", "block2.conv", "block3.conv", "classifier")
    assert names == [f"scope.amounts.{n}" for n in layers]
    assert all((p.low, p.high) == (0.0, 0.95) for p in settings.space.params)
    ends = _composed(tmp_path, "scope.dense_ends=true")
    params = layer_params(ends.hydra.sweeper.layerwise, ends)
    assert list(params) == ["scope.amounts.block2.conv", "scope.amounts.block3.conv"]


def test_a_sensitivity_result_bounds_each_layer(tmp_path):
    result = save_amounts({"block2.conv": 0.3, "block3.conv": 0.99}, tmp_path / "amounts.yaml")
    cfg = _composed(tmp_path, f"hydra.sweeper.layerwise.sensitivity={result}")
    params = layer_params(cfg.hydra.sweeper.layerwise, cfg)
    assert params["scope.amounts.block2.conv"] == {"low": 0.0, "high": 0.3}
    assert params["scope.amounts.block3.conv"] == {"low": 0.0, "high": 0.95}  # high caps it
    assert params["scope.amounts.block1.conv"] == {"low": 0.0, "high": 0.95}  # not in the file
    flat = tmp_path / "flat.yaml"
    flat.write_text("block2: {conv: 0.2}\n")  # the command line's nesting reads the same
    cfg = _composed(tmp_path, f"hydra.sweeper.layerwise.sensitivity={flat}")
    assert (
        layer_params(cfg.hydra.sweeper.layerwise, cfg)["scope.amounts.block2.conv"]["high"] == 0.2
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["hydra.sweeper.layerwise.high=1.0"],
            "hydra.sweeper.layerwise.high=1.0 is outside [0, 1)",
        ),
        (
            ["hydra.sweeper.layerwise.low=0.5", "hydra.sweeper.layerwise.high=0.4"],
            "hydra.sweeper.layerwise.low=0.5 is greater than high=0.4; accepted: low <= high",
        ),
        (["+hydra.sweeper.layerwise.step=0.1"], "has unknown key(s) ['step']"),
        (
            ["hydra.sweeper.layerwise.sensitivity=nowhere.yaml"],
            "hydra.sweeper.layerwise.sensitivity='nowhere.yaml' is not a file",
        ),
    ],
)
def test_bad_layerwise_settings(overrides, message, tmp_path):
    cfg = _composed(tmp_path, *overrides)
    with pytest.raises(ConfigError) as e:
        layer_params(cfg.hydra.sweeper.layerwise, cfg)
    assert message in str(e.value)


def test_a_sensitivity_result_of_another_model_is_refused(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("layer4.1.conv2: 0.5\n")
    result = run_cli(
        "-m",
        "search=layerwise",
        f"hydra.sweeper.layerwise.sensitivity={other}",
        *OPTUNA_FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: hydra.sweeper.layerwise.sensitivity='{other}' names none of the layers in "
        "scope; layers are: block1.conv, block2.conv, block3.conv, classifier"
    ]
    assert not (tmp_path / "results").exists()


def test_a_layerwise_study_prunes_each_layer_by_its_own_amount(tmp_path):
    result = run_cli(
        "-m",
        "search=layerwise",
        "hydra.sweeper.n_trials=3",
        *OPTUNA_FAST,
        "scope.dense_ends=true",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "study layerwise: 3 trials (3 complete)" in result.stdout
    # each trial's line names its amounts: its `amount` (0) applies to no layer
    lines = [ln for ln in result.stdout.splitlines() if ": complete, sparsity" in ln]
    assert len(lines) == 3
    # each line: its place in the study's budget, the time left, then the amounts
    for k, line in enumerate(lines, 1):
        count, _, rest = line.partition("] ")
        assert re.fullmatch(rf"\[{k}/3, eta 0:\d\d:\d\d", count)
        assert rest.startswith("l1_unstructured amount=0, scope.amounts block2.conv=")
    assert lines[-1].startswith("[3/3, eta 0:00:00] ")
    df = load_results(tmp_path / "results")
    assert len(df) == 3 and (df["status"] == "complete").all()
    layers = load_layers(tmp_path / "results")
    study = optuna.load_study(
        study_name="layerwise", storage=f"sqlite:///{tmp_path}/results/optuna.db"
    )
    for t in study.trials:
        row = df[df["optuna.trial"] == t.number].iloc[0]
        assert set(t.params) == {"scope.amounts.block2.conv", "scope.amounts.block3.conv"}
        mine = layers[layers["trial_key"] == row.trial_key].set_index("layer")
        for name, amount in t.params.items():
            layer = name.removeprefix("scope.amounts.")
            assert row[name] == amount
            assert mine.loc[layer, "amount"] == amount
            numel = mine.loc[layer, "numel"]
            assert mine.loc[layer, "nonzero"] == numel - round(amount * numel)
        for end in ("block1.conv", "classifier"):
            assert mine.loc[end, "nonzero"] == mine.loc[end, "numel"]
        assert t.values == [row.acc_finetuned, row.sparsity]
    # the Pareto table shows the searched amounts, not `amount` (0 in every trial)
    lines = result.stdout.splitlines()
    header = lines[lines.index("Pareto front (maximize acc_finetuned, maximize sparsity):") + 1]
    assert header.split() == ["trial_key", "method", "scope.amounts", "sparsity", "acc_finetuned"]
    for t in study.best_trials:
        [line] = [ln for ln in lines if ln.startswith(f"{t.number} ")]
        a, b = t.params["scope.amounts.block2.conv"], t.params["scope.amounts.block3.conv"]
        assert f" block2.conv={a:.4g}, block3.conv={b:.4g} " in line


def test_amounts_text_shows_a_few_amounts_or_their_count_and_range():
    row = {"amount": 0.0, "scope.amounts.a": 0.125, "scope.amounts.b": float("nan")}
    assert amounts_text(row) == "a=0.125"  # NaN: a layer another trial of the study had
    many = {f"scope.amounts.layer{i}": i / 8 for i in range(7)}
    assert amounts_text(many) == "7 layers, 0 to 0.75"
    assert amounts_text({"amount": 0.5}) == ""
