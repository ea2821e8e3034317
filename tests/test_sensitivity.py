"""python -m sweep.sensitivity and sweep.sensitivity: one layer pruned at a time, on tiny models."""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep import analysis, load_layers, load_results, sensitivity
from sweep.errors import ConfigError
from sweep.report import write_report
from sweep.store import write_trial
from sweep.trial import run_trial
from tests.conftest import FAST, make_cfg

# small_cnn with every layer in scope (FAST: scope.dense_ends=false), narrow to run fast
MODEL = ["model.width=4", "recalibrate.batches=2"]
LAYERS = ["block1.conv", "block2.conv", "block3.conv", "classifier"]
AMOUNTS = [0.5, 0.9]


def run_sensitivity_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m sweep.sensitivity ARGS`` in ``cwd``, as `tests.conftest.run_cli` runs sweep."""
    return subprocess.run(
        [sys.executable, "-m", "sweep.sensitivity", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        timeout=300,
    )


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One analysis of 4 layers x 2 amounts in a fresh store: (store, table)."""
    store = tmp_path_factory.mktemp("sensitivity") / "results"
    table = sensitivity.run(make_cfg(store, *MODEL), AMOUNTS)
    return store, table


def test_the_table_says_what_its_accuracies_are(measured, tmp_path):
    """small_cnn's are recalibrated; mlp has no BatchNorm, so its are the pruned model's, and
    the table no longer says "after BatchNorm recalibration" of them."""
    from sweep.sensitivity import _text

    _, table = measured
    assert table["recalibrated"].tolist() == [True] * len(table)
    assert sensitivity.load(measured[0])["recalibrated"].all()
    mlp = sensitivity.run(make_cfg(tmp_path, "model=mlp", "pretrain.epochs=1"), [0.5])
    assert mlp["recalibrated"].tolist() == [False] * len(mlp)
    assert mlp["acc_recalibrated"].tolist() == mlp["acc_pruned"].tolist()
    for t, stage in (
        (table, "after BatchNorm recalibration"),
        (mlp, "as pruned (no BatchNorm to recalibrate)"),
    ):
        line = _text(t, sensitivity.highest_within(t), 0.01, 1.0).splitlines()[1]
        assert line.startswith(f"accuracy {stage}, one layer pruned, dense ")


def test_every_layer_alone_at_every_amount(measured):
    store, table = measured
    assert table[["layer", "amount"]].values.tolist() == [[n, a] for n in LAYERS for a in AMOUNTS]
    assert (table.status == "complete").all() and not table.from_store.any()
    assert table["drop"].tolist() == pytest.approx(
        (table.acc_dense - table.acc_recalibrated).tolist()
    )

    rows = load_results(store)
    assert len(rows) == len(LAYERS) * len(AMOUNTS) == rows.trial_key.nunique()
    assert (rows.tag == "sensitivity").all()
    assert (rows.amount == 0.0).all() and (rows["finetune.epochs"] == 0).all()
    assert rows.recalibrated.all()
    assert set(rows.trial_key) == set(table.trial_key)

    asked = table[["trial_key", "layer", "amount"]].rename(
        columns={"layer": "pruned", "amount": "asked"}
    )
    layers = load_layers(store).merge(asked, on="trial_key")
    assert len(layers) == 8 * len(LAYERS)
    mine, others = layers[layers.layer == layers.pruned], layers[layers.layer != layers.pruned]
    # exactly one layer pruned per trial, the one the table names, by exactly its amount
    assert (others.nonzero == others.numel).all() and (others.amount == 0.0).all()
    assert len(mine) == 8 and mine.amount.tolist() == mine.asked.tolist()
    assert mine.nonzero.tolist() == (mine.numel - np.round(mine.asked * mine.numel)).tolist()
    numel = mine.drop_duplicates("layer").set_index("layer").numel
    assert table.groupby("layer").numel.first().to_dict() == numel.to_dict()


