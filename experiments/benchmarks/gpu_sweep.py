"""One GPU benchmark: every way to run a pruning sweep's trials, side by side in one run.

Rows, all on the same model, data, baseline and kind of masks (L1 at amounts 0.3-0.9):
  hand          the anchor: a hand-written loop doing a trial's work (torch.nn.utils.prune L1
                masks, Adam, bf16 autocast, one pass over the training split per epoch, one over
                validation and test), one trial after another
  alone         prune-sweep trials one after another in this process (`sweep.trial.run_trial`)
  fused K       groups of K trials finetuned and tested as one batched model
                (`sweep.fused.run_fused`)
  sweep fuse=K  the user's command: an Optuna sweep of one worker asking K trials at a time
  workers W     an Optuna sweep (`python -m sweep -m search=tradeoff`, fuse=1) run by
                `hydra.sweeper.workers_per_gpu=W` local workers on each visible GPU

Steady state: each in-process row runs one untimed warm-up (a trial, or a group of K) first
(CUDA context, cuDNN autotuning for the shapes, allocator growth), then `--trials` trials (at
least one whole group). Sweep rows count trials/hour from the first trial's start to the last
one's end; their process start-up is the `wall` column's remainder. `nvidia-smi` samples every
GPU's utilisation and memory every 100 ms while a row runs: `util` is the mean utilisation,
`busy` the share of samples above 0 %. Peak memory is `torch.cuda.max_memory_allocated` for
in-process rows and nvidia-smi's largest `memory.used` for sweep rows. The dense baseline is
trained once, before any clock.

Defaults fit one 10-minute device call on an H200 (resnet18 CIFAR-stem, 50,000 synthetic
CIFAR-shaped training images held on the GPU, bf16, channels_last, 1 finetune epoch).
`--smoke` runs every row small on whatever device there is (small_cnn on digits); it checks
that the script works, and its figures mean nothing.

    python experiments/benchmarks/gpu_sweep.py                  # on a GPU machine
    python experiments/benchmarks/gpu_sweep.py --rows hand alone fused --k 4 16
    python experiments/benchmarks/gpu_sweep.py --smoke          # any machine, about a minute
"""

from __future__ import annotations

import argparse
import copy
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
from hydra import compose, initialize_config_module
from torch import nn
from torch.nn.utils import prune

from sweep.fused import run_fused
from sweep.plan import _on_device, prepare
from sweep.trial import _load_baseline, run_trial

TRAIN_IMAGES = 50_000
# synthetic's fractions: 0.2 for testing, then 0.15 of the rest for validation
NUM_SAMPLES = round(TRAIN_IMAGES / (0.8 * 0.85))
AMOUNTS = (0.3, 0.5, 0.7, 0.9)
ROWS = ("hand", "alone", "fused", "sweep", "workers")  # in the order they run


def _setting(args: argparse.Namespace, root: Path) -> list[str]:
    """The overrides every row shares: model, data, baseline, finetuning."""
    common = [
        f"finetune.epochs={args.epochs}",
        "progress=false",
        "store.models=none",
        f"store.baselines={root / 'baselines'}",
        f"device={args.device}",
    ]
    if args.smoke:
        return [*common, "pretrain.epochs=2"]
    return [
        *common,
        "model=resnet18",
        "dataset=synthetic",
        f"dataset.num_samples={NUM_SAMPLES}",
        "dataset.in_channels=3",
        "dataset.image_size=32",
        "dataset.noise=4.0",
        "channels_last=true",
        "pretrain.epochs=2",
        "pretrain.batch_size=256",
        "finetune.batch_size=256",
    ]


