"""sweep.analysis, python -m sweep.report and the notebooks, on small stores the tests write."""

from __future__ import annotations

import errno
import itertools
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
from sweep.errors import ConfigError
from sweep.store import write_trial

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
# What python -m sweep.report writes for a store of one model on one dataset.
REPORT_FILES = [
    "summary.md",
    "tradeoff.png",
    "tradeoff_compression.png",
    "pruned.png",
    "pareto.png",
    "layers.png",
]


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
                    "recalibrated": True,
                    "acc_recalibrated": a - 0.1,
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


_METHODS = {
    "l1_unstructured": {"method._target_": "torch.nn.utils.prune.L1Unstructured"},
    "ln_structured": {
        "method._target_": "torch.nn.utils.prune.LnStructured",
        "method.n": 2,
        "method.dim": 0,
    },
    "global_unstructured": {
        "method._target_": None,
        "method.global": True,
        "method.pruning_method": "l1",
    },
    "none": {"method._target_": None},
}


def _trial(store: Path, number: int, **values) -> None:
    """Write the row of a default trial (``python -m sweep``: l1_unstructured at 0.5 on
    small_cnn/digits, config flattened as the trial writes it), with ``values`` replacing
    columns; dotted keys are given with ``__`` (``finetune__epochs=1``). Bookkeeping differs
    from trial to trial (times, store path, versions, latency settings) as in a real store."""
    values = {k.replace("__", "."): v for k, v in values.items()}
    method = values.get("method", "l1_unstructured")
    model = values.get("model", "small_cnn")
    dataset = values.get("dataset", "digits")
    row = {
        "trial_key": f"t{number:03d}",
        "status": "complete",
        "error": None,
        "model": model,
        "dataset": dataset,
        "method": method,
        "amount": 0.5,
        "seed": 0,
        "device": f"cuda:{number % 2}",
        "acc_dense": 0.99,
        "acc_pruned": 0.7,
        "acc_finetuned": 0.98,
        "loss_finetuned": 0.05 + number / 1000,
        "sparsity": values.get("amount", 0.5),
        "params": 24058,
        "params_nonzero": 12029 + number,
        "flops_dense": 1199360,
        "flops": 600000 + number,
        "latency_ms_dense": 2.5 + number / 100,
        "latency_ms": 1.8 + number / 100,
        "speedup": 1.3 + number / 100,
        "size_bytes_dense": 103271,
        "size_bytes": 60000 + number,
        "compacted": False,
        "compact_error": None,
        "fused": 1 + number % 3,  # the group a trial ran in: how fast, not what
        "fuse": "auto" if number % 2 else 4,
        "time_prune_s": 0.005 * number,
        "time_finetune_s": 0.6 * number,
        "time_total_s": 6.7 * number,
        "started_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=number),
        "baseline_key": f"{model}-{dataset}-{values.get('seed', 0)}",
        "baseline_trained": number == 0,
        "compact": False,
        "dataset._target_": f"sweep.data.{dataset}",
        "dataset.name": dataset,
        "dataset.split_seed": 0,
        "dataset.test_fraction": 0.2,
        "dataset.val_fraction": 0.15,
        "finetune.amp": True,
        "finetune.batch_size": 64,
        "finetune.epochs": 3,
        "finetune.lr": 0.001,
        "finetune.momentum": 0.9,
        "finetune.optimizer": "adam",
        "finetune.weight_decay": 0.0,
        "latency.batch_size": 64,
        "latency.repeats": 10 + number,
        "latency.warmup": 3,
        **_METHODS[method],
        "method.name": method,
        "model._target_": f"sweep.models.{model}",
        "model.name": model,
        "model.width": 16 if model == "small_cnn" else None,
        "optuna.storage": None,
        "optuna.study": f"study-{number}",
        "optuna.trial": number,
        "pretrain.epochs": 20,
        "pretrain.lr": 0.003,
        "progress": number % 2 == 0,
        "scope.amounts": None,
        "scope.exclude": [],
        "scope.layers": ["Conv2d", "Linear"],
        "scope.prune_classifier_outputs": False,
        "skip_completed": number % 2 == 1,
        "store.baselines": f"run{number}/results/baselines",
        "store.path": f"run{number}/results",
        "version.sweep": "0.1.0",
        "version.torch": f"2.{number}.0",
        **values,
    }
    layers = [{"layer": "conv", "param": "weight", "numel": 100, "nonzero": 50, "in_scope": True}]
    write_trial(store, row, layers)


def _legend(fig) -> list[str]:
    """The legend's entries, inside the axes or (when long) below them."""
    legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
    return [t.get_text() for t in legend.get_texts()]


