"""How long `sweep.load_results` takes on a large store and on a large study.

1. A store of ``--rows`` trial files (default 10,000), each a full-width row copied from a real
   trial of ``experiments/digits_tradeoff`` with its own key and values, and 8 layers each:
   every file read (as before the index), the first indexed load (reads every file and writes
   the index), a warm load (the index alone), and a warm load after 1% of the rows were
   rewritten.
2. A study of ``--trials`` trials (default 3,000) on SQLite whose trials carry their rows, as a
   sweep's workers leave them: Optuna's own read of the trials (the floor), each row through
   a Parquet write and read (as before), and `load_results(storage=, study=)` now.

    python experiments/benchmarks/load_results.py [--rows 10000] [--trials 3000]

Run it on a quiet machine: it prints seconds and ratios measured side by side in one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import random
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import pyarrow as pa
import pyarrow.parquet as pq

import sweep
from sweep import store
from sweep.search._rows import study_rows

REFERENCE = Path(__file__).resolve().parents[1] / "digits_tradeoff" / "results" / "trials"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=3_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    template = pq.read_table(sorted(REFERENCE.glob("*.parquet"))[0]).to_pylist()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        _write_store(folder, template, args.rows)
        every = _timed(lambda: _every_file(folder), args.repeats)
        first = _timed(lambda: _first_indexed(folder), 1)
        warm = _timed(lambda: sweep.load_results(folder), args.repeats)
        _rewrite(folder, template, args.rows // 100)
        changed = _timed(lambda: sweep.load_results(folder), 1)
        assert len(sweep.load_results(folder)) == args.rows
        print(f"store of {args.rows} rows ({len(template)} columns), seconds:")
        print(f"  every file read (before)     {every:7.2f}")
        print(f"  first load, writes the index {first:7.2f}")
        print(f"  warm load (index)            {warm:7.2f}   {every / warm:6.1f}x faster")
        print(f"  after 1% of rows rewritten   {changed:7.2f}")

        url = f"sqlite:///{tmp}/optuna.db"
        study = _write_study(url, template, args.trials)
        floor = _timed(lambda: study.get_trials(deepcopy=False), args.repeats)
        before = _timed(lambda: _parquet_per_row(url), 1)
        now = _timed(lambda: sweep.load_results(storage=url, study="bench"), args.repeats)
        assert len(sweep.load_results(storage=url, study="bench")) == args.trials
        print(f"study of {args.trials} trials on SQLite, seconds:")
        print(f"  Optuna reads the trials      {floor:7.2f}")
        print(f"  a Parquet trip per row (before) {before:4.2f}")
        print(f"  load_results(storage=...)    {now:7.2f}   {before / now:6.1f}x faster")


def _timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _row(template: dict, i: int) -> dict:
    rng = random.Random(i)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i)
    return {
        **template,
        "trial_key": f"{i:016x}",
        "amount": round(rng.random(), 4),
        "acc_finetuned": rng.random(),
        "sparsity": rng.random(),
        "started_at": start,
    }


def _layers(i: int) -> list[dict]:
    return [
        {
            "layer": f"block{j}.conv",
            "param": "weight",
            "numel": 1000,
            "nonzero": i % 1000,
            "in_scope": True,
            "amount": 0.5,
        }
        for j in range(8)
    ]


def _write_store(folder: Path, template: dict, rows: int) -> None:
    for i in range(rows):
        store.write_trial(folder, _row(template, i), _layers(i))


def _rewrite(folder: Path, template: dict, count: int) -> None:
    for i in range(count):
        store.write_trial(folder, {**_row(template, i), "acc_finetuned": 0.5}, _layers(i))


def _every_file(folder: Path):
    indexed = store._indexed
    store._indexed = store._each_file
    try:
        return sweep.load_results(folder)
    finally:
        store._indexed = indexed


def _first_indexed(folder: Path):
    for segment in (folder / "index").glob("*.parquet"):
        segment.unlink()
    return sweep.load_results(folder)


def _write_study(url: str, template: dict, trials: int) -> optuna.Study:
    study = optuna.create_study(study_name="bench", storage=url)
    distribution = optuna.distributions.FloatDistribution(0.0, 1.0)
    frozen = []
    for i in range(trials):
        row = _row(template, i)
        frozen.append(
            optuna.trial.create_trial(
                params={"amount": row["amount"]},
                distributions={"amount": distribution},
                value=row["acc_finetuned"],
                user_attrs={
                    "row": store.encode_rows([row]),
                    "layers": store.encode_rows(_layers(i)),
                },
            )
        )
    study.add_trials(frozen)
    return study


def _parquet_per_row(url: str) -> int:
    """What reading a study's rows cost before: each trial's row through Parquet and back."""
    tables = []
    for _, rows in study_rows(url, "bench", "row"):
        table = pa.Table.from_pylist([{k: store._scalar(v) for k, v in r.items()} for r in rows])
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        tables.append(pq.read_table(pa.BufferReader(buffer.getvalue())))
    return len(tables)


if __name__ == "__main__":
    main()