def _cfgs(setting: list[str], store: Path, n: int, start: int = 0) -> list:
    """``n`` trial configs differing in amount and learning rate, into ``store``."""
    out = []
    with initialize_config_module("sweep.conf", version_base="1.3"):
        for i in range(start, start + n):
            amount = AMOUNTS[i % len(AMOUNTS)]
            lr = 1e-3 * (1 + (i // len(AMOUNTS)) % 3)
            over = [*setting, f"store.path={store}", f"amount={amount}", f"finetune.lr={lr}"]
            out.append(compose("config", [*over, "method=l1_unstructured", "fuse=1"]))
    return out


class Sampler:
    """``nvidia-smi`` utilisation (%) and memory used (MiB) of every GPU, every 100 ms, in a
    background thread; nothing without nvidia-smi."""

    def __init__(self) -> None:
        self.util: list[int] = []
        self.mem: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        query = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]
        while not self._stop.wait(0.1):
            out = subprocess.run(query, capture_output=True, text=True).stdout
            for line in out.strip().splitlines():
                util, mem = (int(v) for v in line.split(","))
                self.util.append(util)
                self.mem.append(mem)

    def figures(self) -> tuple[str, str]:
        if not self.util:
            return "-", "-"
        busy = sum(u > 0 for u in self.util) / len(self.util)
        return f"{statistics.mean(self.util):.0f}", f"{busy:.0%}"


class Table:
    header = (
        "row",
        "trials",
        "trials/h",
        "x hand",
        "s/trial",
        "wall s",
        "util %",
        "busy",
        "peak GiB",
    )
    widths = (14, 6, 9, 7, 8, 7, 7, 6, 9)

    def __init__(self) -> None:
        self.hand: float | None = None
        print(" ".join(f"{h:>{w}}" for h, w in zip(self.header, self.widths, strict=True)))

    def line(self, name, trials, seconds, wall, sampler: Sampler, peak_gib) -> None:
        per_hour = 3600 * trials / seconds
        if name == "hand":
            self.hand = per_hour
        ratio = f"{per_hour / self.hand:.2f}" if self.hand else "-"
        util, busy = sampler.figures()
        peak = "-" if peak_gib is None else f"{peak_gib:.1f}"
        cells = (name, trials, f"{per_hour:.0f}", ratio, f"{seconds / trials:.2f}", f"{wall:.1f}")
        cells += (util, busy, peak)
        print(" ".join(f"{c!s:>{w}}" for c, w in zip(cells, self.widths, strict=True)), flush=True)


def _peak_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak() -> float | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def hand_trial(dense: nn.Module, data, cfg, amount: float) -> float:
    """One trial's work written by hand: the test accuracy after L1 masks and finetuning."""
    device = next(dense.parameters()).device
    model = copy.deepcopy(dense)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for m in layers[1:-1]:  # the first and last stay dense, as dense_ends=true leaves them
        prune.l1_unstructured(m, "weight", amount)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.finetune.lr)
    amp = device.type == "cuda" and cfg.finetune.amp
    x, y, batch = data.train.x, data.train.y, cfg.finetune.batch_size
    for _ in range(cfg.finetune.epochs):
        model.train()
        order = torch.randperm(len(y), device=device)
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _accuracy(model, data.val, batch, amp)
    return _accuracy(model, data.test, batch, amp)


@torch.no_grad()
def _accuracy(model: nn.Module, split, batch: int, amp: bool) -> float:
    model.eval()
    device = split.x.device
    right = torch.zeros((), device=device)
    for i in range(0, len(split.y), batch):
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            right += (model(split.x[i : i + batch]).argmax(1) == split.y[i : i + batch]).sum()
    return (right / len(split.y)).item()


def row_hand(args, setting, root, table: Table) -> None:
    [cfg] = _cfgs(setting, root / "hand", 1)
    plan = prepare(cfg)
    _load_baseline(cfg, plan, plan.model, plan.data)
    dense = plan.model.to(plan.device)
    if cfg.channels_last:
        dense = dense.to(memory_format=torch.channels_last)
    data = _on_device(plan.data, plan.device, bool(cfg.channels_last))
    hand_trial(dense, data, cfg, 0.5)  # warm-up
    _peak_reset()
    with Sampler() as sampler:
        start = time.perf_counter()
        for i in range(args.trials):
            hand_trial(dense, data, cfg, AMOUNTS[i % len(AMOUNTS)])
        seconds = time.perf_counter() - start
    table.line("hand", args.trials, seconds, seconds, sampler, _peak())