def _report(store: Path, out: Path) -> tuple[list[str], str]:
    """Run ``python -m sweep.report``; return the file names it printed and summary.md."""
    result = subprocess.run(
        [sys.executable, "-m", "sweep.report", "--store", str(store), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip().removeprefix("wrote ").removesuffix(f" to {out}/")
    return printed.split(", "), (out / "summary.md").read_text()


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
    with pytest.raises(ConfigError) as e:
        analysis.pareto_front(df, {"d": "max"})
    assert str(e.value) == "objective 'd' is not a numeric column of the results; accepted: a, b, c"
    with pytest.raises(ConfigError, match=re.escape("direction 'up' for 'a'; accepted: max | min")):
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
    # an accuracy's band stays an accuracy: 1.0 and 0.9 give 0.95 +- 0.098, clipped at 1
    two = pd.DataFrame({"status": "complete", "method": "l1", "amount": 0.5, "sparsity": 0.5,
                        "acc_finetuned": [1.0, 0.9], "latency_ms": [1.0, 0.9]})  # fmt: skip
    ci = analysis.aggregate(two, band="ci95").iloc[0]
    assert (ci.acc_finetuned_lo, ci.acc_finetuned_hi) == pytest.approx((0.852, 1.0), abs=1e-3)
    lat = analysis.aggregate(two, "latency_ms", band="ci95").iloc[0]
    assert lat.latency_ms_hi == pytest.approx(1.048, abs=1e-3)  # not a fraction: not clipped
    with pytest.raises(ConfigError, match=re.escape("band='ci99'; accepted: std | ci95")):
        analysis.aggregate(two, band="ci99")


def test_a_trial_stored_twice_counts_once_by_its_latest_row(tmp_path):
    """A grid's row and a study's row of one config share a trial_key: one trial, not two
    seeds. The latest row counts (the study's, run later)."""
    store = tmp_path / "results"
    _trial(store, 0, acc_finetuned=0.9)
    _trial(store, 1, seed=1, acc_finetuned=0.8, baseline_key="small_cnn-digits-1")
    again = load_results(store).iloc[0].to_dict()
    assert again["trial_key"] == "t000"
    again.update(acc_finetuned=0.5, started_at=again["started_at"] + pd.Timedelta(hours=1))
    write_trial(store, again, row_id="tradeoff-660487e95cd1-00000")
    df = load_results(store)
    assert len(df) == 3
    assert analysis.complete(df)["acc_finetuned"].tolist() == [0.8, 0.5]
    point = analysis.aggregate(df).iloc[0]
    assert (point.n, point.acc_finetuned) == (2, pytest.approx(0.65))
    within = analysis.highest_sparsity_within(df, tolerance=0.5).iloc[0]
    assert (within.n, within.acc_finetuned) == (2, pytest.approx(0.65))


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
    assert [t.get_text() for t in layers.get_yticklabels()] == ["conv", "fc"]
    assert layers.get_title() == "Per-layer sparsity at amount 0.5: small_cnn on digits"
    widths = sorted(round(p.get_width(), 3) for p in layers.patches)
    assert widths == [0.0, 0.5, 0.5, 0.5]  # ln spares the classifier


@pytest.mark.parametrize(("count", "every"), [(120, 1), (500, 2)])
def test_layer_plot_stays_readable_at_many_layers(tmp_path, count, every):
    """mobilenet_v3_small's 54 layers made a 6192x540 strip: now a row per layer, labels
    at 6 pt or more that never overlap, every layer's while they fit."""
    names = [f"features.{i // 3}.block.{i % 3}.conv" for i in range(count)]
    results = pd.DataFrame(
        {"status": "complete", "trial_key": ["a", "b"], "method": ["l1", "ln"], "amount": 0.5}
    )
    layers = pd.DataFrame(
        {
            "trial_key": np.repeat(["a", "b"], count),
            "layer": names * 2,
            "numel": 100,
            "nonzero": np.tile(np.arange(count) % 100, 2),
        }
    )
    fig = analysis.plot_layer_sparsity(layers, results.assign(seed=0))
    ax = fig.axes[0]
    width, height = fig.get_size_inches()
    assert width == 7.5 and height <= 36
    labels = ax.get_yticklabels()
    assert [t.get_text() for t in labels] == names[::every]
    assert min(t.get_fontsize() for t in labels) >= 6
    fig.savefig(tmp_path / "layers.png", dpi=120)  # lays the labels out
    boxes = [t.get_window_extent() for t in labels]
    assert all(a.y0 >= b.y1 or b.y0 >= a.y1 for a, b in itertools.pairwise(boxes))
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the first layer on top


def test_report_command(store, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "sweep.report", "--store", str(store), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    names = [*REPORT_FILES[:4], "recalibrated.png", *REPORT_FILES[4:]]  # its rows recalibrated
    assert result.stdout.strip() == f"wrote {', '.join(names)} to {out}/"
    assert all((out / n).stat().st_size > 10_000 for n in names[1:])
    text = (out / "summary.md").read_text()
    lines = text.splitlines()
    assert lines[:7] == [
        "# prune-sweep report",
        "",
        f"Store `{store}`: 13 trial(s) (12 complete, 1 failed); small_cnn on digits.",
        "",
        "## small_cnn on digits",
        "",
        "12 trial(s) (12 complete); 6 setting(s) (method x amount); seeds per setting: 2; "
        "dense test accuracy 99.00%.",
    ]
    assert (
        "| method | amount | sparsity | compression | accuracy | accuracy vs dense | seeds |"
        in lines
    )
    assert "| l1 | 0.7 | 70.00% | 3.3x | 98.00% | -1.00 pts | 2 |" in lines
    assert "| ln | - | - | - | - | - | 0 |" in lines
    assert "### Pareto front (maximize acc_finetuned, maximize sparsity): 3 of 12 trials" in lines
    assert "| l1 | 0.5 | 0 | 50.00% | 99.00% | l1-0.5-0 |" in lines
    assert [line for line in lines if line.startswith("![")] == [
        f"![{n.removesuffix('.png')}]({n})" for n in names[1:]
    ]


def test_a_report_on_a_store_of_only_dense_references_says_nothing_was_pruned(tmp_path):
    store = tmp_path / "results"
    for seed in (0, 1):
        _trial(store, seed, method="none", amount=0.0, sparsity=0.0, seed=seed)
    printed, text = _report(store, tmp_path / "report")
    assert printed == ["summary.md"]  # no curve and no front of nothing pruned
    assert text.splitlines()[-1] == (
        "Nothing pruned yet: every complete trial is method none (dense, finetuned), the "
        "reference the curves are drawn against, so there is no trade-off to show. Sweep "
        "a method over amounts, e.g. `python -m sweep -m amount=0.25,0.5,0.75`."
    )
    assert "| method |" not in text  # no empty tables
    # in a notebook the plot still draws the references, and counts no seeds it did not mean
    fig = analysis.tradeoff(load_results(store))
    legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
    assert legend.get_title().get_text() == "method"  # it read: method (mean of 0 seeds, ...)
    assert _legend(fig) == ["dense baseline (99.0%)", "none (dense, finetuned)"]


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


def test_varying_leaves_out_bookkeeping_metrics_and_method_aliases(tmp_path):
    store = tmp_path / "results"
    # every trial differs in seed, device index, times, store path, versions, latency settings,
    # fusion, Optuna study and metrics; l1 and ln differ in method.name/_target_/n/dim (their own keys)
    for i, (method, seed) in enumerate([("l1_unstructured", 0), ("ln_structured", 1)]):
        _trial(store, i, method=method, seed=seed)
    assert analysis.varying(load_results(store)) == []
    _trial(store, 2, dataset__split_seed=1)  # other data
    _trial(store, 3, model__width=32)  # another network
    _trial(store, 4, schedule="iterative")  # older rows have none: they read as one_shot
    _trial(store, 5, device="cpu")  # cuda:0 and cuda:1 are one device type; cpu another
    assert analysis.varying(load_results(store)) == [
        "schedule",
        "device",
        "dataset.split_seed",
        "model.width",
    ]
    _trial(store, 6, method="ln_structured", method__n=1)  # now differs within a method
    assert "method.n" in analysis.varying(load_results(store))


def test_loader_settings_and_the_folder_of_fingerprinted_data_split_no_curve(tmp_path):
    """The same images under another folder, or read by more loader workers, are the same
    trial (the key holds the data's fingerprint, and no loader setting): one curve."""
    store = tmp_path / "results"
    folder = {"dataset": "image_folder", "dataset__fingerprint": "folder:5f1d"}
    _trial(store, 0, **folder, dataset__root="/data/pets", dataset__num_workers=0)
    _trial(store, 1, **folder, dataset__root="/data/pets", dataset__num_workers=4, amount=0.7)
    _trial(store, 2, **folder, dataset__root="/copy/pets", dataset__pin_memory=True, amount=0.6)
    df = load_results(store)
    assert analysis.varying(df) == []
    assert len(analysis.aggregate(df)) == 3  # one point per amount
    # other content: the data differ, and their fingerprint tells them apart
    _trial(
        store,
        3,
        dataset="image_folder",
        dataset__fingerprint="folder:9c0e",
        dataset__root="/data/birds",
    )
    assert analysis.varying(load_results(store)) == ["dataset.fingerprint"]
    # data without a fingerprint (a torchvision root): the folder is part of the key
    _trial(store, 4, dataset="cifar10", dataset__root="/data/cifar-a")
    _trial(store, 5, dataset="cifar10", dataset__root="/data/cifar-b")
    assert "dataset.root" in analysis.varying(load_results(store))


def test_a_checkpoint_copied_elsewhere_and_ddp_settings_split_no_curve(tmp_path):
    """One checkpoint file under two paths (its SHA-256 in the key), and a DDP timeout (not
    in the key): one setting. Another checkpoint's bytes are another setting."""
    store = tmp_path / "results"
    weights = {"model__checkpoint_sha256": "ab12", "baseline_key": "ckpt-ab12"}
    _trial(store, 0, **weights, model__checkpoint="ck1/w.pt", rewind_weights="r1/w.pt")
    _trial(
        store, 1, **weights, model__checkpoint="ck2/w.pt", amount=0.7, distributed__timeout_s=900
    )
    _trial(store, 2, **weights, model__checkpoint="ck2/w.pt", amount=0.6, rewind_weights="r2/w.pt")
    df = load_results(store).assign(rewind_weights_sha256="cd34")
    assert analysis.varying(df) == []
    assert len(analysis.highest_sparsity_within(df)) == 1
    _trial(store, 3, model__checkpoint_sha256="ef56", model__checkpoint="ck3/w.pt")
    df = load_results(store).assign(rewind_weights_sha256="cd34")
    assert analysis.varying(df) == ["model.checkpoint_sha256"]


def test_finetune_epochs_are_two_settings_not_two_seeds(tmp_path):
    store = tmp_path / "results"
    _trial(store, 0)  # python -m sweep
    _trial(store, 1, finetune__epochs=1, acc_finetuned=0.95)  # python -m sweep finetune.epochs=1
    df = load_results(store)
    assert analysis.varying(df) == ["finetune.epochs"]
    points = analysis.aggregate(df)
    assert points[["finetune.epochs", "acc_finetuned", "n"]].to_dict("records") == [
        {"finetune.epochs": 1, "acc_finetuned": 0.95, "n": 1},
        {"finetune.epochs": 3, "acc_finetuned": 0.98, "n": 1},
    ]
    ax = analysis.tradeoff(df).axes[0]
    assert _legend(ax.figure) == [
        "l1_unstructured (finetune.epochs=1)",
        "l1_unstructured (finetune.epochs=3)",
        "dense baseline (99.0%)",  # one baseline: both trials finetuned the same one
    ]
    assert [line.get_ydata().tolist() for line in ax.lines[:2]] == [[0.95], [0.98]]
    assert ax.get_legend().get_title().get_text() == (
        "method, finetune.epochs (mean of 1 seed, band ±1 std)"
    )
    kept = analysis.highest_sparsity_within(df, 0.01)
    assert kept["finetune.epochs"].tolist() == [1, 3] and kept.n.tolist() == [0, 1]
    assert math.isnan(kept.sparsity[0]) and kept.sparsity[1] == 0.5  # 0.95 drops 4 points
    names, text = _report(store, tmp_path / "report")
    assert names == REPORT_FILES
    lines = text.splitlines()
    assert (
        "2 trial(s) (2 complete); 2 setting(s) (method x amount x finetune.epochs); "
        "seeds per setting: 1; dense test accuracy 99.00%."
    ) in lines
    assert (
        "| setting | amount | sparsity | compression | accuracy | accuracy vs dense | seeds |"
    ) in lines
    assert "| l1_unstructured (finetune.epochs=1) | - | - | - | - | - | 0 |" in lines
    assert (
        "| l1_unstructured (finetune.epochs=3) | 0.5 | 50.00% | 2.0x | 98.00% | -1.00 pts | 1 |"
        in (lines)
    )
    assert "| l1_unstructured (finetune.epochs=3) | 0.5 | 0 | 50.00% | 98.00% | t000 |" in lines


def test_global_pruning_method_l1_and_random_are_two_curves(tmp_path):
    store = tmp_path / "results"
    number = 0
    for pruning_method, accs in [("l1", (0.98, 0.9)), ("random", (0.9, 0.5))]:
        for amount, acc in zip((0.5, 0.9), accs, strict=True):
            _trial(
                store,
                number,
                method="global_unstructured",
                method__pruning_method=pruning_method,
                amount=amount,
                acc_finetuned=acc,
            )
            number += 1
    _trial(store, number)  # l1_unstructured: method.pruning_method does not apply
    df = load_results(store)
    assert analysis.varying(df) == ["method.pruning_method"]
    ax = analysis.tradeoff(df).axes[0]
    assert _legend(ax.figure) == [
        "global_unstructured (method.pruning_method=l1)",
        "global_unstructured (method.pruning_method=random)",
        "l1_unstructured",
        "dense baseline (99.0%)",
    ]
    assert [line.get_ydata().tolist() for line in ax.lines[:3]] == [
        [0.98, 0.9],
        [0.9, 0.5],
        [0.98],
    ]
    assert _legend(analysis.plot_pareto(df))[:3] == _legend(ax.figure)[:3]
    layers = analysis.plot_layer_sparsity(load_layers(store), df).axes[0]
    assert [t.get_text() for t in layers.get_legend().get_texts()] == _legend(ax.figure)[:3]
    assert layers.get_legend().get_title().get_text() == "method, method.pruning_method"


def test_two_models_are_never_averaged(tmp_path):
    store = tmp_path / "results"
    for number, (model, seed, acc) in enumerate(
        [("small_cnn", 0, 0.98), ("small_cnn", 1, 0.96), ("lenet", 0, 0.9), ("lenet", 1, 0.92)]
    ):
        dense = 0.99 if model == "small_cnn" else 0.97
        _trial(store, number, model=model, seed=seed, acc_finetuned=acc, acc_dense=dense)
    df = load_results(store)
    assert analysis.varying(df) == ["model"]  # model.width only says which model
    ax = analysis.tradeoff(df).axes[0]
    assert (
        ax.get_title() == "Test accuracy after finetuning vs sparsity: lenet, small_cnn on digits"
    )
    assert _legend(ax.figure) == [
        "l1_unstructured (model=lenet)",
        "l1_unstructured (model=small_cnn)",
        "dense baseline (97.0%; model=lenet)",
        "dense baseline (99.0%; model=small_cnn)",
    ]
    assert [line.get_ydata()[0] for line in ax.lines] == pytest.approx([0.91, 0.97, 0.97, 0.99])
    # asked to pool the models, the curve does; the dense line still does not
    pooled = analysis.tradeoff(df, by="method").axes[0]
    assert _legend(pooled.figure)[0] == "l1_unstructured"
    assert _legend(pooled.figure)[1:] == _legend(ax.figure)[2:]
    assert list(analysis.subjects(df)) == [("lenet", "digits"), ("small_cnn", "digits")]

    names, text = _report(store, tmp_path / "report")
    plots = ["tradeoff", "tradeoff_compression", "pruned", "pareto", "layers"]
    assert names == [
        "summary.md",
        *[f"{p}-lenet-digits.png" for p in plots],
        *[f"{p}-small_cnn-digits.png" for p in plots],
    ]
    lines = text.splitlines()
    assert lines[2] == (
        f"Store `{store}`: 4 trial(s) (4 complete); 2 model and dataset pairs, one section each: "
        "lenet on digits, small_cnn on digits."
    )
    assert [line for line in lines if line.startswith("## ")] == [
        "## lenet on digits",
        "## small_cnn on digits",
    ]
    assert (
        lines.count(
            "2 trial(s) (2 complete); 1 setting(s) (method x amount); seeds per setting: 2; "
            "dense test accuracy 97.00%."
        )
        == 1
    )
    assert "| l1_unstructured | - | - | - | - | - | 0 |" in lines  # lenet: 0.91, dense 0.97
    assert "| l1_unstructured | 0.5 | 50.00% | 2.0x | 97.00% | 2.00% | 2 |" not in lines
    assert "![tradeoff-small_cnn-digits](tradeoff-small_cnn-digits.png)" in lines
    part = analysis.subjects(df)[("small_cnn", "digits")]
    assert analysis.tradeoff(part).axes[0].get_title().endswith(": small_cnn on digits")
    assert _legend(analysis.tradeoff(part)) == ["l1_unstructured", "dense baseline (99.0%)"]


def test_pretraining_that_differs_splits_the_dense_line(tmp_path):
    store = tmp_path / "results"
    _trial(store, 0)
    _trial(store, 1, pretrain__epochs=5, baseline_key="short", acc_dense=0.95)
    df = load_results(store)
    assert analysis.dense_levels(df) == [
        ({"pretrain.epochs": 5}, 0.95),
        ({"pretrain.epochs": 20}, 0.99),
    ]
    assert _legend(analysis.tradeoff(df)) == [
        "l1_unstructured (pretrain.epochs=5)",
        "l1_unstructured (pretrain.epochs=20)",
        "dense baseline (95.0%; pretrain.epochs=5)",
        "dense baseline (99.0%; pretrain.epochs=20)",
    ]
    _, text = _report(store, tmp_path / "report")
    assert (
        "2 trial(s) (2 complete); 2 setting(s) (method x amount x pretrain.epochs); "
        "seeds per setting: 1; dense test accuracy 95.00% (pretrain.epochs=5), "
        "99.00% (pretrain.epochs=20)."
    ) in text.splitlines()


def test_the_dense_level_counts_each_baseline_once(tmp_path):
    """Seed 0's baseline has three trials, seed 1's one: the level is the mean of the two
    baselines (98.50%), not of the four rows (98.25%)."""
    store = tmp_path / "results"
    for i in range(3):
        _trial(store, i, amount=0.2 * (i + 1), baseline_key="seed0", acc_dense=0.98)
    _trial(store, 3, seed=1, baseline_key="seed1", acc_dense=0.99)
    assert analysis.dense_levels(load_results(store)) == [({}, pytest.approx(0.985))]
    _, text = _report(store, tmp_path / "report")
    assert "dense test accuracy 98.50%." in text


def test_method_none_is_a_reference_level_not_a_curve(tmp_path):
    store = tmp_path / "results"
    _trial(store, 0, method="none", amount=0.0, sparsity=0.0, acc_finetuned=0.995)
    _trial(store, 1, method="none", amount=0.5, sparsity=0.0, acc_finetuned=0.99, seed=1)  # older
    _trial(store, 2)
    _trial(store, 3, amount=0.9, sparsity=0.9, acc_finetuned=0.9)
    df = load_results(store)
    points = analysis.aggregate(df)
    assert points[["method", "amount", "acc_finetuned", "n"]].to_dict("records") == [
        {"method": "l1_unstructured", "amount": 0.5, "acc_finetuned": 0.98, "n": 1},
        {"method": "l1_unstructured", "amount": 0.9, "acc_finetuned": 0.9, "n": 1},
        {"method": "none", "amount": 0.0, "acc_finetuned": pytest.approx(0.9925), "n": 2},
    ]
    ax = analysis.tradeoff(df).axes[0]
    assert _legend(ax.figure) == [
        "l1_unstructured",
        "dense baseline (99.0%)",
        "none (dense, finetuned)",
    ]
    assert ax.lines[2].get_linestyle() == ":"
    assert list(ax.lines[2].get_ydata()) == pytest.approx([0.9925, 0.9925])
    assert _legend(analysis.tradeoff(df, "acc_pruned")) == [  # before finetuning: the dense one
        "l1_unstructured",
        "dense baseline (99.0%)",
    ]
    assert _legend(analysis.plot_pareto(df)) == [
        "l1_unstructured",
        "none (dense, finetuned)",
        "Pareto front (3 trials)",
    ]
    kept = analysis.highest_sparsity_within(df, 0.01)
    assert kept.method.tolist() == ["l1_unstructured"]
    bars = analysis.plot_layer_sparsity(load_layers(store), df).axes[0]
    assert [t.get_text() for t in bars.get_legend().get_texts()] == ["l1_unstructured"]
    _, text = _report(store, tmp_path / "report")
    assert (
        "4 trial(s) (4 complete); 3 setting(s) (method x amount); seeds per setting: 1 to 2; "
        "dense test accuracy 99.00%; none (dense, finetuned): 99.25%."
    ) in text.splitlines()
    assert "| none (dense, finetuned) | 0 | 0 | 0.00% | 99.50% | t000 |" in text.splitlines()


def test_missing_config_values_and_nullable_dtypes(tmp_path):
    store = tmp_path / "results"
    _trial(store, 0)
    _trial(store, 1, finetune__epochs=1, acc_finetuned=0.95)
    _trial(store, 2, acc_finetuned=0.97)
    df = load_results(store)
    df.loc[2, "finetune.epochs"] = None  # a row from before the key existed
    df = df.convert_dtypes()  # Int64, string, boolean: NA instead of NaN/None
    assert str(df["finetune.epochs"].dtype) == "Int64"
    assert analysis.varying(df) == ["finetune.epochs"]
    assert analysis.aggregate(df)["n"].tolist() == [1, 1, 1]
    assert _legend(analysis.tradeoff(df)) == [
        "l1_unstructured (finetune.epochs=1)",
        "l1_unstructured (finetune.epochs=3)",
        "l1_unstructured (finetune.epochs=-)",
        "dense baseline (99.0%)",
    ]
    kept = analysis.highest_sparsity_within(df, 0.02)
    assert kept["finetune.epochs"].astype(object).fillna("-").tolist() == [1, 3, "-"]
    assert kept["n"].tolist() == [0, 1, 1]


def test_aggregate_against_requested_amount(store):
    points = analysis.aggregate(load_results(store), x="amount")
    assert points.columns.tolist()[:3] == ["method", "amount", "acc_finetuned"]
    assert points.amount.tolist() == [0.5, 0.7, 0.9] * 2


@pytest.mark.parametrize("module", ["sweep.analysis._tables", "sweep.analysis._plots"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 5


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


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda df: analysis.tradeoff(df, "nonexistent_metric"),
            "y='nonexistent_metric' is not a numeric column of the results; accepted: ",
        ),
        (
            lambda df: analysis.tradeoff(df.assign(latency_ms=np.nan), "latency_ms"),
            "y='latency_ms' has no value in any of the 12 complete trial(s); accepted: a column "
            "the trials measured (latency is measured with compact=true, latency.measure=true, "
            "or an objective that reads it such as -m search=latency)",
        ),
        (
            lambda df: analysis.pareto_front(
                df.assign(speedup=np.nan), {"acc_finetuned": "max", "speedup": "max"}
            ),
            "objective 'speedup' has no value in any of the 13 rows; accepted: a column the "
            "trials measured (latency is measured with",
        ),
        (
            lambda df: analysis.plot_layer_sparsity(load_layers(df.attrs["store"]), df, amount=0.8),
            "amount=0.8 has no complete pruned trial with per-layer rows; accepted: 0.5, 0.7, 0.9",
        ),
        (
            lambda df: analysis.tradeoff(df.iloc[:0]),
            "df has no complete trial (0 row(s)); accepted: rows of sweep.load_results with "
            "status complete",
        ),
        (
            lambda df: analysis.tradeoff(df, x="latency"),
            "x='latency' is not an axis; accepted: sparsity, amount",
        ),
        (
            lambda df: analysis.highest_sparsity_within(df, tolerance=-1),
            "tolerance=-1 is outside [0, 1]; accepted: a number in [0, 1]",
        ),
        (
            lambda df: analysis.highest_sparsity_within(df, metric="acc"),
            "metric='acc' is not a numeric column of the results; accepted: ",
        ),
        (
            lambda df: analysis.highest_sparsity_within(df[df.status == "failed"]),
            "df has no complete trial (1 row(s))",
        ),
    ],
    ids=[
        "tradeoff-metric",
        "tradeoff-unmeasured",
        "pareto-unmeasured",
        "layers-amount",
        "tradeoff-empty",
        "tradeoff-x",
        "within-tolerance",
        "within-metric",
        "within-no-complete",
    ],
)
def test_analysis_refuses_bad_arguments_by_name(store, call, message):
    df = load_results(store)
    df.attrs["store"] = store
    with pytest.raises(ConfigError) as e:
        call(df)
    assert str(e.value).startswith(message)


def test_metric_refusal_lists_the_numeric_metrics(store):
    with pytest.raises(ConfigError) as e:
        analysis.tradeoff(load_results(store), "nonexistent_metric")
    accepted = str(e.value).split("accepted: ")[1].split(", ")
    assert {"acc_finetuned", "acc_pruned"} <= set(accepted)
    assert not {"method", "status", "trial_key", "error"} & set(accepted)  # text columns
    assert not {"sparsity", "amount"} & set(accepted)  # the axis, and the grouping


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda df: analysis.tradeoff(df, "sparsity"),
            "y='sparsity' is an axis of its own here; accepted: acc_dense, ",
        ),
        (
            lambda df: analysis.aggregate(df, "amount", x="amount"),
            "y='amount' is an axis of its own here; accepted: acc_dense, ",
        ),
        (
            lambda df: analysis.highest_sparsity_within(df, metric="acc_dense"),
            "metric='acc_dense' is an axis of its own here; accepted: acc_finetuned, ",
        ),
        (
            lambda df: analysis.aggregate(df, "acc_finetune"),
            "y='acc_finetune' is not a numeric column of the results; accepted: acc_dense, ",
        ),
        (
            lambda df: analysis.aggregate(df, "method.name"),
            "y='method.name' is not a numeric column of the results; accepted: acc_dense, ",
        ),
        (
            lambda df: analysis.aggregate(df.assign(latency_ms=np.nan), "latency_ms"),
            "y='latency_ms' has no value in any of the 12 complete trial(s)",
        ),
        (
            lambda df: analysis.aggregate(df, by="methd"),
            "by='methd': 'methd' is not a column of the results (did you mean 'method'?); "
            "accepted: columns of sweep.load_results, such as method, model, finetune.epochs",
        ),
        (
            lambda df: analysis.plot_pareto(df, {"acc_finetune": "max", "sparsity": "max"}),
            "objective 'acc_finetune' is not a numeric column of the results; accepted: ",
        ),
        (
            lambda df: analysis.plot_pareto(
                df.assign(latency_ms=np.nan), {"latency_ms": "min", "acc_finetuned": "max"}
            ),
            "objective='latency_ms' has no value in any of the 12 complete trial(s)",
        ),
        (
            lambda df: analysis.pareto_front(df, {"method": "max"}),
            "objective 'method' is not a numeric column of the results; accepted: ",
        ),
        (
            lambda df: analysis.pareto_front(df, {}),
            "objectives={}; accepted: a mapping of columns to max | min",
        ),
        (
            lambda df: analysis.tradeoff("results"),
            "df is a str, not a DataFrame; accepted: the rows of sweep.load_results(...)",
        ),
    ],
)
def test_analysis_refuses_what_it_cannot_draw_in_one_line(store, call, message):
    with pytest.raises(ConfigError) as e:
        call(load_results(store))
    assert str(e.value).startswith(message)


