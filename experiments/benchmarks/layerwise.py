"""Per-layer amounts vs one uniform amount at the same trial budget: Pareto hypervolume.

For each subject and sampler seed, two Optuna studies of ``--trials`` trials each, NSGA-II,
maximizing ``acc_finetuned`` and ``sparsity``, from one cached baseline:

- ``layerwise``: ``search=layerwise``, one amount per prunable layer (``scope.amounts.<layer>``);
- ``uniform``: the same search with ``hydra.sweeper.layerwise=null`` and one ``amount`` for all.

The hypervolume of each study's Pareto front is measured in (sparsity, accuracy) from the
reference point (0, dense accuracy - ``--margin``): the area of the trade-offs within
``--margin`` of dense accuracy that the front dominates, larger is better. Subjects:
``digits`` (the embedded default, small_cnn) and ``resnet18`` on CIFAR-shaped synthetic data
(3 channels, small images so that it runs on a CPU).

    python experiments/benchmarks/layerwise.py [--trials 24] [--seeds 0 1] [--subjects digits]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import sweep
from sweep import analysis

SUBJECTS = {
    "digits": ["finetune.epochs=5"],
    "resnet18": [
        "model=resnet18",
        "dataset=synthetic",
        "dataset.in_channels=3",
        "dataset.image_size=8",
        "dataset.num_samples=512",
        "dataset.noise=4.0",
        "pretrain.epochs=10",
        "finetune.epochs=2",
        "finetune.batch_size=64",
        "pretrain.batch_size=64",
    ],
}
COMMON = ["device=cpu", "progress=false", "store.models=none", "latency.repeats=1"]
STUDIES = {
    "layerwise": [],
    "uniform": ["hydra.sweeper.layerwise=null", "+hydra.sweeper.params.amount={low:0.0,high:0.95}"],
}


def hypervolume(front: pd.DataFrame, reference_accuracy: float) -> float:
    """Area dominated by the (sparsity, acc_finetuned) points, both maximized, above
    (0, ``reference_accuracy``)."""
    points = front[front["acc_finetuned"] > reference_accuracy]
    points = points.sort_values("sparsity", ascending=False)
    area, best = 0.0, reference_accuracy
    sparsities = [*points["sparsity"], 0.0]
    for i, (_, p) in enumerate(points.iterrows()):
        best = max(best, p["acc_finetuned"])
        area += (sparsities[i] - sparsities[i + 1]) * (best - reference_accuracy)
    return area


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--subjects", nargs="+", default=list(SUBJECTS), choices=list(SUBJECTS))
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--store", help="keep the stores here (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.store or tempfile.mkdtemp(prefix="layerwise-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    print(f"{args.trials} trials per study, sampler seeds {args.seeds}, stores under {root}")
    objectives = {"acc_finetuned": "maximize", "sparsity": "maximize"}
    for subject in args.subjects:
        store = root / subject
        ratios = []
        for seed in args.seeds:
            volumes = {}
            for name, extra in STUDIES.items():
                study = f"{name}-{seed}"
                command = [
                    *("-m", "search=layerwise", f"store.path={store}"),
                    *(f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={args.trials}"),
                    f"hydra.sweeper.sampler.seed={seed}",
                    *SUBJECTS[subject],
                    *COMMON,
                    *extra,
                ]
                start = time.perf_counter()
                run = subprocess.run(  # Hydra's multirun/ folders beside the stores, not here
                    [sys.executable, "-m", "sweep", *command], capture_output=True, cwd=root
                )
                if run.returncode != 0:
                    sys.exit(f"{subject} {study} failed:\n{run.stderr.decode()[-2000:]}")
                elapsed = time.perf_counter() - start
                rows = analysis.complete(sweep.load_results(store))
                rows = rows[rows["optuna.study"] == study]
                dense = float(rows["acc_dense"].iloc[0])
                front = analysis.pareto_front(rows, objectives)
                volumes[name] = hypervolume(front, dense - args.margin)
                best = front.sort_values("sparsity").iloc[-1]
                print(
                    f"{subject:9} seed {seed} {name:9} {len(rows)} trials in {elapsed:5.0f} s: "
                    f"front of {len(front)}, hypervolume {volumes[name]:.4f}, sparsest on it "
                    f"{best['sparsity']:.3f} at {best['acc_finetuned']:.3f} (dense {dense:.3f})"
                )
            if volumes["uniform"] > 0:  # else no uniform trial is within --margin of dense
                ratios.append(volumes["layerwise"] / volumes["uniform"])
        if not ratios:
            print(f"{subject}: no uniform front within {args.margin} of dense: no ratio")
            continue
        spread = f" ± {statistics.stdev(ratios):.2f}" if len(ratios) > 1 else ""
        print(
            f"{subject}: hypervolume layerwise / uniform = {statistics.mean(ratios):.2f}{spread} "
            f"(per seed: {', '.join(f'{r:.2f}' for r in ratios)})"
        )


if __name__ == "__main__":
    main()