def row_alone(args, setting, root, table: Table) -> None:
    cfgs = _cfgs(setting, root / "alone", args.trials + 1)
    run_trial(cfgs[0])  # warm-up
    _peak_reset()
    with Sampler() as sampler:
        start = time.perf_counter()
        rows = [run_trial(cfg) for cfg in cfgs[1:]]
        seconds = time.perf_counter() - start
    assert all(r["status"] == "complete" for r in rows), [r.get("error") for r in rows]
    table.line("alone", len(rows), seconds, seconds, sampler, _peak())


def row_fused(args, setting, root, table: Table, k: int) -> None:
    groups = max(1, -(-args.trials // k))
    store = root / f"fused-{k}"
    run_fused(_cfgs(setting, store, k))  # warm-up: this group's shapes
    _peak_reset()
    with Sampler() as sampler:
        start = time.perf_counter()
        rows = []
        for g in range(groups):
            rows += run_fused(_cfgs(setting, store, k, start=(g + 1) * k))
        seconds = time.perf_counter() - start
    assert all(r["status"] == "complete" for r in rows), [r.get("error") for r in rows]
    assert {r["fused"] for r in rows} == {k}, {r["fused"] for r in rows}
    table.line(f"fused {k}", len(rows), seconds, seconds, sampler, _peak())


def row_sweep(args, setting, root, table: Table, name: str, extra: list[str]) -> None:
    """A real sweep command; ``extra`` says how its trials run (workers, fuse)."""
    study = name.replace(" ", "-").replace("=", "")
    storage = f"sqlite:///{root / 'optuna.db'}"
    cmd = [
        sys.executable,
        *("-m", "sweep", "-m", "search=tradeoff", "hydra/sweeper/sampler=random"),
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={args.trials}",
        *setting,
        *extra,
        f"store.path={root / study}",
        f"hydra.sweep.dir={root / 'multirun' / study}",
    ]
    with Sampler() as sampler:
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name}: the sweep failed:\n{done.stderr[-2000:]}")
    trials = optuna.load_study(study_name=study, storage=storage).trials
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    peak = max(sampler.mem) / 1024 if sampler.mem else None
    table.line(name, len(trials), span.total_seconds(), wall, sampler, peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--trials", type=int, default=8, help="timed trials per row")
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 8, 16], help="fused sizes")
    parser.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--epochs", type=int, default=1, help="finetune epochs per trial")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="small_cnn on digits, any device")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.k, args.per_gpu = 2, [2], [1]
    elif not torch.cuda.is_available():
        print("needs a CUDA GPU (or --smoke): nothing measured")
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(
        f"{gpu}, {torch.cuda.device_count()} visible, torch {torch.__version__}, "
        f"{'small_cnn on digits (smoke)' if args.smoke else 'resnet18 CIFAR-shaped'}, "
        f"{args.epochs} finetune epoch(s), {args.trials} timed trials a row"
    )
    with tempfile.TemporaryDirectory(prefix="gpu-sweep-") as tmp:
        root = Path(tmp)
        setting = _setting(args, root)
        start = time.perf_counter()
        run_trial(_cfgs(setting, root / "baseline", 1)[0])  # trains and caches the baseline
        print(f"baseline and first trial: {time.perf_counter() - start:.1f} s (not counted)")
        table = Table()
        if "hand" in args.rows:
            row_hand(args, setting, root, table)
        if "alone" in args.rows:
            row_alone(args, setting, root, table)
        # fused first: a run cut at its time limit has issue 23's figure
        if "fused" in args.rows:
            for k in args.k:
                row_fused(args, setting, root, table, k)
        if "sweep" in args.rows:
            for k in args.k[-1:]:
                row_sweep(args, setting, root, table, f"sweep fuse={k}", [f"fuse={k}"])
        if "workers" in args.rows:
            for w in args.per_gpu:
                extra = [
                    "fuse=1",
                    "hydra.sweeper.n_jobs=auto",
                    f"hydra.sweeper.workers_per_gpu={w}",
                ]
                row_sweep(args, setting, root, table, f"workers {w}", extra)


if __name__ == "__main__":
    main()
