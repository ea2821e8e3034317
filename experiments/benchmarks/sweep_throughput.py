"""Sweep throughput: local workers, the baseline cache, and Optuna's cost per trial.

1. ``python -m sweep -m search=tradeoff`` with n_jobs=1 and n_jobs=2, same trials, baseline
   already cached: trials per minute while the sweep runs (first trial start to last trial end,
   from the study) and for the whole command (process start-up included).
2. A 20-trial sweep through the baseline cache against 20 trials that each pretrain their own
   baseline (as 20 independent scripts would), in process.
3. Sampler + storage overhead per trial (ask, sample, the job rebuilding its trial, reports,
   tell) on the default SQLite storage, against the trial time.

    python experiments/benchmarks/sweep_throughput.py [--trials 20] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from hydra import compose, initialize_config_module

from sweep.search import SearchSpace
from sweep.trial import run_trial


def sweep_run(folder: Path, n_jobs: int, trials: int, epochs: int) -> tuple[float, float]:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sweep",
            "-m",
            "search=tradeoff",
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.n_jobs={n_jobs}",
            f"finetune.epochs={epochs}",
            "progress=false",
        ],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    study = optuna.load_study(
        study_name="tradeoff", storage=f"sqlite:///{folder}/results/optuna.db"
    )
    first = min(t.datetime_start for t in study.trials)
    last = max(t.datetime_complete for t in study.trials)
    return trials / (last - first).total_seconds() * 60, trials / wall * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sweep-bench-"))

    # 1. local workers, baseline pre-cached in both folders
    seed = root / "seed"
    seed.mkdir()
    subprocess.run(
        [sys.executable, "-m", "sweep", "progress=false"],
        cwd=seed,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rates = {}
    for n_jobs in (1, 2):
        folder = root / f"jobs{n_jobs}"
        shutil.copytree(seed / "results" / "baselines", folder / "results" / "baselines")
        rates[n_jobs] = sweep_run(folder, n_jobs, args.trials, args.epochs)
    print(
        f"{args.trials}-trial search=tradeoff, finetune.epochs={args.epochs}, "
        f"{os.cpu_count()} cores:"
    )
    for n_jobs, (during, whole) in rates.items():
        print(
            f"  n_jobs={n_jobs}: {during:6.1f} trials/min while sweeping, "
            f"{whole:6.1f} for the whole command"
        )
    print(
        f"  speed-up n_jobs=2 / 1: {rates[2][0] / rates[1][0]:.2f}x while sweeping "
        f"(target >= 1.7), {rates[2][1] / rates[1][1]:.2f}x whole command"
    )

    # 2. the baseline cache
    overrides = ["progress=false"]
    with initialize_config_module("sweep.conf", version_base="1.3"):

        def timed(store: Path, cache: Path, i: int) -> float:
            cfg = compose(
                "config",
                [
                    *overrides,
                    f"store.path={store}",
                    f"store.baselines={cache}",
                    f"amount={0.05 + 0.045 * i:.3f}",
                ],
            )
            t = time.perf_counter()
            run_trial(cfg)
            return time.perf_counter() - t

        shared = [
            timed(root / "cached", root / "cached" / "baselines", i) for i in range(args.trials)
        ]
        alone = [timed(root / "alone", root / "alone" / f"b{i}", i) for i in range(args.trials)]
    print(
        f"{args.trials} trials sharing one cached baseline: {sum(shared):6.1f} s; "
        f"each pretraining its own: {sum(alone):6.1f} s; ratio {sum(alone) / sum(shared):.1f}x"
    )

    # 3. sampler + storage overhead per trial
    space = SearchSpace.from_config(
        {
            "method": {"choices": ["l1_unstructured", "ln_structured", "global_unstructured"]},
            "amount": {"low": 0.1, "high": 0.95},
            "method.n": {"choices": [1, 2], "when": {"method": "ln_structured"}},
        }
    )
    storage = optuna.storages.RDBStorage(f"sqlite:///{root}/overhead.db")
    study = optuna.create_study(
        storage=storage,
        study_name="o",
        directions=["maximize", "maximize"],
        sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=20),
    )
    costs = []
    for _ in range(args.trials):
        t = time.perf_counter()
        trial = study.ask()
        trial.set_user_attr("worker", {"host": "h", "pid": 1})
        space.sample(trial)
        job_study = optuna.load_study(study_name="o", storage=storage)
        tid = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name("o"), trial.number
        )
        storage.set_trial_user_attr(tid, "trial_key", "k")
        optuna.Trial(job_study, tid)
        study.tell(trial, [0.9, 0.5])
        costs.append(time.perf_counter() - t)
    per_trial = statistics.median(shared)
    print(
        f"sampler + storage per trial (SQLite, NSGA-II): "
        f"{statistics.median(costs) * 1000:.1f} ms median, "
        f"{statistics.median(costs) / per_trial * 100:.1f}% of a {per_trial * 1000:.0f} ms trial"
    )
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