def test_amounts_that_are_counts_are_not_drawn_as_percentages():
    from matplotlib.ticker import PercentFormatter

    df = pd.DataFrame({"status": "complete", "method": "l1", "amount": [0.5, 1, 100],
                       "sparsity": [0.5, 0.01, 0.6], "acc_finetuned": [0.9, 0.95, 0.8]})  # fmt: skip
    counts = analysis.tradeoff(df, x="amount").axes[0]
    assert not isinstance(counts.xaxis.get_major_formatter(), PercentFormatter)
    assert isinstance(counts.yaxis.get_major_formatter(), PercentFormatter)
    fractions = analysis.tradeoff(df[df.amount < 1], x="amount").axes[0]
    assert isinstance(fractions.xaxis.get_major_formatter(), PercentFormatter)


def test_sparsity_against_the_amount_asked_is_a_curve(store):
    points = analysis.aggregate(load_results(store), "sparsity", x="amount")
    assert points["sparsity"].tolist() == points["amount"].tolist()


@pytest.mark.parametrize(
    ("tolerance", "message"),
    [
        ("1.5", "--tolerance=1.5 is outside [0, 1]; accepted: a number in [0, 1]"),
        ("-0.01", "--tolerance=-0.01 is outside [0, 1]; accepted: a number in [0, 1]"),
        ("one", "--tolerance='one' is not a number; accepted: a number in [0, 1]"),
    ],
)
def test_report_and_sensitivity_share_one_tolerance_rule(
    tmp_path, monkeypatch, capsys, tolerance, message
):
    from sweep import report, sensitivity

    monkeypatch.chdir(tmp_path)
    for main in (report.main, sensitivity.main):
        with pytest.raises(SystemExit) as exit_:
            main(["--tolerance", tolerance])
        assert exit_.value.code == 2
        assert capsys.readouterr().err.splitlines() == [f"error: {message}"]
    assert list(tmp_path.iterdir()) == []