def test_a_rerun_skips_what_the_store_has(measured):
    store, table = measured
    again = sensitivity.run(make_cfg(store, *MODEL, "progress=true"), AMOUNTS)
    assert again.from_store.all()
    assert again.trial_key.tolist() == table.trial_key.tolist()
    assert again.acc_recalibrated.tolist() == table.acc_recalibrated.tolist()
    assert len(load_results(store)) == 8


def test_load_reads_the_table_back(measured):
    store, table = measured
    loaded = sensitivity.load(store)
    assert list(loaded.columns) == list(sensitivity.COLUMNS)
    same = ["layer", "amount", "status", "acc_dense", "acc_recalibrated", "drop", "trial_key"]
    pd.testing.assert_frame_equal(loaded[same], table[same])
    assert loaded.numel.tolist() == table.numel.tolist() and loaded.from_store.all()
    assert loaded.model.unique().tolist() == ["small_cnn"]


def test_highest_amount_within_the_tolerance():
    rows = [
        # within: a drop of exactly the tolerance counts; the highest such amount wins even
        # past an amount that was not within
        ("a", 0.3, 0.99, 0.985),
        ("a", 0.5, 0.99, 0.97),
        ("a", 0.7, 0.99, 0.98),
        ("a", 0.9, 0.99, 0.5),
        # nothing within: 0.0, leave the layer dense
        ("b", 0.3, 0.99, 0.9),
        ("b", 0.9, 0.99, 0.2),
        # better than dense counts as within
        ("c", 0.9, 0.99, 0.995),
    ]
    table = pd.DataFrame(rows, columns=["layer", "amount", "acc_dense", "acc_recalibrated"])
    table["status"] = "complete"
    table["numel"] = table.layer.map({"a": 10, "b": 20, "c": 30})
    failed = {"layer": "c", "amount": 0.95, "acc_dense": 0.99, "status": "failed", "numel": 30}
    table = pd.concat([table, pd.DataFrame([failed])], ignore_index=True)  # never within

    result = sensitivity.highest_within(table, 0.01)
    assert result.layer.tolist() == ["a", "b", "c"]
    assert result.amount.tolist() == [0.7, 0.0, 0.9]
    assert result.numel.tolist() == [10, 20, 30]
    assert result["drop"].iloc[0] == pytest.approx(0.01) and math.isnan(result["drop"].iloc[1])
    assert sensitivity.highest_within(table, 0.0).amount.tolist() == [0.0, 0.0, 0.9]
    assert sensitivity.highest_within(table, 1.0).amount.tolist() == [0.9, 0.9, 0.9]
    # seeds average: 0.98 and 0.96 are a drop of 0.02
    seeds = pd.DataFrame(
        {"layer": "a", "amount": 0.5, "acc_dense": 0.99, "acc_recalibrated": [0.98, 0.96]}
    )
    assert sensitivity.highest_within(seeds, 0.015).amount.tolist() == [0.0]
    assert sensitivity.highest_within(seeds, 0.02).amount.tolist() == [0.5]
    with pytest.raises(ConfigError, match=r"tolerance=1.5 is outside \[0, 1\]; accepted: a number"):
        sensitivity.highest_within(table, 1.5)
    with pytest.raises(ConfigError, match=r"amounts entry 1.0 is outside \[0, 1\)"):
        sensitivity.run(make_cfg(Path("unused")), [0.5, 1.0])


