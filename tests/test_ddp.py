"""Trials over several processes (distributed.nproc, torchrun): the same masks and results as one
process, a rank that dies fails the trial with its reason, bad settings refused before anything
is written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import optuna
import pytest
import torch
from optuna.trial import TrialState

from sweep import distributed, load_layers, load_model, load_results
from sweep.data import RandomCropFlip, Split, Streamed
from sweep.errors import ConfigError
from sweep.fused import fusion_key
from sweep.search._study import check_gpu_count
from sweep.trial import run_trial
from tests.conftest import FAST, make_cfg, run_cli

# What N ranks may change against one process: BatchNorm in training mode normalises each rank's
# part of a batch by the part's own statistics, and the running statistics are the ranks'
# average; the rest is the order of float sums. Dense and pruned accuracies are exact.
ACCURACY_TOLERANCE = 0.03


def _parts(split, batch_size, world, **kwargs):
    """Each global batch as the ranks' parts, joined in rank order."""
    per_rank = [
        list(split.shard(r, world).batches(batch_size, **kwargs, generator=_gen()))
        for r in range(world)
    ]
    return [
        (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        for parts in zip(*per_rank, strict=True)
    ]


def _gen():
    return torch.Generator().manual_seed(3)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_parts_make_up_the_batches_of_one_process(shuffle, world):
    # 11 examples in batches of 6: the last batch has 5, one rank of 3... parts of 1 or 2
    x = torch.arange(11 * 16, dtype=torch.float32).reshape(11, 1, 4, 4)
    y = torch.arange(11)
    augmented = Split(x, y, augment=RandomCropFlip(padding=1))
    streamed = Streamed(
        torch.utils.data.TensorDataset(x, y),
        num_workers=0,
        pin_memory=False,
        persistent_workers=False,
    )
    for split in (Split(x, y), augmented, streamed):
        whole = list(split.batches(6, shuffle=shuffle, generator=_gen()))
        joined = _parts(split, 6, world, shuffle=shuffle)
        assert len(joined) == len(whole) == 2
        for (xa, ya), (xb, yb) in zip(whole, joined, strict=True):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_an_empty_part_of_the_last_batch_is_still_a_batch():
    # 5 examples, batches of 4: the last batch has 1 example, rank 0 of 2 gets none of it
    x, y = torch.zeros(5, 1, 2, 2), torch.arange(5)
    streamed = Streamed(
        torch.utils.data.TensorDataset(x, y),
        num_workers=0,
        pin_memory=False,
        persistent_workers=False,
    )
    for split in (Split(x, y), streamed):
        assert [b[1].tolist() for b in split.shard(0, 2).batches(4)] == [[0, 1], []]
        assert [b[1].tolist() for b in split.shard(1, 2).batches(4)] == [[2, 3], [4]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["distributed.nproc=0"],
            "distributed.nproc=0 is out of range; accepted: an int >= 1 (1: one process)",
        ),
        (
            ["distributed.nproc=2", "finetune.batch_size=33"],
            "finetune.batch_size=33 is not divisible by the 2 ranks (the global batch is split "
            "evenly); accepted: a multiple of 2",
        ),
        (
            ["distributed.timeout_s=0"],
            "distributed.timeout_s=0 is out of range; accepted: an int >= 1",
        ),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, overrides, message):
    cfg = make_cfg(tmp_path / "results", *overrides)
    with pytest.raises(ConfigError) as e:
        run_trial(cfg)
    assert str(e.value) == message
    assert not (tmp_path / "results").exists()


def test_a_count_that_is_not_an_int_is_refused_on_the_command_line(tmp_path):
    result = run_cli("distributed.nproc=two", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: distributed.nproc='two' is not valid; accepted: an int >= 1 (1: one process)"
    )
    assert list(tmp_path.iterdir()) == []