def test_report_accepts_a_tolerance_of_one(store, tmp_path, capsys):
    from sweep import report

    report.main(["--store", str(store), "--out", str(tmp_path / "r"), "--tolerance", "1"])
    assert "| l1 | 0.9 | 90.00% |" in (tmp_path / "r/summary.md").read_text()


def test_report_out_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    from sweep import report

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        report.main(["--out", "notes.md"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --out='notes.md' is a file; accepted: a folder (created if missing)"
    ]
    assert (tmp_path / "notes.md").read_text() == "mine"


def test_a_report_folder_it_cannot_write_is_one_line(store, tmp_path, monkeypatch, capsys):
    """A read-only --out (simulated: the tests may run as root, whom modes do not stop)."""
    from matplotlib.figure import Figure

    from sweep import report

    def refused(self, file, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))

    monkeypatch.setattr(Figure, "savefig", refused)
    with pytest.raises(SystemExit) as exit_:
        report.main(["--store", str(store), "--out", str(tmp_path / "rep")])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: cannot write {tmp_path / 'rep' / 'tradeoff.png'}: Permission denied"
    ]


def test_a_report_folder_that_cannot_be_made_is_bad_input(store, capsys):
    """Refused before anything is written, as input (exit 2), not as a failed write (1)."""
    from sweep import report

    with pytest.raises(SystemExit) as exit_:
        report.main(["--store", str(store), "--out", "/proc/nowhere/report"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --out='/proc/nowhere/report' is not writable (No such file or directory); "
        "accepted: a folder you can write to"
    ]


def test_a_report_folder_under_home_is_written_where_it_was_checked(store, tmp_path, monkeypatch):
    """``--out=~/report``: no shell expands ``~`` after ``=``; the report does, as its check."""
    from sweep import report

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    report.main(["--store", str(store), "--out=~/report"])
    assert (tmp_path / "home" / "report" / "summary.md").is_file()
    assert not (tmp_path / "~").exists()


def test_report_names_an_unreadable_row_file_once(store, tmp_path, caplog):
    from sweep import report

    bad = store / "trials" / "bad.parquet"
    bad.write_text("not parquet")
    report.main(["--store", str(store), "--out", str(tmp_path / "r")])
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().endswith("; skipped")]
    assert len(skipped) == 1
    assert skipped[0].startswith(f"{bad}: not a readable Parquet file (")


def test_report_says_when_finetuning_beats_dense(tmp_path):
    from sweep import report

    store = tmp_path / "results"
    # an undertrained dense model: finetuning the pruned one gains 49.76 points
    _trial(store, 0, method="l1_unstructured", acc_dense=0.4, acc_finetuned=0.8976)
    report.main(["--store", str(store), "--out", str(tmp_path / "r")])
    lines = (tmp_path / "r/summary.md").read_text().splitlines()
    [row] = [line for line in lines if line.endswith(" pts | 1 |")]
    assert row.split(" | ")[4:6] == ["89.76%", "+49.76 pts"]
