"""What small trials cost around them, on the embedded default (issue 24's targets).

1. A proxy search: 200 Optuna trials with ``finetune.epochs=0`` and BatchNorm recalibration,
   ``search=tradeoff`` with the random sampler, after the baseline exists, with one worker and
   with two: the wall time (target: <= 30 s on 2 cores), and how much of it the trials' own
   ``time_total_s`` account for.
2. A grid of 20 amounts with ``finetune.epochs=2``: the share of the wall time spent inside
   finetuning (``time_finetune_s`` summed; target: >= 60%), with ``fuse=1`` and ``fuse=4``
   side by side.
3. One cached trial (``python -m sweep``): its wall time against its own ``time_total_s`` plus
   a bare ``import torch`` (target: <= 2x), and plus ``import torch`` with a first optimizer
   (which imports ``torch._dynamo``, done before the trial's clock starts).

    python experiments/benchmarks/small_trials.py [--trials 200] [--grid 20]

Each command runs in a fresh folder whose baseline cache is filled first, so that no figure
includes pretraining. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--grid", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _run(folder, "progress=false")  # the baseline, cached for every run below
        cache = folder / "results" / "baselines"

        for workers in (1, 2):
            proxy = _fresh(folder / f"proxy-{workers}", cache)
            wall = _run(
                proxy,
                "-m",
                "search=tradeoff",
                f"hydra.sweeper.n_trials={args.trials}",
                f"hydra.sweeper.n_jobs={workers}",
                "hydra/sweeper/sampler=random",
                "finetune.epochs=0",
                "progress=false",
            )
            inside = sweep.load_results(proxy / "results")["time_total_s"].sum() / workers
            print(
                f"proxy search, {args.trials} trials, n_jobs={workers}: {wall:.1f} s wall "
                f"(target <= 30 s); inside run_trial {inside:.1f} s per worker, the rest "
                f"{wall - inside:.1f} s (start-up, Hydra jobs, Optuna's ask and tell)"
            )

        amounts = ",".join(f"{0.04 * (i + 1):.2f}" for i in range(args.grid))
        for fuse in (1, 4):
            grid = _fresh(folder / f"grid-{fuse}", cache)
            wall = _run(
                grid,
                "-m",
                f"amount={amounts}",
                "finetune.epochs=2",
                f"fuse={fuse}",
                "progress=false",
            )
            rows = sweep.load_results(grid / "results")
            inside = rows["time_finetune_s"].sum()
            first = rows.sort_values("started_at")["time_finetune_s"].iloc[0]
            print(
                f"grid of {args.grid}, fuse={fuse}: {wall:.1f} s wall, finetuning {inside:.1f} s "
                f"= {100 * inside / wall:.0f}% (target >= 60%); the first trial's "
                f"{first:.2f} s against a median {rows['time_finetune_s'].median():.2f} s "
                "(the import the first optimizer of a process makes is done before its clock)"
            )

        single = _fresh(folder / "single", cache)
        wall = _run(single, "progress=false")
        total = float(sweep.load_results(single / "results")["time_total_s"].iloc[0])
        torch_s = _python("import torch")
        # what any script that trains pays too: torch.optim's first optimizer imports
        # torch._dynamo, outside the trial's clock (sweep.training.import_optimizer_modules)
        optim_s = _python("import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)])")
        print(
            f"one cached trial: {wall:.1f} s wall, time_total_s {total:.2f} s + import torch "
            f"{torch_s:.1f} s: {wall / (total + torch_s):.2f}x (target <= 2x); + import torch "
            f"and a first optimizer {optim_s:.1f} s: {wall / (total + optim_s):.2f}x"
        )


def _python(code: str) -> float:
    """Seconds a bare ``python -c CODE`` takes."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def _fresh(folder: Path, cache: Path) -> Path:
    """A new folder whose store holds the cached baselines (and nothing else)."""
    shutil.copytree(cache, folder / "results" / "baselines")
    return folder


def _run(folder: Path, *args: str) -> float:
    """Seconds ``python -m sweep ARGS`` takes in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sweep", *args],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
