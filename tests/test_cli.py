"""The command line, run as a user runs it: a subprocess in a fresh folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sweep import load_layers, load_results
from tests.conftest import FAST, run_cli, write_cifar10


def test_default_trial_then_another_method_reuses_the_baseline(tmp_path):
    first = run_cli(cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = first.stdout.strip().splitlines()[-1]
    assert summary.startswith(
        "l1_unstructured amount=0.5: complete, sparsity 0.500, accuracy dense"
    )

    second = run_cli("method=ln_structured", "amount=0.5", *FAST[-1:], cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "ln_structured amount=0.5: complete, sparsity 0.500" in second.stdout
    assert "dense baseline" in second.stdout and "loaded from results/baselines" in second.stdout
    assert "trained in" in first.stdout and "trained in" not in second.stdout

    df = load_results(tmp_path / "results")
    assert df.method.tolist() == ["l1_unstructured", "ln_structured"]
    assert df.baseline_trained.tolist() == [True, False]
    assert (df.status == "complete").all() and df.acc_dense.iloc[0] > 0.9

    shown = subprocess.run(
        [sys.executable, "-c", "import sweep; print(sweep.load_results()[['method', 'sparsity']])"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.splitlines() == [
        "            method  sparsity",
        "0  l1_unstructured       0.5",
        "1    ln_structured       0.5",
    ]


def test_users_own_method_runs_without_editing_the_package(tmp_path):
    shutil.copy(Path(__file__).parent / "custom_methods.py", tmp_path / "my_methods.py")
    result = run_cli(
        "method._target_=my_methods.EveryOther", "method.name=every_other", *FAST, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    layers = load_layers(tmp_path / "results")
    assert (layers.numel - layers.nonzero).tolist() == [(n + 1) // 2 for n in layers.numel]
    assert load_results(tmp_path / "results").method.tolist() == ["every_other"]


@pytest.mark.slow
def test_torchvision_model_and_dataset(tmp_path):
    write_cifar10(tmp_path / "cifar")
    result = run_cli(
        "model=resnet18",
        "dataset=cifar10",
        "dataset.root=cifar",
        "dataset.verify_checksums=false",
        "method=global_unstructured",
        "amount=0.8",
        "device=cpu",
        "pretrain.epochs=1",
        "finetune.epochs=1",
        "latency.batch_size=2",
        "latency.repeats=1",
        "progress=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    row = load_results(tmp_path / "results").iloc[0]
    assert (row.model, row.dataset, row.method, row.device) == (
        "resnet18",
        "cifar10",
        "global_unstructured",
        "cpu",
    )
    assert abs(row.sparsity - 0.8) < 1e-6 and row.params == 11173962


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["method=foo"],
            "error: method='foo' is unknown; accepted: global_unstructured, l1_unstructured, ln_structured, none, random_structured, random_unstructured",
        ),
        (
            ["model=bar"],
            "error: model='bar' is unknown; accepted: lenet, mlp, resnet18, small_cnn, vgg11",
        ),
        (
            ["dataset=imagenet"],
            "error: dataset='imagenet' is unknown; accepted: cifar10, digits, fashion_mnist, mnist, synthetic",
        ),
        (
            ["amount=-0.5"],
            "error: amount=-0.5 is outside [0, 1); accepted: a float in [0, 1) (a fraction) or an int >= 0 (a count)",
        ),
        (["amount=1.0"], "error: amount=1.0 is outside [0, 1)"),
        (
            ["amount=145"],
            "error: amount=145 is larger than layer 'block1.conv' (144 prunable units); accepted: an int up to 144",
        ),
        (
            ["method=ln_structured", "method.dim=2"],
            "error: method.dim=2 does not exist for layer 'classifier' (weight of shape (10, 64)); accepted: an int from -2 to 1",
        ),
        (
            ["dataset=mnist", "dataset.root=missing"],
            "error: dataset.root='missing' is not a folder; accepted: a local folder holding <root>/MNIST/raw/",
        ),
        (
            ["method._target_=my_methodz.EveryOther"],
            "error: method._target_='my_methodz.EveryOther' does not import (no module named 'my_methodz')",
        ),
        (["amout=0.5"], "error: Could not override 'amout'."),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    result = run_cli(*args, *FAST, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert [ln for ln in result.stderr.splitlines() if "error" in ln.lower()] == [
        result.stderr.strip().splitlines()[-1]
    ]
    assert not (tmp_path / "results" / "trials").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(tmp_path):
    result = run_cli("device=cuda", *FAST, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: device='cuda' but no CUDA GPU is available here; accepted: auto | cpu"
    )
    assert not (tmp_path / "results").exists()


def test_nan_loss_exits_non_zero_with_a_failed_row(tmp_path):
    result = run_cli("finetune.lr=1e30", *FAST, cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED: finetune: loss became nan in epoch 1" in result.stdout
    df = load_results(tmp_path / "results")
    assert df[["status", "error"]].values.tolist() == [
        ["failed", "finetune: loss became nan in epoch 1"]
    ]
