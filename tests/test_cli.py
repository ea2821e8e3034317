"""The command line, run as a user runs it: a subprocess in a fresh folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sweep import load_layers, load_results
from sweep.cli import check_overrides
from tests.conftest import FAST, run_cli, write_cifar10


def test_default_trial_then_another_method_reuses_the_baseline(tmp_path):
    first = run_cli(cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    [summary] = first.stdout.splitlines()  # one line per trial; the details go to the log
    assert summary.startswith(
        "l1_unstructured amount=0.5: complete, sparsity 0.500, "
        "accuracy dense -> pruned -> recalibrated -> finetuned 0."
    )

    second = run_cli(
        "method=ln_structured", "amount=0.5", "recalibrate.batches=0", *FAST[-1:], cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr
    [summary] = second.stdout.splitlines()
    assert summary.startswith("ln_structured amount=0.5: complete, sparsity 0.500")
    assert "accuracy dense -> pruned -> finetuned 0." in summary  # nothing recalibrated
    assert second.stderr == ""  # progress=false: no bars either
    first_log, second_log = (p.read_text() for p in sorted(tmp_path.glob("outputs/*/*/sweep.log")))
    assert "overrides: (none)" in first_log and "dense baseline" in first_log
    assert "trained in" in first_log and "loaded from results/baselines" in second_log

    df = load_results(tmp_path / "results")
    assert df.method.tolist() == ["l1_unstructured", "ln_structured"]
    assert df.baseline_trained.tolist() == [True, False]
    assert (df.status == "complete").all() and df.acc_dense.iloc[0] > 0.9

    shown = subprocess.run(
        [sys.executable, "-c", "import sweep; print(sweep.load_results()[['method', 'sparsity']])"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.splitlines() == [
        "            method  sparsity",
        "0  l1_unstructured       0.5",
        "1    ln_structured       0.5",
    ]


TRIAL_ROW = {
    "method": "l1_unstructured",
    "amount": 0.5,
    "status": "complete",
    "sparsity": 0.5,
    "acc_dense": 0.9,
    "acc_pruned": 0.8,
    "acc_finetuned": 0.85,
    "time_total_s": 1.0,
    "trial_key": "k",
}


def test_the_trial_line_names_per_layer_amounts():
    from sweep.cli import summary

    row = {**TRIAL_ROW, "amount": 0.0, "scope.amounts": None}
    few = summary({**row, "scope.amounts.block2.conv": 0.52137, "scope.amounts.Linear": 0.1})
    assert few.startswith(
        "l1_unstructured amount=0, scope.amounts block2.conv=0.5214, Linear=0.1: complete"
    )
    many = summary({**row, **{f"scope.amounts.layer{i}": i / 10 for i in range(1, 6)}})
    assert many.startswith("l1_unstructured amount=0, 5 scope.amounts from 0.1 to 0.5: complete")
    assert summary(row).startswith("l1_unstructured amount=0: complete")
    defaults = {**row, "method.importance": "magnitude", "schedule": "one_shot", "rewind": "none"}
    assert summary(defaults).startswith("l1_unstructured amount=0: complete")
    other = {**row, "method.importance": "taylor", "schedule": "agp", "rewind": "epoch:2"}
    assert summary(other).startswith(
        "l1_unstructured amount=0, importance=taylor, schedule=agp, rewind=epoch:2: complete"
    )


def test_the_trial_line_gives_a_measured_speedup_with_its_interval():
    from sweep.cli import summary

    row = {**TRIAL_ROW, "store_file": "f"}
    unmeasured = "accuracy dense -> pruned -> finetuned 0.900 -> 0.800 -> 0.850, 1.0 s [trial k: f]"
    assert summary(row).endswith(unmeasured)
    assert summary({**row, "speedup": float("nan"), "latency_noisy": None}).endswith(unmeasured)
    timed = {**row, "speedup": 1.934, "speedup_low": 1.881, "speedup_high": 1.9702}
    assert summary({**timed, "latency_noisy": False}).endswith(
        "0.850, speedup 1.93 [1.88, 1.97], 1.0 s [trial k: f]"
    )
    assert summary({**timed, "latency_noisy": True}).endswith(
        "0.850, speedup 1.93 [1.88, 1.97] noisy, 1.0 s [trial k: f]"
    )
    # a row stored before the interval was (served again by skip_completed): a KeyError
    old = {k: v for k, v in timed.items() if k not in ("speedup_low", "speedup_high")}
    assert summary(old).endswith("0.850, speedup 1.93, 1.0 s [trial k: f]")
    assert summary({**timed, "latency_noisy": np.bool_(True)}).endswith(
        "[1.88, 1.97] noisy, 1.0 s [trial k: f]"
    )
    assert summary({**timed, "latency_noisy": float("nan")}).endswith(
        "[1.88, 1.97], 1.0 s [trial k: f]"
    )


def test_a_grid_cleans_what_killed_writers_left_in_its_store(tmp_path):
    """Only an Optuna sweep did: after a killed grid, orphan models stayed for good."""
    import os
    import time

    models = tmp_path / "results" / "models"
    models.mkdir(parents=True)
    (tmp_path / "results" / "trials").mkdir()
    orphan, mine = models / "0123456789abcdef.pt", models / "best.pt"
    for file in (orphan, mine):
        file.write_bytes(b"x")
        os.utime(file, (time.time() - 7200, time.time() - 7200))
    result = run_cli("-m", "amount=0.3", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not orphan.exists() and mine.exists()


def test_users_own_method_runs_without_editing_the_package(tmp_path):
    shutil.copy(Path(__file__).parent / "custom_methods.py", tmp_path / "my_methods.py")
    result = run_cli(
        "method._target_=my_methods.EveryOther", "method.name=every_other", *FAST, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    layers = load_layers(tmp_path / "results")
    assert (layers.numel - layers.nonzero).tolist() == [(n + 1) // 2 for n in layers.numel]
    assert load_results(tmp_path / "results").method.tolist() == ["every_other"]


@pytest.mark.slow
def test_torchvision_model_and_dataset(tmp_path):
    write_cifar10(tmp_path / "cifar")
    result = run_cli(
        "model=resnet18",
        "dataset=cifar10",
        "dataset.root=cifar",
        "dataset.allow_unpickling_unverified_files=true",
        "method=global_unstructured",
        "amount=0.8",
        "device=cpu",
        "pretrain.epochs=1",
        "finetune.epochs=1",
        "latency.batch_size=2",
        "latency.repeats=1",
        "progress=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    row = load_results(tmp_path / "results").iloc[0]
    assert (row.model, row.dataset, row.method, row.device) == (
        "resnet18",
        "cifar10",
        "global_unstructured",
        "cpu",
    )
    assert abs(row.sparsity - 0.8) < 1e-6 and row.params == 11173962


# Every input the README promises to check before anything is trained or written: the
# command-line arguments, and the start of the one line printed. Checked in process through
# check_overrides, the code `python -m sweep` runs first (a subprocess costs seconds each);
# test_bad_input_end_to_end runs a few through the real command.
BAD_INPUT = [
    (
        ["scope.layers=[]"],
        "scope.layers is empty; accepted: torch.nn module type names such as Conv2d, Linear",
    ),
    (
        ["method=ln_structured", "method.n=abc"],
        "method.n='abc' is not a norm; accepted: a number p >= 0 (the p-norm; 0 counts non-zeros), inf, 'fro' or 'nuc'",
    ),
    (
        ["method=ln_structured", "method.n=-1"],
        "method.n=-1 is not a norm; accepted: a number p >= 0 (the p-norm; 0 counts non-zeros), inf, 'fro' or 'nuc'",
    ),
    (["seed=-1"], "seed=-1 is out of range; accepted: an int in [0, 2**63)"),
    (
        ["method=ln_structured", "scope.layers=[BatchNorm2d]"],
        "method ln_structured is structured and needs weights of 2 or more dims; layer 'block1.bn'",
    ),
    (
        ["method=global_unstructured", "amount=30000"],
        "amount=30000 is larger than all layers in scope (23824 prunable units); accepted: an int up to 23824 or a float in [0, 1)",
    ),
    (
        ["method=foo"],
        "method='foo' is unknown; accepted: global_unstructured, l1_unstructured, ln_structured, nm, none, random_structured, random_unstructured",
    ),
    (
        ["model=bar"],
        "model='bar' is unknown; accepted: lenet, mlp, resnet18, small_cnn, torchvision, vgg11",
    ),
    (
        ["dataset=imagenet"],
        "dataset='imagenet' is unknown; accepted: cifar10, custom, digits, fashion_mnist, image_folder, mnist, synthetic",
    ),
    (
        ["amount=-0.5"],
        "amount=-0.5 is outside [0, 1); accepted: a float in [0, 1) (a fraction) or an int >= 0 (a count)",
    ),
    (["amount=1.0"], "amount=1.0 is outside [0, 1)"),
    (["amount=abc"], "amount='abc' is not valid; accepted: a number: a float in [0, 1) or an int"),
    (
        ["amount=145"],
        "amount=145 is larger than layer 'block1.conv' (144 prunable units); accepted: an int up to 144",
    ),
    (
        ["amout=0.5"],
        "amout is not a key in the config; accepted: amount, channels_last, compact, dataset, device, distributed, finetune, fuse, importance, latency, method, model, optuna, pretrain, progress, recalibrate, rewind, rewind_weights, schedule, scope, seed, skip_completed, store, tag",
    ),
    (
        ["finetune.epoch=1"],
        "finetune.epoch is not a key of finetune; accepted: amp, batch_size, epochs, label_smoothing, lr, momentum, optimizer, scheduler, step_gamma, step_milestones, warmup_epochs, weight_decay",
    ),
    (
        ["model.widht=8"],
        "model.widht is not a key of model; accepted: _target_, checkpoint, name, width",
    ),
    (
        [
            "-m",
            "search=accuracy_at_sparsity",
            "hydra.sweeper.params={method: {choices: [l1_unstructured]}, amount: {choices: [0.5]}}",
        ],
        "hydra.sweeper.params={method: {choices: [l1_unstructured]}, amount: {choices: [0.5]}}: "
        "hydra.sweeper.params.amount.choices is not valid (Key 'choices' is not in struct): a "
        "mapping merges into the preset's amount rather than replacing it; accepted: "
        "amount=choice(a,b) or amount=interval(low,high) on the command line, which replace it",
    ),
    (
        ["-m", "search=tradeoff", "hydra.sweeper.n_trial=5"],
        "hydra.sweeper.n_trial is not a key of hydra.sweeper; accepted: _target_, allow_repeats, "
        "directions, grace_period, heartbeat_interval, layerwise, max_failures, n_jobs, n_trials,",
    ),
    (
        ["-m", "hydra.sweeper.n_trials=5"],
        "hydra.sweeper.n_trials is not a key of hydra.sweeper; accepted: _target_, "
        "max_batch_size, params (the keys of an Optuna search, n_trials, storage..., need -m "
        "search=NAME)",
    ),
    (
        ["hydra.job.nme=x"],
        "hydra.job.nme is not a key of hydra.job; accepted: chdir, config, config_name,",
    ),
    (
        ["method=ln_structured", "method.dim=2"],
        "method.dim=2 does not exist for layer 'classifier' (weight of shape (10, 64)); accepted: an int from -2 to 1",
    ),
    (["finetune.batch_size=0"], "finetune.batch_size=0 is out of range; accepted: an int >= 1"),
    (["pretrain.batch_size=0"], "pretrain.batch_size=0 is out of range; accepted: an int >= 1"),
    (["finetune.lr=-1"], "finetune.lr=-1.0 is out of range; accepted: a number > 0"),
    (["finetune.epochs=-1"], "finetune.epochs=-1 is out of range; accepted: an int >= 0"),
    (
        ["finetune.momentum=1.5"],
        "finetune.momentum=1.5 is out of range; accepted: a number in [0, 1)",
    ),
    (["finetune.amp=maybe"], "finetune.amp='maybe' is not valid; accepted: true or false"),
    (
        ["finetune.optimizer=adagradx"],
        "finetune.optimizer='adagradx' is unknown; accepted: sgd | adam | adamw",
    ),
    (
        ["pretrain.optimizer=sgdd"],
        "pretrain.optimizer='sgdd' is unknown; accepted: sgd | adam | adamw",
    ),
    (["seed=abc"], "seed='abc' is not valid; accepted: an int"),
    (["seed=1.5"], "seed='1.5' is not valid; accepted: an int"),
    (["compact=maybe"], "compact='maybe' is not valid; accepted: true or false"),
    (["latency.repeats=0"], "latency.repeats=0 is out of range; accepted: an int >= 1"),
    (
        ["finetune.scheduler=linear"],
        "finetune.scheduler='linear' is not valid; accepted: constant | cosine | step",
    ),
    (
        ["finetune.step_milestones=[0.5,1.5]"],
        "finetune.step_milestones=[0.5, 1.5] is out of range; accepted: a list of fractions of the epochs in (0, 1)",
    ),
    (
        ["recalibrate.batches=-1"],
        "recalibrate.batches=-1 is out of range; accepted: an int >= 0 (0: off)",
    ),
    (["latency.batch_size=0"], "latency.batch_size=0 is out of range; accepted: an int >= 1"),
    (["model.width=0"], "model.width=0 is out of range; accepted: an int >= 1"),
    (
        ["model=mlp", "model.hidden=[64,0]"],
        "model.hidden[1]=0 is out of range; accepted: an int >= 1",
    ),
    (
        ["dataset.val_fraction=0"],
        "dataset.val_fraction=0 is out of range; accepted: a fraction in (0, 1)",
    ),
    (  # rounded to an empty split, it ran pretraining and failed: ZeroDivisionError
        ["dataset.val_fraction=0.0003"],
        "dataset.val_fraction=0.0003 of 1438 item(s) holds out no item; accepted: a fraction "
        "that leaves every split at least one item (from 0.00035 to 0.9997 here)",
    ),
    (
        ["dataset.test_fraction=0.9999"],
        "dataset.test_fraction=0.9999 of 1797 item(s) keeps no item; accepted: a fraction "
        "that leaves every split at least one item (from 0.00028 to 0.9997 here)",
    ),
    (
        ["dataset=synthetic", "dataset.num_classes=1"],
        "dataset.num_classes=1 is out of range; accepted: an int >= 2",
    ),
    (  # it pruned, then fell back to the masks: the compacted model lacked classes
        ["method=ln_structured", "compact=true", "scope.prune_classifier_outputs=true"],
        "compact=true with scope.prune_classifier_outputs=true would remove classes (the "
        "outputs of classifier); accepted: one of the two, or the classifier out of the scope "
        "(scope.dense_ends=true or scope.exclude)",
    ),
    (
        ["scope.layers=Conv2d"],
        "scope.layers='Conv2d' is not valid; accepted: a list such as [Conv2d, Linear]",
    ),
    (["device=tpu"], "device='tpu' is not a device; accepted: auto | cpu | cuda | cuda:N"),
    (["dataset=mnist"], "dataset.root is required but not set"),
    (
        ["dataset=custom"],
        "dataset.dataset._target_ is required but not set; e.g. dataset.dataset._target_=my_module.Name",
    ),
    (
        ["dataset=custom", "dataset.dataset._target_=my_data.Pets"],
        "dataset.dataset._target_='my_data.Pets' does not import (no module named 'my_data'); accepted: a dotted path to a class or function",
    ),
    (
        ["dataset=image_folder", "dataset.root=nowhere"],
        "dataset.root='nowhere' is not a folder; accepted: a local folder of class subfolders holding images",
    ),
    (
        ["dataset=synthetic", "dataset.in_channels=3", "model=torchvision", "model.arch=resnet19"],
        "model.arch='resnet19' is not a torchvision classification model; closest: resnet18",
    ),
    (
        ["model=torchvision", "model.arch=fasterrcnn_resnet50_fpn"],
        "model.arch='fasterrcnn_resnet50_fpn' is a torchvision detection model, not a classification model",
    ),
    (
        ["dataset=mnist", "dataset.root=missing"],
        "dataset.root='missing' is not a folder; accepted: a local folder holding <root>/MNIST/raw/",
    ),
    (
        ["model._target_=nope.Model"],
        "model._target_='nope.Model' does not import (no module named 'nope'); accepted: a dotted path to an nn.Module class or a function returning one",
    ),
    (
        ["+model.depth=3"],
        "model.depth=3 is not a setting of 'sweep.models.small_cnn'; accepted: num_classes, in_channels, image_size, width",
    ),
    (
        ["dataset=cifar10", "dataset.root=.", "+dataset.verify_checksums=false"],
        "dataset.verify_checksums=False is not a setting of 'sweep.data.cifar10'; accepted: root, val_fraction, split_seed, allow_unpickling_unverified_files, augment",
    ),
    (
        ["+finetune.epoch=1", "finetune.epochs=1"],
        "finetune.epoch is not a key of finetune; accepted: amp, batch_size, epochs, "
        "label_smoothing, lr, momentum, optimizer, scheduler, step_gamma, step_milestones, "
        "warmup_epochs, weight_decay",
    ),
    (
        ["++finetune.epoch=1"],
        "finetune.epoch is not a key of finetune; accepted: amp, batch_size, epochs, "
        "label_smoothing, lr, momentum, optimizer, scheduler, step_gamma, step_milestones, "
        "warmup_epochs, weight_decay",
    ),
    (
        ["+latency.extra.repeat=3"],
        "latency.extra is not a key of latency; accepted: batch_size, confidence, max_repeats, "
        "measure, repeats, warmup, width",
    ),
    (
        ["+latency.repeat=3"],
        "latency.repeat is not a key of latency; accepted: batch_size, confidence, max_repeats, "
        "measure, repeats, warmup, width",
    ),
    (
        ["+foo=1"],
        "foo is not a key in the config; accepted: amount, channels_last, compact, dataset, "
        "device, distributed, finetune, fuse, importance, latency, method, model, optuna, "
        "pretrain, progress, recalibrate, rewind, rewind_weights, schedule, scope, seed, "
        "skip_completed, store, tag",
    ),
    (
        ["+foo={a:1}"],
        "foo is not a key in the config; accepted: amount, channels_last, compact, dataset, "
        "device, distributed, finetune, fuse, importance, latency, method, model, optuna, "
        "pretrain, progress, recalibrate, rewind, rewind_weights, schedule, scope, seed, "
        "skip_completed, store, tag",
    ),
    (
        ["+foo=null"],
        "foo is not a key in the config; accepted: amount, channels_last, compact, dataset, "
        "device, distributed, finetune, fuse, importance, latency, method, model, optuna, "
        "pretrain, progress, recalibrate, rewind, rewind_weights, schedule, scope, seed, "
        "skip_completed, store, tag",
    ),
    (
        ["++foo={a:1}"],
        "foo is not a key in the config; accepted: amount, channels_last, compact, dataset, "
        "device, distributed, finetune, fuse, importance, latency, method, model, optuna, "
        "pretrain, progress, recalibrate, rewind, rewind_weights, schedule, scope, seed, "
        "skip_completed, store, tag",
    ),
    (
        ["method=global_unstructured", "method._target_=my_methods.EveryOther"],
        "method._target_='my_methods.EveryOther' with a global method: it ranks with "
        "method.pruning_method; accepted: method.pruning_method=my_methods.EveryOther (an "
        "unstructured method), or method._target_ on a method of its own",
    ),
    (
        ["+method.flop=true"],
        "method.flop=True is not a setting of l1_unstructured (L1Unstructured); accepted: amount",
    ),
    (
        ["method=ln_structured", "+method.p=2"],
        "method.p=2 is not a setting of ln_structured (LnStructured); accepted: amount, n, dim",
    ),
    (
        ["method._target_=my_methodz.EveryOther"],
        "method._target_='my_methodz.EveryOther' does not import (no module named 'my_methodz')",
    ),
    (
        ["search=tradeoff"],
        "search=tradeoff runs an Optuna study of many trials and needs -m; accepted: python -m sweep -m search=tradeoff ...",
    ),
    (
        ["-m", "amount=range(0.5,0.1,0.1)"],
        "amount=range(0.5,0.1,0.1) sweeps no values; accepted: a sweep of at least one value",
    ),
    (
        ["tag=ünïcode😀"],
        "tag=ünïcode😀 is not an override Hydra can read unquoted; accepted: the value in quotes "
        """(on a shell command line: tag='"ünïcode😀"')""",
    ),
    (
        ["tag=ünï cöde"],  # Hydra's message shows the override up to its first space
        "tag=ünï cöde is not an override Hydra can read unquoted; accepted: the value in quotes "
        """(on a shell command line: tag='"ünï cöde"')""",
    ),
    (["--foo"], "--foo is not an option of python -m sweep; accepted: -m/--multirun"),
    (["-m", "amount=0.5,abc"], "amount='abc' is not valid; accepted: a number"),
    (["-m", "amount=0.5,1.5"], "amount=1.5 is outside [0, 1)"),
    (
        ["-m", "method=ln_structured,random_structured", "method.dim=2"],
        "method.dim=2 does not exist for layer 'classifier'",
    ),
    (
        ["-m", "method=l1_unstructured,ln_structured", "method.dim=0"],
        "method.dim is not a key of method; accepted: _target_, importance, name",
    ),
    (
        ["-m", "amount=range(0,1,0)"],
        "amount=range(0,1,0) cannot be swept (range() arg 3 must not be zero); accepted: "
        "range(start, stop, step) with a step that is not zero",
    ),
    # Each value an Optuna search space may give is checked before the study exists: these
    # left a study with a trial RUNNING, or rows of failed trials and exit status 0.
    (
        [
            "-m",
            "search=tradeoff",
            "hydra.sweeper.params.method={choices:[l1_unstructured,l3]}",
        ],
        "hydra.sweeper.params gives trials method='l3': method='l3' is unknown; accepted: "
        "global_unstructured, l1_unstructured,",
    ),
    (
        ["-m", "search=tradeoff", "amount=interval(0.5,2)"],
        "hydra.sweeper.params gives trials amount=2.0: amount=2.0 is outside [0, 1)",
    ),
    (
        ["-m", "search=tradeoff", "finetune.lr=interval(-1,0.1)"],
        "hydra.sweeper.params gives trials amount=0.1, finetune.lr=-1.0: finetune.lr=-1.0 is "
        "out of range; accepted: a number > 0",
    ),
    (
        ["-m", "search=tradeoff", "hydra.sweeper.params.finetune.lr={low:1e-4,high:0.1}"],
        "hydra.sweeper.params.finetune.lr={low:1e-4,high:0.1}: Hydra reads the dots of "
        "finetune.lr as nesting; accepted: finetune.lr=interval(low,high) or "
        "finetune.lr=choice(a,b) on the command line, or 'finetune.lr': {low: ..., high: ...} "
        "under hydra.sweeper.params in a config file",
    ),
    (
        ["-m", "search=tradeoff", "+hydra.sweeper.params.finetune.lr={low:1e-4,high:0.1}"],
        "hydra.sweeper.params.finetune.lr: Hydra reads the dots of finetune.lr as nesting; "
        "accepted: finetune.lr=interval(low,high)",
    ),
    (
        ["-m", "search=tradeoff", "method=ln_structured", "method.n=choice(2,-1)"],
        "method.n=-1 is not a norm",  # a choice on the command line: checked as a grid's
    ),
    (
        ["store.baselines=/proc/nowhere"],
        "store.baselines='/proc/nowhere' is not writable (No such file or directory); accepted: "
        "a folder you can write to",
    ),
    (["store.baselines=/etc/hostname"], "store.baselines='/etc/hostname' is a file; accepted:"),
    # Hydra answers a config group set to null with a traceback
    (
        ["method=null"],
        "method=null: every trial needs one of method's options; accepted: global_unstructured, "
        "l1_unstructured, ln_structured, nm, none, random_structured, random_unstructured",
    ),
    (["-m", "method=l1_unstructured,null"], "method=l1_unstructured,null: every trial needs one"),
    (["~model"], "~model: every trial needs one of model's options; accepted: lenet, mlp,"),
    (
        ["-m", "search=null"],
        "search=null: search's option is a name; accepted: ~search (none), accuracy_at_sparsity,",
    ),
    # Hydra creates its output folder before the first job: a traceback where it cannot
    (
        ["hydra.run.dir=/proc/nowhere"],
        "hydra.run.dir='/proc/nowhere' cannot be created in '/proc' (No such file or directory); "
        "accepted: a folder path where you can write",
    ),
    (
        ["-m", "hydra.sweep.dir=/dev/null/${now:%H}", "amount=0.1,0.2"],
        "hydra.sweep.dir='/dev/null/${now:%H}' is inside a file ('/dev/null'); accepted: a folder",
    ),
    # OmegaConf reads any int but 0, and words such as yes, as true
    (["skip_completed=2"], "skip_completed=2 is not valid; accepted: true or false"),
    (["compact=yes"], "compact='yes' is not valid; accepted: true or false"),
    (["-m", "channels_last=false,5"], "channels_last=5 is not valid; accepted: true or false"),
    (["compact='true'"], "compact='true' is not valid (quoted, it is text); accepted: true or"),
    (["compact=null"], "compact=null is not valid; accepted: true or false"),
    (
        ["-m", "compact=glob(*)"],
        "compact=glob(*): compact is true or false; accepted: true, false, or a sweep of both",
    ),
    (["-m", "compact=range(0,2)"], "compact=range(0,2): compact is true or false; accepted:"),
    (
        ["-m", "search=tradeoff", "+hydra.sweeper.params.compact={choices:[0,1]}"],
        "hydra.sweeper.params gives trials compact=0: compact=0 is not valid; accepted: true or "
        "false",
    ),
    # a null read as the default, under a trial key of its own
    (["latency.measure=null"], "latency.measure=null is not valid; accepted: auto | true | false"),
    (
        ["method.importance=null"],
        "method.importance=null is unknown; accepted: magnitude | taylor | apoz | wanda",
    ),
    (["device=null"], "device=null is not valid; accepted: auto | cpu | cuda | cuda:N"),
    (["hydra.job.chdir=maybe"], "hydra.job.chdir='maybe' is not valid; accepted: true or false"),
    # Hydra's grammar: its messages name no override, or no key
    # (the reason in brackets is Hydra's own)
    (["-m", "amount=choice()"], "amount=choice() cannot be read ("),
    (["amount=[1"], "amount=[1 cannot be read ("),
    (["-m", "amount=0.1,,0.2"], "amount=0.1,,0.2 cannot be read ("),
    (["tag='a b"], "tag='a b cannot be read (a quote is not closed); accepted: key=value,"),
    (["=3"], "=3 names no key; accepted: key=value, such as amount=0.5"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        check_overrides(_options_first(*FAST, *args))
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == []  # no store, no run folder


def test_an_output_folder_is_checked_where_its_interpolations_lead(tmp_path, monkeypatch, capsys):
    """``${oc.env:...}`` resolves before the check (its literal part is empty); ``~`` is not
    expanded, as Hydra does not expand it, and ``${hydra:...}`` cannot be resolved here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTPUTS", "/proc/nowhere")
    with pytest.raises(SystemExit) as exit_:
        check_overrides(_options_first(*FAST, "hydra.run.dir=${oc.env:OUTPUTS}/run"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: hydra.run.dir='${oc.env:OUTPUTS}/run' cannot be created in '/proc' (No such "
        "file or directory); accepted: a folder path where you can write"
    ]
    for fine in ("hydra.run.dir='~/x/${now:%H}'", "hydra.run.dir=${hydra:runtime.cwd}/out"):
        check_overrides(_options_first(*FAST, fine))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no ~, no out


def test_a_sweep_over_amounts_of_a_method_that_takes_none_is_refused(tmp_path, monkeypatch, capsys):
    """EveryOther's constructor takes no amount: each amount of a grid ran the same trial under
    another trial key, and an Optuna search over amount learnt from one trial run again."""
    monkeypatch.chdir(tmp_path)
    own = "method._target_=tests.custom_methods.EveryOther"
    ours = "torch.nn.utils.prune.L1Unstructured"
    search = ["search=accuracy_at_sparsity", "~hydra.sweeper.params.method"]
    what = (
        "error: method EveryOther (EveryOther) takes no amount: it prunes alike at every amount, "
        "so "
    )
    instead = "or a method whose constructor takes amount, such as method=l1_unstructured"
    for args, refusal in (
        (
            [own, "amount=0.1,0.3,0.5"],
            "amount=0.1,0.3,0.5 runs one trial 3 times; accepted: one amount (sweep another "
            f"key, such as seed=0,1,2), {instead}",
        ),
        (
            [*search, own],
            "an Optuna search over amount (hydra.sweeper.params.amount) runs one trial again "
            f"and again; accepted: ~hydra.sweeper.params.amount to search the other settings, "
            f"{instead}",
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            check_overrides(["-m", *FAST, *args])
        assert exit_.value.code == 2
        assert capsys.readouterr().err.splitlines() == [what + refusal]
        assert list(tmp_path.iterdir()) == []
    for args in (
        [own, "amount=0.3", "seed=0,1"],
        [f"{own},{ours}", "amount=0.1,0.3"],  # the other method's amounts differ
        [*search, own, "~hydra.sweeper.params.amount"],
        ["method=nm", "amount=0.1,0.3"],  # one trial key: the repeat is "already in the store"
    ):
        check_overrides(["-m", *FAST, *args])
        assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("import torch\nraise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
        ("class Net(:\n    pass\n", "SyntaxError: invalid syntax"),
    ],
)
def test_a_module_of_yours_that_raises_as_it_imports_is_one_line(
    tmp_path, monkeypatch, capsys, source, error
):
    """Its traceback came out of prune-sweep's own command-line check, forty lines long."""
    code, run = tmp_path / "code", tmp_path / "run"
    code.mkdir()
    run.mkdir()
    (code / "broken_net.py").write_text(source)
    monkeypatch.chdir(run)
    monkeypatch.syspath_prepend(str(code))
    with pytest.raises(SystemExit) as exit_:
        check_overrides([*FAST, "model._target_=broken_net.Net"])
    assert exit_.value.code == 2
    line = 2 if error.startswith("Runtime") else 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: model._target_='broken_net.Net' does not import ({error} "
        f"({code / 'broken_net.py'}, line {line})); accepted: a dotted path to an nn.Module "
        "class or a function returning one"
    ]
    assert list(run.iterdir()) == []


def test_a_glob_over_a_group_of_yours_is_checked_option_by_option(tmp_path, monkeypatch, capsys):
    """+exp=glob(*) was a traceback of the command-line check (Hydra's 'ConfigLoader is not
    set'), and once past it, of the added-key check."""
    group = tmp_path / "my_conf" / "exp"
    group.mkdir(parents=True)
    (group / "short.yaml").write_text("# @package _global_\nfinetune:\n  epochs: 1\n")
    (group / "bad.yaml").write_text("# @package _global_\nfinetune:\n  batch_size: 0\n")
    monkeypatch.chdir(tmp_path)
    args = ["-m", "--config-dir", "my_conf", *FAST]
    check_overrides([*args, "+exp=glob(short)"])  # returns: the sweep would run
    with pytest.raises(SystemExit):
        check_overrides([*args, "+exp=glob(*)"])  # every option composed: bad's refused
    assert capsys.readouterr().err.startswith("error: finetune.batch_size=0 is out of range")
    with pytest.raises(SystemExit):
        check_overrides([*args, "+exp=glob(z*)"])
    assert capsys.readouterr().err.startswith("error: +exp=glob(z*) sweeps no values")


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_stop_grace_is_refused_before_a_sweep_starts(tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEP_STOP_GRACE_S", value)
    with pytest.raises(SystemExit) as exit_:
        check_overrides(["-m", *FAST, "amount=0.1,0.2"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: SWEEP_STOP_GRACE_S={value!r} is not valid; accepted: seconds >= 0"
    ]
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("SWEEP_STOP_GRACE_S", "2.5")
    check_overrides(["-m", *FAST, "amount=0.1,0.2"])  # returns: the sweep would run


def _options_first(*args: str) -> list[str]:
    """The arguments as a user types them: options (-m) before the overrides."""
    return sorted(args, key=lambda a: not a.startswith("-"))


def test_the_quoted_value_the_refusal_suggests_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_overrides([*FAST, 'tag="ünïcode😀"'])  # returns: the command would run


def test_an_option_after_the_overrides_is_refused_with_the_order_that_works(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        check_overrides(["progress=false", "-m", "amount=0.3"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: -m after the overrides, where Hydra reads no options: put -m before the "
        "overrides; accepted: python -m sweep -m progress=false amount=0.3"
    ]
    assert list(tmp_path.iterdir()) == []  # no store skeleton


# Mistakes in the user's own config files (--config-dir), refused before Hydra makes a run folder.
CONFIG_DIR_MISTAKES = [
    (
        ["--config-dir", "conf", "method=mine"],
        "/conf/method/mine.yaml, line 2, column 6 is not valid YAML (while parsing a flow "
        "sequence expected ',' or ']', but got '<stream end>'); accepted: YAML such as key: "
        "value, lists as [a, b]",
    ),
    (["-cd", "conf", "finetune=bad"], "finetune.lr=-1.0 is out of range; accepted: a number > 0"),
    (
        ["--config-dir", "nowhere"],
        "--config-dir='nowhere' is not a folder (",
    ),
    (
        ["-cd", "conf", "-cn", "nope"],
        "--config-name='nope' is not a config found; accepted: config",
    ),
]


@pytest.mark.parametrize(
    ("args", "message"), CONFIG_DIR_MISTAKES, ids=[" ".join(a) for a, _ in CONFIG_DIR_MISTAKES]
)
def test_config_file_mistakes_are_refused_before_anything_runs(
    tmp_path, monkeypatch, capsys, args, message
):
    _user_config_dir(tmp_path / "conf")
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    args = [str(tmp_path / a) if a == "conf" else a for a in args]
    with pytest.raises(SystemExit) as exit_:
        check_overrides([*args, *FAST])
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert message in line
    assert line.startswith("error: ")
    assert list(run.iterdir()) == []


def _user_config_dir(root: Path) -> None:
    (root / "method").mkdir(parents=True)
    (root / "finetune").mkdir()
    (root / "method/mine.yaml").write_text("name: mine\nfoo: [1, 2\n")  # unclosed [
    (root / "finetune/bad.yaml").write_text("defaults:\n  - default\n  - _self_\nlr: -1\n")


def test_store_path_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "st").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        check_overrides([*FAST, "store.path=st"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: store.path='st' is a file; accepted: a folder (created if missing)"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["st"]


@pytest.mark.parametrize(
    "args",
    [
        ["amount=145"],
        ["finetune.epoch=1"],
        ["-m", "amount=0.5,abc"],
        ["-m", "amount=range(0.5,0.1,0.1)"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_input_end_to_end(tmp_path, args):
    message = {tuple(a): m for a, m in BAD_INPUT}[tuple(args)]
    result = run_cli(*_options_first(*FAST, *args), cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(tmp_path):
    result = run_cli("device=cuda", *FAST, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: device='cuda' but no CUDA GPU is available here; accepted: auto | cpu"
    )
    assert not (tmp_path / "results").exists()


def test_nan_loss_exits_non_zero_with_a_failed_row(tmp_path):
    result = run_cli("finetune.lr=1e30", *FAST, cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED: finetune: loss became nan in epoch 1" in result.stdout
    df = load_results(tmp_path / "results")
    assert df[["status", "error"]].values.tolist() == [
        ["failed", "finetune: loss became nan in epoch 1"]
    ]


def test_a_grid_with_a_failed_trial_runs_the_rest_and_exits_1(tmp_path):
    """Scripts could not tell a grid with failed trials from a clean one: both exited 0."""
    (tmp_path / "picky.py").write_text(
        "from torch.nn.utils import prune\n\n\n"
        "class Picky(prune.L1Unstructured):\n"
        "    def compute_mask(self, t, default_mask):\n"
        "        if self.amount > 0.5:\n"
        "            raise RuntimeError(f'no more than half, not {self.amount}')\n"
        "        return super().compute_mask(t, default_mask)\n"
    )
    grid = ["-m", "method._target_=picky.Picky", "amount=0.7,0.3", "finetune.epochs=1"]
    result = run_cli(*grid, *FAST, "progress=false", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    rows = load_results(tmp_path / "results").sort_values("amount")
    assert rows[["amount", "status"]].values.tolist() == [[0.3, "complete"], [0.7, "failed"]]
    assert rows["error"].iloc[1] == "RuntimeError: no more than half, not 0.7"
    failed = rows["trial_key"].iloc[1]
    assert result.stderr.splitlines()[-1] == (
        f"error: 1 trial(s) of the sweep failed ({failed}): the lines above say why, sweep.log has the tracebacks"
    )
