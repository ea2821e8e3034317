"""Fused trials (issue 23): K trials one at a time against the same K fused, side by side.

For each K, K trials of the embedded default (small_cnn on digits) that differ in method,
amount and learning rate run first one at a time (`sweep.trial.run_trial`), then as one fused
group (`sweep.fused.run_fused`), each into a store of its own; the dense baseline is trained
once, before any clock starts. Printed per device and K: trials/hour each way and their ratio,
and the finetuning time per trial (the part fusion batches; the rest of a trial, its
evaluations, latency and FLOP counts, runs per member either way). On CUDA when present, and
on the CPU. Timings need a quiet machine: on shared cores the ratio means little.

    python experiments/benchmarks/fusion.py [--k 2 4 8] [--epochs 2] [--device cpu cuda]
    python experiments/benchmarks/fusion.py --k 2 --epochs 1 --pretrain-epochs 1   # a quick check
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from sweep.fused import run_fused
from sweep.trial import run_trial

METHODS = ("l1_unstructured", "random_unstructured", "ln_structured")
AMOUNTS = (0.3, 0.5, 0.7, 0.9)
LRS = (1e-3, 3e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--epochs", type=int, default=2, help="finetune epochs per trial")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--device", nargs="+", default=["cuda", "cpu"])
    args = parser.parse_args()
    devices = [d for d in args.device if d == "cpu" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    header = ("device", "K", "alone/h", "fused/h", "ratio", "ft alone s", "ft fused s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 3, 9, 9, 6, 11, 11), strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for device in devices:
            shared = _shared(root, device, args.epochs, args.pretrain_epochs)
            run_trial(_cfgs(shared, root / "warmup", 1)[0])  # trains the baseline: untimed
            for k in args.k:
                alone, fused = root / f"{device}-{k}-alone", root / f"{device}-{k}-fused"
                start = time.perf_counter()
                rows_alone = [run_trial(cfg) for cfg in _cfgs(shared, alone, k)]
                t_alone = time.perf_counter() - start
                start = time.perf_counter()
                rows_fused = run_fused(_cfgs(shared, fused, k))
                t_fused = time.perf_counter() - start
                assert all(r["status"] == "complete" for r in rows_alone + rows_fused)
                assert {r["fused"] for r in rows_fused} == {k}
                ft_alone = sum(r["time_finetune_s"] for r in rows_alone) / k
                ft_fused = sum(r["time_finetune_s"] for r in rows_fused) / k
                print(
                    f"{device:>6} {k:>3} {3600 * k / t_alone:>9.0f} {3600 * k / t_fused:>9.0f} "
                    f"{t_alone / t_fused:>6.2f} {ft_alone:>11.3f} {ft_fused:>11.3f}"
                )


def _shared(root: Path, device: str, epochs: int, pretrain_epochs: int) -> list[str]:
    return [
        f"device={device}",
        f"finetune.epochs={epochs}",
        f"pretrain.epochs={pretrain_epochs}",
        "progress=false",
        "store.models=none",
        "latency.repeats=3",
        f"store.baselines={root / 'baselines'}",
    ]


def _cfgs(shared: list[str], store: Path, k: int) -> list:
    variants = itertools.islice(itertools.cycle(itertools.product(METHODS, AMOUNTS, LRS)), k)
    with initialize_config_module("sweep.conf", version_base="1.3"):
        return [
            compose(
                "config",
                [*shared, f"store.path={store}", f"method={m}", f"amount={a}", f"finetune.lr={lr}"],
            )
            for m, a, lr in variants
        ]


if __name__ == "__main__":
    main()
