"""experiments/device/check.sh, the one call a lent GPU machine gets, keeps working here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "experiments" / "device" / "check.sh"


@pytest.mark.slow
def test_the_device_check_runs_every_step_small_on_any_machine(tmp_path):
    """Its SMOKE=1 run takes each step (tests, the GPU sweep benchmark, 2:4 latency,
    compaction) to its end, and leaves each step's output in $OUT."""
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    steps = ["tests", "gpu_sweep", "nm_latency", "compaction"]
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(
        ["gpu.txt", *(f"{s}.txt" for s in steps)]
    )
    for step in steps:
        last = (tmp_path / f"{step}.txt").read_text().splitlines()[-1]
        assert last.startswith(f"=== {step}: exit 0 after "), (step, last)
    assert "resnet18    0.50     1" in (tmp_path / "compaction.txt").read_text()
    assert "; torch " in (tmp_path / "gpu.txt").read_text().splitlines()[0]  # the GPU, or none
