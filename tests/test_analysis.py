"""sweep.analysis, python -m sweep.report and the notebooks, on small stores the tests write."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from sweep import analysis, load_layers, load_results
from sweep.store import write_trial

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture
def store(tmp_path) -> Path:
    """2 methods x 3 amounts x 2 seeds, with per-layer rows; accuracies chosen by hand."""
    acc = {
        ("l1", 0.5): (0.99, 0.98),
        ("l1", 0.7): (0.985, 0.975),
        ("l1", 0.9): (0.90, 0.92),
        ("ln", 0.5): (0.95, 0.97),
        ("ln", 0.7): (0.80, 0.82),
        ("ln", 0.9): (0.30, 0.40),
    }
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    for i, ((method, amount), accs) in enumerate(acc.items()):
        for seed, a in enumerate(accs):
            key = f"{method}-{amount}-{seed}"
            write_trial(
                tmp_path / "results",
                {
                    "trial_key": key,
                    "status": "complete",
                    "error": None,
                    "model": "small_cnn",
                    "dataset": "digits",
                    "method": method,
                    "amount": amount,
                    "seed": seed,
                    "acc_dense": 0.99,
                    "acc_pruned": a - 0.3,
                    "acc_finetuned": a,
                    "sparsity": amount,
                    "started_at": t0 + pd.Timedelta(seconds=2 * i + seed),
                },
                [
                    {
                        "layer": "conv",
                        "param": "weight",
                        "numel": 100,
                        "nonzero": round(100 * (1 - amount)),
                        "in_scope": True,
                    },
                    {
                        "layer": "fc",
                        "param": "weight",
                        "numel": 10,
                        "nonzero": 10 if method == "ln" else round(10 * (1 - amount)),
                        "in_scope": method == "l1",
                    },
                ],
            )
    write_trial(
        tmp_path / "results",
        {
            "trial_key": "bad",
            "status": "failed",
            "error": "nan",
            "method": "l1",
            "amount": 0.99,
            "seed": 0,
            "started_at": t0 + pd.Timedelta(seconds=99),
        },
    )
    return tmp_path / "results"


def test_pareto_front_hand_computed_max_max():
    df = pd.DataFrame(
        {
            "acc": [0.9, 0.8, 0.7, 0.9, 0.8, np.nan, 0.6],
            "sparsity": [0.5, 0.9, 0.4, 0.5, 0.9, 0.99, 0.95],
        }
    )
    # 2 dominates nothing new (ties 0 and 3, 1 and 4 are kept together); 5 has no accuracy
    assert analysis.pareto_front(df, {"acc": "max", "sparsity": "max"}).index.tolist() == [
        0,
        1,
        3,
        4,
        6,
    ]


def test_pareto_front_hand_computed_max_min():
    df = pd.DataFrame({"acc": [0.9, 0.9, 0.8, 0.95, 0.7], "latency": [10.0, 8.0, 5.0, 12.0, 5.0]})
    # 0 is beaten by 1 (same accuracy, faster); 4 by 2 (same latency, more accurate)
    front = analysis.pareto_front(df, {"acc": "maximize", "latency": "min"})
    assert front.index.tolist() == [1, 2, 3]


def test_pareto_front_three_objectives_and_errors():
    df = pd.DataFrame({"a": [1, 2, 3], "b": [3, 2, 1], "c": [1, 1, 0]})
    assert analysis.pareto_front(df, {"a": "max", "b": "max", "c": "max"}).index.tolist() == [
        0,
        1,
        2,
    ]
    assert analysis.pareto_front(df, {"a": "min", "b": "min", "c": "min"}).index.tolist() == [
        0,
        1,
        2,
    ]
    assert analysis.pareto_front(df, {"a": "max", "c": "max"}).index.tolist() == [1, 2]
    with pytest.raises(ValueError, match="objective 'd' is not a column"):
        analysis.pareto_front(df, {"d": "max"})
    with pytest.raises(ValueError, match=re.escape("direction 'up' for 'a'; accepted: max | min")):
        analysis.pareto_front(df, {"a": "up"})


def test_aggregate_across_seeds(store):
    df = load_results(store)
    points = analysis.aggregate(df)
    assert len(points) == 6 and points.n.tolist() == [2] * 6  # the failed trial is left out
    row = points[(points.method == "ln") & (points.amount == 0.9)].iloc[0]
    assert row.acc_finetuned == pytest.approx(0.35)
    sd = np.std([0.30, 0.40], ddof=1)
    assert (row.acc_finetuned_lo, row.acc_finetuned_hi) == pytest.approx((0.35 - sd, 0.35 + sd))
    ci = analysis.aggregate(df, band="ci95")
    row = ci[(ci.method == "ln") & (ci.amount == 0.9)].iloc[0]
    assert row.acc_finetuned_hi - row.acc_finetuned == pytest.approx(1.96 * sd / math.sqrt(2))


def test_highest_sparsity_within_tolerance(store):
    kept = analysis.highest_sparsity_within(load_results(store), tolerance=0.01).set_index("method")
    assert kept.loc["l1", "sparsity"] == 0.7  # mean 0.98 at 0.7: drop 0.01; 0.9 drops 0.08
    assert kept.loc["l1", "compression"] == pytest.approx(1 / 0.3)
    assert kept.loc["l1", "drop"] == pytest.approx(0.01)
    assert math.isnan(kept.loc["ln", "sparsity"]) and kept.loc["ln", "n"] == 0


def test_compression_ratio():
    assert analysis.compression_ratio(0.0) == 1.0
    assert analysis.compression_ratio(pd.Series([0.5, 0.75])).tolist() == [2.0, 4.0]


def test_plots_are_labelled_figures(store):
    df = load_results(store)
    fig = analysis.tradeoff(df)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Sparsity (share of prunable weights removed)"
    assert ax.get_ylabel() == "Test accuracy after finetuning"
    assert ax.get_title() == "Test accuracy after finetuning vs sparsity: small_cnn on digits"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "l1",
        "ln",
        "dense baseline (99.0%)",
    ]
    log = analysis.tradeoff(df, compression=True).axes[0]
    assert log.get_xscale() == "log" and log.get_xlabel().startswith("Compression ratio")
    assert (
        log.get_title()
        == "Test accuracy after finetuning vs compression ratio: small_cnn on digits"
    )
    pareto = analysis.plot_pareto(df).axes[0]
    assert "Pareto front (3 trials)" in [t.get_text() for t in pareto.get_legend().get_texts()]
    layers = analysis.plot_layer_sparsity(load_layers(store), df).axes[0]
    assert [t.get_text() for t in layers.get_xticklabels()] == ["conv", "fc"]
    assert layers.get_title() == "Per-layer sparsity at amount 0.5: small_cnn on digits"
    heights = sorted(round(p.get_height(), 3) for p in layers.patches)
    assert heights == [0.0, 0.5, 0.5, 0.5]  # ln spares the classifier


def test_report_command(store, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "sweep.report", "--store", str(store), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    names = [
        "summary.md",
        "tradeoff.png",
        "tradeoff_compression.png",
        "pruned.png",
        "pareto.png",
        "layers.png",
    ]
    assert result.stdout.strip() == f"wrote {', '.join(names)} to {out}/"
    assert all((out / n).stat().st_size > 10_000 for n in names[1:])
    text = (out / "summary.md").read_text()
    assert "13 trial(s) (12 complete, 1 failed); model small_cnn, dataset digits; 2 seed(s)" in text
    assert "| l1 | 0.7 | 70.00% | 3.3x | 98.00% | 1.00% | 2 |" in text
    assert "| ln | - | - | - | - | - | 0 |" in text
    assert "## Pareto front (maximize acc_finetuned, maximize sparsity): 3 of 12 trials" in text
    assert "| l1 | 0.5 | 0 | 50.00% | 99.00% | l1-0.5-0 |" in text
    assert "![tradeoff](tradeoff.png)" in text


def test_report_on_empty_and_missing_stores(tmp_path):
    (tmp_path / "empty" / "trials").mkdir(parents=True)
    for path, message in [
        (
            tmp_path / "empty",
            f"error: the results store at '{tmp_path / 'empty'}' has 0 trial(s) and none complete; run python -m sweep first",
        ),
        (
            tmp_path / "missing",
            f"error: no results store at '{tmp_path / 'missing'}': run a trial first",
        ),
    ]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sweep.report",
                "--store",
                str(path),
                "--out",
                str(tmp_path / "r"),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2
        assert result.stderr.strip().startswith(message)
        assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_headless(notebook, store, monkeypatch):
    nb = nbformat.read(notebook, as_version=4)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in nb.cells
        if c.cell_type == "code"
    ), "commit notebooks without outputs"
    monkeypatch.setenv("SWEEP_STORE", str(store))
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4


def test_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["tradeoff.ipynb"]
    assert os.path.getsize(NOTEBOOKS[0]) < 10_000