def test_a_table_of_several_analyses_is_refused_not_averaged():
    """Two methods' drops at one layer and amount averaged are neither's: the l1 analysis
    alone keeps 0.9, ln's 0.5; averaged they read 0.5."""
    rows = [
        ("l1_unstructured", 0.5, 0.99),
        ("l1_unstructured", 0.9, 0.99),
        ("ln_structured", 0.5, 0.985),
        ("ln_structured", 0.9, 0.6),
    ]
    table = pd.DataFrame(rows, columns=["method", "amount", "acc_recalibrated"])
    table = table.assign(layer="block3.conv", acc_dense=0.99, model="small_cnn", dataset="digits")
    message = (
        "table holds 2 analyses (method=l1_unstructured; method=ln_structured); accepted: the "
        "rows of one, such as table[(table.method == 'l1_unstructured')]"
    )
    for call in (sensitivity.highest_within, analysis.plot_sensitivity):
        with pytest.raises(ConfigError) as e:
            call(table, 0.01)
        assert str(e.value) == message
    one = table[(table.method == "l1_unstructured")]
    assert sensitivity.highest_within(one, 0.01).amount.tolist() == [0.9]
    with pytest.raises(ConfigError) as e:
        sensitivity.highest_within(table.drop(columns="layer"), 0.01)
    assert str(e.value) == (
        "table has no layer column: it is not a sensitivity table; accepted: the rows of "
        "sweep.sensitivity.run(...) or sweep.sensitivity.load(...)"
    )


def test_two_analyses_of_one_model_name_are_told_apart(measured, tmp_path):
    """Analyses of small_cnn at width 4 and at width 2 in one store were averaged per layer
    and amount: load had only model, dataset and method to tell them apart."""
    store = tmp_path / "results"
    shutil.copytree(measured[0], store)
    sensitivity.run(make_cfg(store, "model.width=2", "recalibrate.batches=2"), [0.5])
    table = sensitivity.load(store)
    assert list(table.columns) == [*sensitivity.COLUMNS, "model.width"]
    assert table["model.width"].value_counts().to_dict() == {4: 8, 2: 4}
    with pytest.raises(ConfigError) as e:
        sensitivity.highest_within(table, 0.01)
    assert str(e.value) == (
        "table holds 2 analyses (model.width=4; model.width=2); accepted: the rows of one, such "
        "as table[(table['model.width'] == 4)]"
    )
    four = sensitivity.highest_within(table[(table["model.width"] == 4)], 0.01)
    assert four.equals(sensitivity.highest_within(measured[1], 0.01))


def test_a_method_without_an_amount_is_refused_before_any_trial(tmp_path):
    """N:M and a user's method without an amount pruned every layer at every amount of the
    grid: 20 trials of one same model, and a table of amounts that mean nothing."""
    user = ["method._target_=tests.custom_methods.EveryOther", "method.name=every_other"]
    for overrides, name in ((["method=nm"], "nm (NMSparsity)"), (user, "every_other (EveryOther)")):
        with pytest.raises(ConfigError, match=rf"^method={re.escape(name)} takes no amount: "):
            sensitivity.run(make_cfg(tmp_path, *overrides), [0.5])
    assert not (tmp_path / "trials").exists()


def test_saved_amounts_set_the_layers_of_a_trial(tmp_path):
    """The file composes into a trial whose layers table holds exactly the saved amounts, and
    the trial is the one the same amounts on the command line give."""
    saved = {"block1.conv": 0.3, "block2.conv": 0.0, "block3.conv": 0.9, "classifier": 0.5}
    path = sensitivity.save_amounts(saved, tmp_path / "conf" / "sensitivity" / "amounts.yaml")
    assert path.read_text().startswith("# @package _global_\n")

    store = tmp_path / "results"
    fixed = [*MODEL, "finetune.epochs=0", "skip_completed=true"]
    conf = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    row = run_trial(make_cfg(store, *fixed, conf, "+sensitivity=amounts"))
    assert row["status"] == "complete"
    layers = load_layers(store)
    assert dict(zip(layers.layer, layers.amount, strict=True)) == saved
    typed = [f"+scope.amounts.{name}={amount}" for name, amount in saved.items()]
    again = run_trial(make_cfg(store, *fixed, *typed))
    assert again["trial_key"] == row["trial_key"] and again["store_file"] == "already in the store"


