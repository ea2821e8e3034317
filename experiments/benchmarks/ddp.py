"""DDP trials (distributed.nproc): what N ranks cost or save, and what they change.

1. CPU, gloo: the same trial with distributed.nproc=1 and with nproc=2 (same global batch,
   the same cores: each of the 2 ranks gets half of torch's threads), in alternating rounds
   after the baseline is cached: the ratio of finetuning times and of whole-trial times
   (nproc=2 / nproc=1), and the accuracy differences (finetuned, recalibrated).
2. CUDA, when a GPU is present: the DDP code path on one GPU (an NCCL group of one rank,
   batches cut to the rank's part, gradients all-reduced after each step, BatchNorm statistics
   averaged, evaluation counts summed) against the plain path, same model and data: the ratio
   of training times. nproc=1 itself runs the plain path, so this is the overhead a rank pays
   for taking part in a group, the communication between GPUs aside.

Needs a quiet machine: the figures are wall times.

    python experiments/benchmarks/ddp.py [--rounds 3] [--epochs 3] [--model small_cnn]
        [--dataset digits]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from sweep.trial import run_trial


def trial(store: Path, args: argparse.Namespace, nproc: int) -> dict:
    with initialize_config_module("sweep.conf", version_base="1.3"):
        cfg = compose(
            "config",
            [
                f"model={args.model}",
                f"dataset={args.dataset}",
                f"finetune.epochs={args.epochs}",
                f"store.path={store / f'nproc{nproc}'}",
                f"store.baselines={store / 'baselines'}",
                f"distributed.nproc={nproc}",
                "device=cpu",
                "store.models=none",
                "progress=false",
            ],
        )
    row = run_trial(cfg)
    assert row["status"] == "complete", row["error"]
    return row


def cpu_ranks(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder)
        trial(store, args, 1)  # the baseline, cached for both
        rows: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for nproc in (1, 2):
                rows[nproc].append(trial(store, args, nproc))
    one, two = rows[1], rows[2]
    finetune = statistics.median(
        b["time_finetune_s"] / a["time_finetune_s"] for a, b in zip(one, two, strict=True)
    )
    total = statistics.median(
        b["time_total_s"] / a["time_total_s"] for a, b in zip(one, two, strict=True)
    )
    print(f"CPU, gloo, {args.model} on {args.dataset}, {torch.get_num_threads()} threads:")
    print(f"  finetuning time, nproc=2 / nproc=1 (median of {args.rounds}): {finetune:.2f}")
    print(f"  whole trial time, nproc=2 / nproc=1 (spawning the rank included): {total:.2f}")
    for stage in ("dense", "pruned", "recalibrated", "finetuned"):
        diffs = [b[f"acc_{stage}"] - a[f"acc_{stage}"] for a, b in zip(one, two, strict=True)]
        print(f"  acc_{stage}, nproc=2 - nproc=1: max |diff| {max(map(abs, diffs)):.4f}")


def cuda_overhead(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from sweep.models import torchvision
    from sweep.training import train

    device = torch.device("cuda:0")
    g = torch.Generator().manual_seed(0)
    split = _synthetic(4096, g, device)
    settings = {
        "epochs": args.epochs,
        "batch_size": 256,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "amp": True,
    }
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        times: dict[str, list[float]] = {"plain": [], "ddp": []}
        for _ in range(args.rounds):
            for name, data in (("plain", split), ("ddp", dataclasses.replace(split, part=(0, 1)))):
                torch.manual_seed(0)
                model = torchvision(10, 3, 32, arch="resnet18").to(device)
                torch.cuda.synchronize()
                start = time.perf_counter()
                train(model, data, settings, seed=0, progress=False)
                torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    finally:
        dist.destroy_process_group()
    ratio = statistics.median(d / p for p, d in zip(times["plain"], times["ddp"], strict=True))
    print(f"CUDA ({torch.cuda.get_device_name(device)}), NCCL group of one, resnet18 32x32:")
    print(f"  training time, DDP path / plain path (median of {args.rounds}): {ratio:.3f}")


def _synthetic(n: int, g: torch.Generator, device: torch.device):
    from sweep.data import Split

    return Split(torch.randn(n, 3, 32, 32, generator=g), torch.randint(10, (n,), generator=g)).to(
        device
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--dataset", default="digits")
    args = parser.parse_args()
    cpu_ranks(args)
    if torch.cuda.is_available():
        cuda_overhead(args)
    else:
        print("CUDA: no GPU here; the NCCL overhead is not measured")


if __name__ == "__main__":
    main()