def _gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.skipif(torch.cuda.is_available(), reason="counts the GPUs this machine lacks")
def test_more_gpus_than_are_visible_are_refused(tmp_path, monkeypatch):
    _gpus(monkeypatch, 2)
    cfg = make_cfg(tmp_path / "results", "distributed.nproc=2", "device=cuda:1")
    with pytest.raises(ConfigError) as e:
        run_trial(cfg)
    assert str(e.value) == (
        "distributed.nproc=2 with device=cuda:1 needs GPUs cuda:2 to cuda:3 and 2 are "
        "visible; accepted: nproc x (N+1) <= 2 for device=cuda:N (N=0 for cuda and auto)"
    )
    assert not (tmp_path / "results").exists()
    check_gpu_count(1, make_cfg(tmp_path / "results", "distributed.nproc=2", "device=cuda"))
    with pytest.raises(ConfigError) as e:
        check_gpu_count(2, make_cfg(tmp_path / "results", "distributed.nproc=2", "device=cuda"))
    assert str(e.value) == (
        "hydra.sweeper.n_jobs=2 workers x distributed.nproc=2 need 4 GPUs and 2 are visible; "
        "accepted: n_jobs x nproc <= 2"
    )
    # on the CPU there is nothing to count
    check_gpu_count(4, make_cfg(tmp_path / "results", "distributed.nproc=2", "device=cpu"))


def test_torchruns_count_wins_and_a_different_nproc_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.world_size(make_cfg(tmp_path, "distributed.nproc=1")) == 2
    with pytest.raises(ConfigError) as e:
        run_trial(make_cfg(tmp_path / "results", "distributed.nproc=3"))
    assert str(e.value) == (
        "distributed.nproc=3 but torchrun started 2 processes (WORLD_SIZE); accepted: "
        "distributed.nproc=2, or 1 (torchrun's count wins)"
    )


def test_ranks_are_not_fused(tmp_path):
    key, reason = fusion_key(make_cfg(tmp_path, "distributed.nproc=2", "fuse=4"))
    assert (key, reason) == (None, "distributed.nproc=2: the trial runs over its own ranks")


def test_world_size_is_not_part_of_the_trial_key(tmp_path):
    from sweep.plan import prepare

    one = prepare(make_cfg(tmp_path, "distributed.nproc=1"), check_store=False)
    two = prepare(make_cfg(tmp_path, "distributed.nproc=2"), check_store=False)
    assert one.key == two.key


def _masks(store, key):
    model = load_model(key, store)
    return {k: (v == 0) for k, v in model.state_dict().items() if k.endswith("weight")}


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["one_shot", "agp"])
def test_two_gloo_ranks_give_the_masks_and_results_of_one_process(tmp_path, schedule):
    shared = [f"store.baselines={tmp_path / 'baselines'}", f"schedule={schedule}"]
    one = run_trial(make_cfg(tmp_path / "one", *shared, "finetune.epochs=2"))
    two = run_trial(make_cfg(tmp_path / "two", *shared, "finetune.epochs=2", "distributed.nproc=2"))
    assert (one["status"], two["status"]) == ("complete", "complete")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["trial_key"] == two["trial_key"]
    assert two["sparsity"] == one["sparsity"] == 0.5
    # the same baseline, evaluated exactly over the ranks' parts
    assert two["acc_dense"] == one["acc_dense"]
    assert two["acc_pruned"] == one["acc_pruned"]
    for stage in ("recalibrated", "finetuned"):
        assert abs(two[f"acc_{stage}"] - one[f"acc_{stage}"]) <= ACCURACY_TOLERANCE
    layers = [
        load_layers(tmp_path / s).drop(columns=["row_id"], errors="ignore") for s in ("one", "two")
    ]
    assert layers[0].drop(columns="trial_key").equals(layers[1].drop(columns="trial_key"))
    assert len(load_results(tmp_path / "two")) == 1  # rank 1 wrote no row
    if schedule == "one_shot":  # masks fixed before finetuning: exactly those of one process
        a, b = (
            _masks(tmp_path / "one", one["trial_key"]),
            _masks(tmp_path / "two", two["trial_key"]),
        )
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


