"""Latency you can trust: dense and pruned timed in the same moments, medians with intervals,
noisy rows said so, and no latency where nobody asked for it."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from sweep.metrics import median_interval, paired_latency
from sweep.store import load_results
from sweep.trial import run_trial

COLUMNS = [
    f"{name}{end}"
    for name in ("latency_ms_dense", "latency_ms", "speedup")
    for end in ("", "_low", "_high")
]


def test_the_median_interval_is_the_binomial_order_statistics():
    assert median_interval(list(range(1, 101))) == (40, 50.5, 61)
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)  # few values: the extremes
    assert median_interval(list(range(1, 101)), confidence=0.5)[::2] == (46, 55)


def test_a_model_against_itself_reads_a_speedup_whose_interval_holds_one():
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
    timed = paired_latency(
        net,
        net,
        torch.zeros(16, 64),
        warmup=2,
        repeats=30,
        max_repeats=30,
        width=10.0,
        confidence=0.999,
    )
    low, speedup, high = timed.speedup
    assert low <= 1.0 <= high and low <= speedup <= high
    assert timed.rounds == 30
    assert timed.dense_ms[0] <= timed.dense_ms[1] <= timed.dense_ms[2]


def test_rounds_stop_once_the_interval_is_narrow_enough():
    net = nn.Linear(8, 8)
    batch = torch.zeros(4, 8)
    wide = paired_latency(net, net, batch, warmup=0, repeats=5, max_repeats=500, width=100.0)
    assert wide.rounds == 5 and not wide.noisy
    narrow = paired_latency(net, net, batch, warmup=0, repeats=5, max_repeats=12, width=1e-9)
    assert narrow.rounds == 12 and narrow.noisy


def test_a_trial_times_nothing_unless_asked(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("amount=0.5"))
    assert all(row.get(c) is None for c in [*COLUMNS, "latency_rounds", "latency_noisy"])
    df = load_results(tmp_path / "results")
    assert df.reindex(columns=COLUMNS).isna().all().all()


def test_a_masked_trial_reads_a_speedup_of_one_within_its_interval(cfg_factory):
    row = run_trial(
        cfg_factory(
            "amount=0.5",
            "latency.measure=true",
            "latency.repeats=20",
            "latency.max_repeats=60",
            "latency.confidence=0.999",
        )
    )
    assert row["speedup_low"] <= 1.0 <= row["speedup_high"]
    for name in ("latency_ms_dense", "latency_ms", "speedup"):
        assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"]
    assert 20 <= row["latency_rounds"] <= 60
    assert row["latency_noisy"] == (row["speedup_high"] - row["speedup_low"] > 0.1 * row["speedup"])


def test_a_noisy_row_says_so(cfg_factory, caplog):
    caplog.set_level(logging.WARNING, logger="sweep")
    row = run_trial(
        cfg_factory(
            "latency.measure=true",
            "latency.repeats=3",
            "latency.max_repeats=3",
            "latency.width=1e-9",
        )
    )
    assert row["latency_noisy"] is True and row["latency_rounds"] == 3
    (warning,) = [m for m in caplog.messages if m.startswith("latency is noisy")]
    assert "after 3 rounds (wider than latency.width=1e-09 of it)" in warning


def test_compacted_trials_are_timed_by_default(cfg_factory):
    row = run_trial(cfg_factory("method=ln_structured", "amount=0.5", "compact=true"))
    assert row["compacted"] is True
    assert all(isinstance(row[c], float) and math.isfinite(row[c]) for c in COLUMNS)


def test_measure_takes_auto_true_or_false(cfg_factory):
    from sweep.config import check_values
    from sweep.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"latency.measure='always' is not valid; accepted: auto \| true \| false",
    ):
        check_values(cfg_factory("latency.measure=always"))


def test_more_repeats_than_their_cap_is_refused(cfg_factory):
    """latency.repeats=20 with max_repeats=10 ran 20 rounds, the cap read as nothing."""
    from sweep.config import check_values
    from sweep.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        check_values(cfg_factory("latency.repeats=20", "latency.max_repeats=10"))
    assert str(refused.value) == (
        "latency.repeats=20 is above latency.max_repeats=10: the rounds run go from repeats up "
        "to max_repeats; accepted: repeats <= max_repeats"
    )
    check_values(cfg_factory("latency.repeats=10", "latency.max_repeats=10"))
