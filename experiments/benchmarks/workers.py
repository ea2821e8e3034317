"""Workers on PostgreSQL: trials per minute for 1, 2, 4, 8 workers, and the cost per trial
outside the trial itself.

A PostgreSQL server is started on 127.0.0.1 (Debian's packages, as the test suite does). For
each worker count, one study of ``--trials`` trials (``search=tradeoff``, the embedded
default with a short finetune) run by that many ``python -m sweep -m`` processes started
together, as a scheduler would start them: each with its own ``store.path`` (the database is the
only shared thing), one shared baseline cache (trained once, before the clock starts) and one
torch thread each. Measured from the study and the rows:

- trials/min: trials over the span from the first trial's start to the last one's end;
- wall: the whole command, process start-up and baseline loading included;
- overhead per trial: the time a worker spends between its trials (asking, sampling, Hydra
  composing the job, telling, storage round trips) plus the trial's time in the study beyond
  the trial's own ``time_total_s`` (the job's set-up), as milliseconds and as a share of the
  trial.

One worker runs ``--pairs`` times each way, alternating (A B A B ...): with Hydra composing
every job from the config files (``hydra.sweeper.reuse_composition=false``, as Hydra's basic
launcher does) and with the sweeper's reused compositions (the default); each row is the
median of its runs, and the ratio of the median overheads is printed.

    python experiments/benchmarks/workers.py [--workers 1 2 4 8] [--trials 32] [--epochs 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).parents[2]))  # tests.postgres
from sweep import load_results
from tests.postgres import postgres_server


def _command(
    url: str, study: str, trials: int, epochs: int, store: Path, baselines: Path, reuse=True
):
    return [
        sys.executable,
        *("-m", "sweep", "-m", "search=tradeoff"),
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra/sweeper/sampler=random",
        f"finetune.epochs={epochs}",
        f"store.path={store}",
        f"store.baselines={baselines}",
        "store.models=none",
        *("device=cpu", "progress=false"),
        f"hydra.sweeper.reuse_composition={str(reuse).lower()}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="workers-"))
    baselines = root / "baselines"
    env = {**os.environ, "SWEEP_THREADS": "1"}
    print(f"{os.cpu_count()} CPU cores, optuna {optuna.__version__}, {args.trials} trials a study")
    header = (
        f"{'workers':>7} {'compose':>9} {'trials/min':>10} {'wall s':>7} {'trial s':>8} "
        f"{'overhead ms':>12}"
    )
    with postgres_server(max_connections=200) as url:
        # the baseline, once, outside the clock
        warm = _command(url, "warm-up", 1, args.epochs, root / "warm", baselines)
        subprocess.run(warm, check=True, capture_output=True, env=env)
        print(header + f" {'overhead %':>10}")
        results: dict[tuple[int, bool], list[tuple[float, ...]]] = {}
        pairs = [(1, False), (1, True)] * args.pairs if 1 in args.workers else []
        runs = pairs + [(n, True) for n in args.workers if n != 1]
        for run, (n, reuse) in enumerate(runs):
            study = f"workers-{n}-{'reuse' if reuse else 'every-job'}-{run}"
            stores = [root / study / f"store-{i}" for i in range(n)]
            start = time.perf_counter()
            procs = [
                subprocess.Popen(
                    _command(url, study, args.trials, args.epochs, store, baselines, reuse),
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for store in stores
            ]
            for p in procs:
                if p.wait() != 0:
                    sys.exit(f"a worker failed:\n{p.stderr.read().decode()[-2000:]}")
            wall = time.perf_counter() - start
            trials = optuna.load_study(study_name=study, storage=url).trials
            rows = pd.concat([load_results(s) for s in stores if (s / "trials").is_dir()])
            own = rows.set_index("optuna.trial")["time_total_s"]
            span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
            per_min = len(trials) / span.total_seconds() * 60
            # between a worker's trials, and inside each trial beyond the trial's own time
            gaps = []
            by_worker: dict[int, list] = {}
            for t in trials:
                by_worker.setdefault(t.user_attrs["worker"]["pid"], []).append(t)
            for mine in by_worker.values():
                mine.sort(key=lambda t: t.datetime_start)
                for a, b in itertools.pairwise(mine):
                    gaps.append((b.datetime_start - a.datetime_complete).total_seconds())
            inside = [
                (t.datetime_complete - t.datetime_start).total_seconds() - own[t.number]
                for t in trials
            ]
            overhead = (statistics.median(gaps) if gaps else 0.0) + statistics.median(inside)
            trial_s = statistics.median(own)
            results.setdefault((n, reuse), []).append((per_min, wall, trial_s, overhead))
        for (n, reuse), measured in sorted(results.items()):
            per_min, wall, trial_s, overhead = (
                statistics.median(m) for m in zip(*measured, strict=True)
            )
            compose = "reused" if reuse else "every job"
            print(
                f"{n:>7} {compose:>9} {per_min:>10.1f} {wall:>7.1f} {trial_s:>8.2f} "
                f"{overhead * 1e3:>12.0f} {overhead / trial_s:>10.0%}"
            )
        if (1, False) in results:
            every, reused = (statistics.median(m[3] for m in results[1, r]) for r in (False, True))
            print(
                f"overhead per trial at 1 worker: {every * 1e3:.0f} ms composing every job, "
                f"{reused * 1e3:.0f} ms reusing compositions ({every / reused:.2f}x)"
            )


if __name__ == "__main__":
    main()