@pytest.mark.parametrize(
    ("amounts", "file", "message"),
    [
        ({"block2.conv": 1.5}, "a.yaml", "amounts['block2.conv']=1.5 is not a fraction in [0, 1)"),
        ({"block2.conv": -3}, "a.yaml", "amounts['block2.conv']=-3 is not a fraction in [0, 1)"),
        ({"c": float("nan")}, "a.yaml", "amounts['c']=nan is not a fraction in [0, 1)"),
        ({"c": "x"}, "a.yaml", "amounts['c']='x' is not a fraction in [0, 1)"),
        ({"c": 0.5}, "a.txt", "path="),
        ([0.5], "a.yaml", "amounts is a list; accepted: a mapping of layer names"),
    ],
)
def test_saved_amounts_are_checked_before_anything_is_written(tmp_path, amounts, file, message):
    with pytest.raises(ConfigError) as e:
        sensitivity.save_amounts(amounts, tmp_path / "conf" / "sensitivity" / file)
    assert str(e.value).startswith(message)
    assert not (tmp_path / "conf").exists()


def test_the_table_of_highest_within_saves_as_it_is(tmp_path):
    best = pd.DataFrame({"layer": ["fc1", "fc2"], "numel": [10, 20], "amount": [0.5, 0.0]})
    path = sensitivity.save_amounts(best, tmp_path / "amounts.yaml")
    assert "fc1: 0.5\n" in path.read_text() and "fc2: 0.0\n" in path.read_text()


def test_trade_off_analysis_leaves_sensitivity_rows_out(measured, tmp_path):
    store, _ = measured
    trial = run_trial(make_cfg(store, *MODEL, "amount=0.5"))  # one ordinary trial beside them
    df, layers = load_results(store), load_layers(store)
    assert len(df) == 9 and analysis.ordinary(df).trial_key.tolist() == [trial["trial_key"]]
    assert analysis.complete(df).trial_key.tolist() == [trial["trial_key"]]
    assert analysis.varying(df) == []  # scope.amounts.*, tag, finetune.epochs would split
    assert analysis.aggregate(df)[["method", "amount", "n"]].values.tolist() == [
        ["l1_unstructured", 0.5, 1]
    ]
    texts = analysis.tradeoff(df).axes[0].get_legend().get_texts()
    assert [t.get_text() for t in texts] == [  # the curve and the dense baseline, no more
        "l1_unstructured",
        f"dense baseline ({trial['acc_dense']:.1%})",
    ]

    written = write_report(df, layers, tmp_path / "report", 0.01, str(store))
    summary = written[0].read_text()
    assert "Store `" in summary and (
        "1 trial(s) (1 complete) (8 row(s) of a layer sensitivity analysis left out: "
        "python -m sweep.sensitivity)" in summary
    )
    # stores from before the tag column: every row is a trial
    assert len(analysis.ordinary(df.drop(columns="tag"))) == 9


