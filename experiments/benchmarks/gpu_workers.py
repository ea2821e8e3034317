"""GPUs kept busy: trials/hour and GPU utilisation of a sweep at workers_per_gpu 1 / 2 / 4.

resnet18 on CIFAR-shaped synthetic data (50,000 training images of 3 x 32 x 32, held on the GPU
once per worker), bf16 autocast, images in channels_last memory; each setting is one study of
``--trials`` trials (random sampler, ``search=tradeoff``) run by ``n_jobs=auto`` local workers,
each pinned to a visible GPU. While it runs, ``nvidia-smi`` samples every GPU's utilisation
every 200 ms; a GPU counts as busy in a sample when its utilisation is above 0. Printed per
setting: trials/hour (trials over the span from the first trial's start to the last one's
end), the sweep's wall time, and the mean utilisation and busy share over that wall time.
The dense baseline is trained once, before the clock starts.

Needs an NVIDIA GPU and nvidia-smi; elsewhere it says so and exits 0.

    python experiments/benchmarks/gpu_workers.py [--per-gpu 1 2 4] [--trials 12] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import torch

TRAIN_IMAGES = 50_000
# synthetic's fractions: 0.2 for testing, then 0.15 of the rest for validation
NUM_SAMPLES = round(TRAIN_IMAGES / (0.8 * 0.85))


def _command(study: str, storage: str, trials: int, epochs: int, per_gpu: int, root: Path):
    return [
        sys.executable,
        *("-m", "sweep", "-m", "search=tradeoff"),
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.n_jobs=auto",
        f"hydra.sweeper.workers_per_gpu={per_gpu}",
        "hydra/sweeper/sampler=random",
        "model=resnet18",
        "dataset=synthetic",
        f"dataset.num_samples={NUM_SAMPLES}",
        "dataset.in_channels=3",
        "dataset.image_size=32",
        "dataset.noise=4.0",
        "channels_last=true",
        "pretrain.epochs=2",
        "pretrain.batch_size=256",
        f"finetune.epochs={epochs}",
        "finetune.batch_size=256",
        "device=cuda",
        "progress=false",
        "store.models=none",
        f"store.path={root / study}",
        f"store.baselines={root / 'baselines'}",
        f"hydra.sweep.dir={root / 'multirun' / study}",
    ]


class Sampler:
    """``nvidia-smi`` utilisation of every GPU, every 200 ms, in a background thread."""

    def __init__(self) -> None:
        self.samples: list[list[int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.wait(0.2):
            out = subprocess.run(query, capture_output=True, text=True).stdout
            self.samples.append([int(v) for v in out.split() if v.strip().isdigit()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not torch.cuda.is_available() or shutil.which("nvidia-smi") is None:
        print("needs an NVIDIA GPU and nvidia-smi; this machine has neither: nothing measured")
        return
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(f"{len(gpus)} x {gpus[0]}, torch {torch.__version__}, {args.trials} trials a study")
    root = Path(tempfile.mkdtemp(prefix="gpu-workers-"))
    storage = f"sqlite:///{root / 'optuna.db'}"
    env = {**os.environ}
    warm = _command("warm-up", storage, 1, 0, 1, root)
    subprocess.run(warm, check=True, capture_output=True, env=env)  # the baseline, once
    print(
        f"{'per GPU':>7} {'workers':>7} {'trials/h':>9} {'wall s':>7} {'util %':>7} {'busy %':>7}"
    )
    for per_gpu in args.per_gpu:
        study = f"per-gpu-{per_gpu}"
        start = time.perf_counter()
        with Sampler() as sampler:
            done = subprocess.run(
                _command(study, storage, args.trials, args.epochs, per_gpu, root),
                capture_output=True,
                text=True,
                env=env,
            )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"the sweep failed:\n{done.stderr[-2000:]}")
        trials = optuna.load_study(study_name=study, storage=storage).trials
        span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        per_hour = len(trials) / span.total_seconds() * 3600
        values = [v for sample in sampler.samples for v in sample]
        util = statistics.mean(values) if values else float("nan")
        busy = sum(v > 0 for v in values) / len(values) if values else float("nan")
        print(
            f"{per_gpu:>7} {per_gpu * len(gpus):>7} {per_hour:>9.0f} {wall:>7.1f} "
            f"{util:>7.0f} {busy:>7.0%}"
        )


if __name__ == "__main__":
    main()