_FAULTY = """
import os
import signal

import torch
from torch import nn


class Faulty(nn.Module):
    # rank 1 of a DDP trial fails when it first trains
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x):
        if self.training and os.environ.get("RANK") == "1":
            if os.environ["FAULT"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("rank 1 broke")
        return self.classifier(torch.relu(self.conv(x)).mean((2, 3)))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("raise", "rank 1 failed: ValueError: rank 1 broke"),
        ("kill", "rank 1 died: killed by SIGKILL"),
    ],
)
def test_a_rank_that_dies_fails_the_trial_with_its_reason(tmp_path, fault, reason):
    (tmp_path / "faulty.py").write_text(textwrap.dedent(_FAULTY))
    model = ["model._target_=faulty.Faulty", "model.name=faulty", "~model.width"]
    # run_cli's subprocess timeout (300 s) ends the test should the trial hang
    result = run_cli(
        *FAST,
        *model,
        "distributed.nproc=2",
        "distributed.timeout_s=120",
        cwd=tmp_path,
        env={"FAULT": fault},
    )
    assert result.returncode == 1, result.stderr
    [row] = load_results(tmp_path / "results").to_dict("records")
    assert (row["status"], row["error"], row["world_size"]) == ("failed", reason, 2)


@pytest.mark.slow
def test_a_sweeps_trial_whose_rank_dies_is_failed_not_left_running(tmp_path):
    (tmp_path / "faulty.py").write_text(textwrap.dedent(_FAULTY))
    model = ["model._target_=faulty.Faulty", "model.name=faulty", "~model.width"]
    result = run_cli(
        "-m",
        "search=tradeoff",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.max_failures=5",
        *FAST,
        *model,
        "distributed.nproc=2",
        "distributed.timeout_s=120",
        cwd=tmp_path,
        env={"FAULT": "kill"},
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(
        study_name="tradeoff", storage=f"sqlite:///{tmp_path}/results/optuna.db"
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    [row] = load_results(tmp_path / "results").to_dict("records")
    assert row["error"] == "rank 1 died: killed by SIGKILL"


@pytest.mark.slow
def test_torchrun_ranks_run_one_trial_and_rank_0_writes_it(tmp_path):
    args = [*FAST, f"store.path={tmp_path / 'results'}", "hydra.run.dir=run"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    command += ["-m", "sweep", *args]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    [row] = load_results(tmp_path / "results").to_dict("records")
    assert (row["status"], row["world_size"], row["distributed.nproc"]) == ("complete", 2, 1)
    # one summary line: rank 0's
    assert result.stdout.count("[trial ") == 1, result.stdout
    alone = run_trial(
        make_cfg(tmp_path / "alone", f"store.baselines={tmp_path / 'results/baselines'}")
    )
    assert row["acc_dense"] == alone["acc_dense"]
    assert abs(row["acc_finetuned"] - alone["acc_finetuned"]) <= ACCURACY_TOLERANCE


@pytest.mark.parametrize("sweep", [["amount=0.1,0.2"], ["search=tradeoff"]], ids=["grid", "optuna"])
def test_a_sweep_under_torchrun_is_refused_before_anything_is_written(tmp_path, sweep):
    """Every rank ran its own grid and waited on the others' collectives: a hang of
    distributed.timeout_s (30 minutes); a study was refused only once each trial started."""
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    result = run_cli("-m", *sweep, "progress=false", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: python -m sweep -m under torchrun (2 processes): every rank would run a sweep of "
        "its own; accepted: python -m sweep -m ... distributed.nproc=2 (each trial starts its "
        "ranks), or torchrun ... -m sweep for one trial"
    ]
    assert list(tmp_path.iterdir()) == []
