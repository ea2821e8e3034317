"""What a schedule costs: finetune time of each pruning protocol relative to one-shot.

One trial per protocol (one-shot, iterative, AGP, lottery-ticket rewinding to init and to epoch
1) on the embedded default (digits, small_cnn, the default finetune budget), all from the same
cached baseline, run round-robin so that every protocol sees the same machine state; after one
warm-up round, the median of ``--rounds`` rounds of ``time_finetune_s`` and its ratio to
one-shot's. (experiments/digits_schedules runs its protocols one sweep after another, so its
times drift with the process and are not a comparison.)

    python experiments/benchmarks/schedules.py [--rounds 5] [--method global_unstructured]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from hydra import compose, initialize_config_module

from sweep.trial import run_trial

PROTOCOLS = {  # how experiments/digits_schedules names them -> overrides
    "one-shot": ["schedule=one_shot"],
    "iterative": ["schedule=iterative"],
    "AGP": ["schedule=agp"],
    "LTH one-shot, rewind to init": ["schedule=one_shot", "rewind=init"],
    "LTH iterative, rewind to epoch 1": ["schedule=iterative", "rewind=epoch:1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--method", default="global_unstructured")
    parser.add_argument("--amount", type=float, default=0.9)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    times: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    with (
        tempfile.TemporaryDirectory() as store,
        initialize_config_module("sweep.conf", version_base="1.3"),
    ):
        common = [
            f"method={args.method}",
            f"amount={args.amount}",
            "device=cpu",
            "progress=false",
            f"store.path={store}",
        ]
        configs = {name: compose("config", [*common, *extra]) for name, extra in PROTOCOLS.items()}
        for round_ in range(args.rounds + 1):  # round 0 trains the baseline and warms up
            for name, cfg in configs.items():
                row = run_trial(cfg)
                if round_:
                    times[name].append(row["time_finetune_s"])
    base = statistics.median(times["one-shot"])
    print(f"{'protocol':34} {'finetune s':>10} {'ratio':>6}   ({args.rounds} rounds, median)")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:34} {median:10.2f} {median / base:6.2f}")


if __name__ == "__main__":
    main()
