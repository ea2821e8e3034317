"""The committed reference experiment: complete, pinned, and reproduced by a rerun.

A rerun in the environment the rows record (torch, torchvision, numpy, CPU instruction set) must
give every metric bit for bit. Any other environment rounds differently somewhere in 20 epochs
of pretraining and ends in a different, equally good model, so there the trial key and config
must still match exactly, the counts a structured method fixes must match exactly, and the
values must lie within a tolerance derived below.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from sweep import load_results
from sweep.hashing import HOW_NOT_WHAT, KEYED_UNLESS, NOT_IN_KEY

ROOT = Path(__file__).parents[1]
REFERENCE = ROOT / "experiments" / "digits_tradeoff"
CONSTRAINTS = ROOT / "experiments" / "constraints.txt"

# What decides bit-for-bit equality of a CPU run.
ENVIRONMENT = ("version.torch", "version.torchvision", "version.numpy", "version.cpu_capability")
# Fixed by the amount for a layer-wise structured method (how many channels of each layer go),
# whatever values the weights have.
COUNTS = ("sparsity", "params", "params_nonzero", "flops_dense", "flops")
# The model files' sizes: the counts fix them, but torch.save's container changes by release
# (torch 2.4 wrote the dense one 333 bytes smaller than 2.14).
SIZES = ("size_bytes_dense", "size_bytes")
ACCURACIES = ("acc_dense", "acc_pruned", "acc_recalibrated", "acc_finetuned")
LOSSES = ("loss_finetuned",)
# Columns that say where a run wrote or when, not what it computed.
NOT_CONFIG = ("store.", "version.", "optuna.", "progress")

# The trial rerun: exactly experiments/digits_tradeoff/run.sh's settings for that one trial. A
# layer-wise structured method, so its counts are comparable across environments too (global
# pruning's per-layer split moves with the weights' values).
TRIAL = {"method": "ln_structured", "amount": 0.5, "seed": 1}


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    return load_results(REFERENCE / "results")


def test_reference_experiment_is_complete(committed):
    assert len(committed) == 4 * 11 * 3 and (committed.status == "complete").all()
    assert committed.groupby(["method", "amount", "seed"]).size().eq(1).all()
    assert len(committed[list(ENVIRONMENT)].drop_duplicates()) == 1, "one environment per store"


def test_constraints_pin_the_environment_the_rows_record(committed):
    pins = dict(
        re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
        for line in CONSTRAINTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    recorded = committed.iloc[0]
    for package in ("torch", "torchvision", "numpy"):
        # torch reports its build as a local version (2.14.1+cu130); pip pins the release
        assert pins[package] == recorded[f"version.{package}"].split("+")[0], package


def _value(stored):
    # lists are stored as JSON text; a missing value is None
    if isinstance(stored, str) and stored.startswith("["):
        return json.loads(stored)
    return None if pd.isna(stored) else stored


def test_reference_trial_reproduces(committed, tmp_path, capsys):
    from sweep.trial import run_trial

    cell = committed[(committed.method == TRIAL["method"]) & (committed.amount == TRIAL["amount"])]
    expected = cell[cell.seed == TRIAL["seed"]].iloc[0]
    with initialize_config_module("sweep.conf", version_base="1.3"):
        cfg = compose(
            "config",
            [
                *(f"{k}={v}" for k, v in TRIAL.items()),
                "device=cpu",
                "progress=false",
                f"store.path={tmp_path}",
            ],
        )
    run_trial(cfg)
    got = load_results(tmp_path).iloc[0]

    assert got.trial_key == expected.trial_key
    assert got.baseline_key == expected.baseline_key  # settings added since leave keys alone
    config = [c for c in got.index if "." in c and not c.startswith(NOT_CONFIG)]
    # settings added since the reference ran hold the values that behave as before, the ones
    # left out of keys (sweep.hashing.KEYED_UNLESS); those never in a key (HOW_NOT_WHAT) may
    # hold any value, as do the groups left out of keys (NOT_IN_KEY: how a trial runs, such as
    # its distributed ranks)
    free = {f"{group}.{key}" for group, key in HOW_NOT_WHAT}
    added = [
        c
        for c in config
        if c not in expected.index and c not in free and c.split(".")[0] not in NOT_IN_KEY
    ]
    before = {f"{group}.{key}": value for (group, key), value in KEYED_UNLESS.items()}
    assert {c: _value(got[c]) for c in added} == {
        c: before.get(c, "not 'as before'") for c in added
    }
    config = [c for c in config if c not in added and c in expected.index]
    assert got[config].to_dict() == expected[config].to_dict()
    others = expected.index.difference(config)
    assert not [
        c for c in others if "." in c and not c.startswith(NOT_CONFIG) and pd.notna(expected[c])
    ], "config keys the rerun no longer has"

    same = all(got.get(c) == expected.get(c) for c in ENVIRONMENT)
    environment = ", ".join(f"{c.removeprefix('version.')} {got[c]}" for c in ENVIRONMENT)
    for column in COUNTS:
        assert got[column] == expected[column], column
    exact = (*COUNTS, *SIZES, *ACCURACIES, *LOSSES)
    if same and all(got[c] == expected[c] for c in exact):
        case = f"bit for bit: the committed environment ({environment})"
    else:
        # the recorded versions and instruction set do not pin everything that moves a float
        # sum: the CPU model and the thread count (oneDNN's blocking) are not in the rows, and
        # the same versions on another CPU of the same instruction set differ in the last bits
        recorded = ", ".join(str(expected.get(c, "unrecorded")) for c in ENVIRONMENT)
        case = (
            f"within tolerance: {environment}, committed {recorded}"
            if not same
            else f"within tolerance: the committed versions ({environment}), another CPU or threads"
        )
        for column in SIZES:
            assert got[column] == pytest.approx(expected[column], rel=0.01), column
        n_test = _test_size(cfg)
        for column in (*ACCURACIES, *LOSSES):
            tol = _tolerance(cell[column], n_test if column in ACCURACIES else None)
            assert abs(got[column] - expected[column]) <= tol, (
                f"{column}: {got[column]:.4f} vs committed {expected[column]:.4f}, "
                f"tolerance {tol:.4f}"
            )
    with capsys.disabled():
        print(f"\nreference trial {TRIAL} reproduced {case}")


def _tolerance(seeds: pd.Series, n_test: int | None) -> float:
    """Four standard deviations of the difference between two equally good runs.

    A rerun in another environment is another draw of the same training procedure, as a rerun
    with another seed is; the committed row is one draw too, so their difference has sqrt(2)
    times one draw's spread sigma, and 4 of those make a false alarm rarer than 1 in 10,000.
    sigma is the larger of the spread across the committed seeds of this setting and, for an
    accuracy, the binomial standard error of one accuracy on ``n_test`` images (three seeds
    estimate a spread poorly; the test set's size bounds it from below).
    """
    sigma = float(seeds.std(ddof=1))
    if n_test is not None:
        p = float(seeds.mean())
        sigma = max(sigma, math.sqrt(p * (1 - p) / n_test))
    return 4 * math.sqrt(2) * sigma


def _test_size(cfg) -> int:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(cfg.dataset, resolve=True)
    spec.pop("name")
    return len(instantiate(spec).test)
