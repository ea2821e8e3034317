"""What a run prints: one line per trial, bars only on a terminal, the details in sweep.log."""

from __future__ import annotations

from tests.conftest import FAST, run_cli

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