def test_plot_draws_each_layer_and_the_dense_level(measured):
    _, table = measured
    fig = analysis.plot_sensitivity(table, 0.01)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    dense = table.acc_dense.mean()
    assert labels == [*LAYERS, f"dense baseline ({dense:.1%})", "tolerance (1.0% below dense)"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    block3 = table[table.layer == "block3.conv"]
    assert lines["block3.conv"].get_ydata().tolist() == block3.acc_recalibrated.tolist()
    assert (
        ax.get_title() == "Layer sensitivity (l1_unstructured, no finetuning): small_cnn on digits"
    )


def test_command_prints_table_plot_and_the_command_that_applies_it(measured, tmp_path):
    store, table = measured
    shutil.copytree(store, tmp_path / "results")  # its baseline and trials: nothing to rerun
    result = run_sensitivity_cli(
        "--amounts", "0.9,0.5", "--tolerance", "0.02", *FAST, *MODEL, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith(
        "layer sensitivity of small_cnn on digits to l1_unstructured: 4 layers x 2 amounts = "
        "8 trials (0 run, 8 already in the store), "
    )
    dense = table.acc_dense.mean()
    assert out[1] == (
        f"accuracy after BatchNorm recalibration, one layer pruned, dense {dense:.4f}; "
        "highest amount within 0.02 of dense:"
    )
    assert out[2].split() == ["layer", "weights", "0.5", "0.9", "amount"]
    expected = sensitivity.highest_within(table, 0.02)
    for line, r in zip(out[3:7], expected.itertuples(), strict=True):
        accs = table[table.layer == r.layer].acc_recalibrated
        assert line.split() == [r.layer, str(r.numel), *(f"{a:.3f}" for a in accs), f"{r.amount:g}"]
    apply = "python -m sweep --config-dir results +sensitivity=amounts " + " ".join([*FAST, *MODEL])
    assert out[7:] == [
        "plot: results/sensitivity/accuracy.png",
        "amounts: results/sensitivity/amounts.yaml",
        f"apply: {apply}",
    ]
    assert (tmp_path / "results/sensitivity/accuracy.png").stat().st_size > 10_000
    saved = dict(zip(expected.layer, expected.amount, strict=True))

    applied = subprocess.run(
        [sys.executable, *shlex.split(apply)[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert applied.returncode == 0, applied.stderr
    key = applied.stdout.split("[trial ")[1].split(":")[0]
    layers = load_layers(tmp_path / "results")
    mine = layers[layers.trial_key == key]
    assert dict(zip(mine.layer, mine.amount, strict=True)) == saved


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--tolerance", "1.5"],
            "error: --tolerance=1.5 is outside [0, 1]; accepted: a number in [0, 1]",
        ),
        (
            ["--tolerance=-0.01"],
            "error: --tolerance=-0.01 is outside [0, 1]; accepted: a number in [0, 1]",
        ),
        (
            ["--tolerance", "one"],
            "error: --tolerance='one' is not a number; accepted: a number in [0, 1]",
        ),
        (
            ["--amounts", "0.5,1.0"],
            "error: --amounts entry 1.0 is outside [0, 1); accepted: fractions in [0, 1) "
            "separated by commas, such as 0.1,0.5,0.9",
        ),
        (
            ["method=none"],
            "error: method=none prunes nothing, so no layer can be measured; accepted: a "
            "pruning method, such as method=l1_unstructured",
        ),
        (
            ["method=nm"],
            "error: method=nm (NMSparsity) takes no amount: it prunes alike at every amount, so "
            "no layer can be measured at amounts; accepted: a method whose constructor takes "
            "amount, such as method=l1_unstructured",
        ),
        # the value the user gave, not the one every trial of the analysis has (amount=0.0)
        (
            ["amount=abc"],
            "error: amount='abc' is not valid; accepted: a number: a float in [0, 1) or an int",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    result = run_sensitivity_cli(*args, "progress=false", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message] and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_report_of_a_store_holding_only_sensitivity_rows_says_so(tmp_path, capsys):
    from sweep.report import main as report

    for key in ("a", "b"):
        row = {"trial_key": key, "status": "complete", "tag": "sensitivity", "method": "l1"}
        write_trial(tmp_path / "results", row, [])
    with pytest.raises(SystemExit) as exit_:
        report(["--store", str(tmp_path / "results"), "--out", str(tmp_path / "report")])
    assert exit_.value.code == 2 and not (tmp_path / "report").exists()
    assert capsys.readouterr().err == (
        f"error: the results store at '{tmp_path / 'results'}' has 0 trial(s) (and 2 row(s) of "
        "python -m sweep.sensitivity) and none complete; run python -m sweep first\n"
    )


def test_hydra_flags_may_stand_anywhere_among_the_overrides(tmp_path):
    from sweep.sensitivity import _flags_first

    words = ["model=mlp", "--config-dir", str(tmp_path), "amount=1", "--cfg", "job"]
    assert _flags_first(words) == (
        ["--config-dir", str(tmp_path), "--cfg", "job"],
        ["model=mlp", "amount=1"],
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweep.sensitivity",
            "model=mlp",
            "--config-dir",
            str(tmp_path),
            "--cfg",
            "job",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "name: mlp" in done.stdout
