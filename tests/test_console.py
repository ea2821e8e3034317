"""What a run prints: one line per trial, bars only on a terminal, the details in sweep.log."""

from __future__ import annotations

import re
import sys

import pytest

from sweep import config, load_results
from sweep._console import show_progress, trial_count
from sweep.errors import ConfigError
from tests.conftest import FAST, make_cfg, run_cli

RAISING_METHOD = """
from torch.nn.utils import prune


class Raises(prune.BasePruningMethod):
    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        self.amount = amount

    def compute_mask(self, t, default_mask):
        raise ValueError("my method broke")
"""


def test_a_failed_trial_prints_its_summary_line_and_logs_the_traceback(tmp_path):
    (tmp_path / "my_methods.py").write_text(RAISING_METHOD)
    method = ["method._target_=my_methods.Raises", "method.name=raises"]
    run = run_cli(*FAST, *method, cwd=tmp_path)
    assert run.returncode == 1
    [line] = run.stdout.splitlines()
    assert line.startswith("raises amount=0.5: FAILED: ValueError: my method broke (")
    assert run.stderr == ""  # no traceback, no ERROR line: the summary line says it
    [log] = tmp_path.glob("outputs/*/*/sweep.log")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "trial " in text and " failed\nTraceback" in text
    assert text.rstrip().endswith("ValueError: my method broke")


def test_no_progress_frames_when_the_output_is_not_a_terminal(tmp_path):
    # progress is left at its default (auto): captured output is no terminal
    run = run_cli(*[o for o in FAST if not o.startswith("progress=")], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stdout + run.stderr
    assert run.stderr == ""
    [line] = run.stdout.splitlines()
    assert line.startswith("l1_unstructured amount=0.5: complete, sparsity 0.500")


def test_progress_true_forces_bars_and_auto_needs_a_terminal(capsys, monkeypatch):
    assert (show_progress(True), show_progress(False), show_progress("auto")) == (
        True,
        False,
        False,
    )
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress("auto") is True


@pytest.mark.parametrize("value", ["yes", "1"])
def test_progress_accepts_true_false_or_auto(tmp_path, value):
    cfg = make_cfg(tmp_path, f"progress={value}")
    shown = {"yes": "'yes'", "1": "1"}[value]
    wrong = {"yes": "is not valid", "1": "is out of range"}[value]
    with pytest.raises(ConfigError) as e:
        config.check_values(cfg)
    assert str(e.value) == (
        f"progress={shown} {wrong}; accepted: true | false | auto "
        "(bars on a terminal or in a notebook only)"
    )


def test_a_grid_counts_its_trials_with_an_eta(tmp_path):
    run = run_cli("-m", "amount=0.25,0.5,0.75", *FAST, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 3  # still one line per trial
    for k, (line, amount) in enumerate(zip(lines, ("0.25", "0.5", "0.75"), strict=True), 1):
        assert re.match(rf"\[{k}/3, eta 0:\d\d:\d\d\] l1_unstructured amount={amount}: ", line)
    assert lines[-1].startswith("[3/3, eta 0:00:00] ")


def test_a_grid_line_names_the_other_values_it_sweeps(tmp_path):
    """Lines of jobs that differ in finetune.lr (or the seed, the model...) read alike."""
    grid = ["-m", "finetune.lr=0.001,0.01", "amount=0.5", "seed=0,1", "method.n=1,2"]
    run = run_cli(*grid, "method=ln_structured", *FAST, "finetune.epochs=1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    heads = [line.split("] ", 1)[1].split(":")[0] for line in run.stdout.splitlines()]
    assert heads == [
        f"ln_structured amount=0.5, finetune.lr={lr}, seed={seed}, method.n={n}"
        for lr in ("0.001", "0.01")
        for seed in (0, 1)
        for n in (1, 2)
    ]


@pytest.mark.slow  # a fused grid through the command line, with its baseline (about 20 s)
def test_a_grid_over_a_glob_of_a_config_group_counts_and_names_its_options(tmp_path):
    """+exp=glob(*) left the grid uncounted ([1], [2]), its lines alike, and its jobs unfused."""
    group = tmp_path / "my_conf" / "exp"
    group.mkdir(parents=True)
    for name, lr in (("fast", 0.01), ("slow", 0.0001)):
        (group / f"{name}.yaml").write_text(f"# @package _global_\nfinetune:\n  lr: {lr}\n")
    run = run_cli("-m", "--config-dir", "my_conf", "+exp=glob(*)", *FAST, "fuse=2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    heads = [re.sub(r"eta [\d:]+", "eta -", line).split(":")[0] for line in run.stdout.splitlines()]
    assert heads == [
        "[1/2, eta -] l1_unstructured amount=0.5, exp=fast",
        "[2/2, eta -] l1_unstructured amount=0.5, exp=slow",
    ]
    rows = load_results(tmp_path / "results").sort_values("finetune.lr")
    assert rows["finetune.lr"].tolist() == [0.0001, 0.01]
    assert rows["fused"].tolist() == [2, 2]  # one group: the options differ in lr alone


def test_the_count_of_a_single_run_is_empty():
    assert trial_count(1.0) == ""  # no multirun: the summary line alone
