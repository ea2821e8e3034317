"""run_trial end to end, in process: the row, the baseline cache, determinism, failures."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from sweep import load_layers, load_results
from sweep.errors import ConfigError
from sweep.store import METRIC_COLUMNS
from sweep.trial import run_trial

TIMING = {
    "latency_ms_dense",
    "latency_ms",
    "speedup",
    "time_prune_s",
    "time_finetune_s",
    "time_total_s",
}


def test_row_columns_and_store(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("method=l1_unstructured", "amount=0.3"))
    assert set(METRIC_COLUMNS) <= set(row)
    assert {"finetune.lr", "pretrain.epochs", "method.name", "model.width", "scope.layers"} <= set(
        row
    )
    assert (row["status"], row["error"], row["model"], row["dataset"]) == (
        "complete",
        None,
        "small_cnn",
        "digits",
    )
    assert (row["method"], row["amount"], row["seed"], row["device"]) == (
        "l1_unstructured",
        0.3,
        0,
        "cpu",
    )
    df = load_results(tmp_path / "results")
    assert len(df) == 1 and df.trial_key[0] == row["trial_key"]
    assert list(df.columns[: len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert df.started_at.dt.tz is not None and df.params.dtype == "int64"


def test_unstructured_sparsity_is_exact(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("method=l1_unstructured", "amount=0.3"))
    layers = load_layers(tmp_path / "results")
    assert layers.layer.tolist() == ["block1.conv", "block2.conv", "block3.conv", "classifier"]
    zeros = layers.numel - layers.nonzero
    assert zeros.tolist() == [round(0.3 * n) for n in layers.numel]
    assert row["sparsity"] == zeros.sum() / layers.numel.sum()
    assert abs(row["sparsity"] - 0.3) * layers.numel.sum() <= len(layers)
    assert row["params"] == 24058 and row["params_nonzero"] == 24058 - zeros.sum()
    assert row["flops"] < row["flops_dense"] == 1199360


def test_default_scope_leaves_the_ends_dense(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("scope.dense_ends=true", "method=l1_unstructured", "amount=0.9"))
    layers = load_layers(tmp_path / "results").set_index("layer")
    assert layers.in_scope.to_dict() == {
        "block1.conv": False,
        "block2.conv": True,
        "block3.conv": True,
        "classifier": False,
    }
    assert (layers.nonzero == layers.numel).tolist() == [True, False, False, True]
    assert layers.amount.isna().tolist() == [True, False, False, True]  # out of scope
    inside = layers[layers.in_scope]
    zeros = inside.numel - inside.nonzero
    assert zeros.tolist() == [round(0.9 * n) for n in inside.numel]
    # sparsity is the share of the in-scope weights; params_nonzero counts the whole model
    assert row["sparsity"] == zeros.sum() / inside.numel.sum()
    assert row["params_nonzero"] == row["params"] - zeros.sum()


def test_layers_record_the_amount_each_was_pruned_with(cfg_factory, tmp_path):
    run_trial(cfg_factory("method=l1_unstructured", "amount=0.9", "+scope.amounts.block2.conv=0.1"))
    layers = load_layers(tmp_path / "results").set_index("layer")
    assert layers.amount.to_dict() == {
        "block1.conv": 0.9,
        "block2.conv": 0.1,
        "block3.conv": 0.9,
        "classifier": 0.9,
    }
    zeros = layers.numel - layers.nonzero
    assert (zeros == (layers.numel * layers.amount).round().astype(int)).all()


def test_structured_trial_keeps_classifier(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("method=ln_structured", "amount=0.5"))
    layers = load_layers(tmp_path / "results").set_index("layer")
    assert layers.loc["classifier", "nonzero"] == layers.loc["classifier", "numel"]
    assert not layers.loc["classifier", "in_scope"]
    assert row["sparsity"] == 0.5


def test_acc_pruned_is_measured_before_finetuning(cfg_factory):
    no_finetune = run_trial(cfg_factory("method=ln_structured", "amount=0.5", "finetune.epochs=0"))
    # with no finetuning the final model is the recalibrated one; acc_pruned is the raw number
    assert no_finetune["acc_finetuned"] == no_finetune["acc_recalibrated"]
    assert no_finetune["acc_recalibrated"] > no_finetune["acc_pruned"] + 0.1
    finetuned = run_trial(cfg_factory("method=ln_structured", "amount=0.5", "finetune.epochs=2"))
    assert finetuned["acc_pruned"] == no_finetune["acc_pruned"]
    assert finetuned["acc_finetuned"] > finetuned["acc_pruned"] + 0.2


def test_rows_do_not_depend_on_what_the_process_measured_before(cfg_factory, tmp_path):
    """The dense columns and FLOP counts a process keeps (issue 24) give the rows a fresh
    process gives, and a trial with no finetuning reports its final model's own test pass."""
    from sweep import load_model, metrics, trial
    from sweep.plan import prepare
    from sweep.training import evaluate

    trials = [("method=ln_structured", "amount=0.5", "finetune.epochs=0"), ("amount=0.3",)]
    run_trial(cfg_factory("amount=0.7"))  # the baseline, its columns and its FLOPs measured
    warm = [run_trial(cfg_factory(*t)) for t in trials]
    cold = []
    for t in trials:
        trial._DENSE.clear(), metrics._PROFILES.clear()
        cold.append(run_trial(cfg_factory(*t)))
    for w, c in zip(warm, cold, strict=True):
        same = {k for k in w if not k.startswith(("time_", "started_at", "store_file"))}
        assert {k: w[k] for k in same} == {k: c[k] for k in same}
    model = load_model(warm[0]["trial_key"], tmp_path / "results")
    test = prepare(cfg_factory(*trials[0])).data.test
    assert evaluate(model, test) == (warm[0]["acc_finetuned"], warm[0]["loss_finetuned"])


def test_a_rewritten_baseline_file_is_measured_again(cfg_factory, tmp_path):
    import torch

    first = run_trial(cfg_factory("finetune.epochs=0"))
    [weights] = (tmp_path / "results" / "baselines").glob("*.pt")
    state = torch.load(weights, weights_only=True)
    torch.save({k: v * 0 if k.endswith("weight") else v for k, v in state.items()}, weights)
    again = run_trial(cfg_factory("finetune.epochs=0"))
    assert again["baseline_key"] == first["baseline_key"]
    assert (first["acc_dense"] > 0.9, again["acc_dense"] < 0.2) == (True, True)
    assert again["flops_dense"] < first["flops_dense"]  # zero weights: nothing multiplied


def test_baseline_is_trained_once(cfg_factory, tmp_path):
    first = run_trial(cfg_factory("method=l1_unstructured", "amount=0.5"))
    second = run_trial(cfg_factory("method=ln_structured", "amount=0.25"))
    assert (first["baseline_trained"], second["baseline_trained"]) == (True, False)
    assert first["baseline_key"] == second["baseline_key"]
    assert first["acc_dense"] == second["acc_dense"]
    assert len(list((tmp_path / "results/baselines").glob("*.pt"))) == 1
    other = run_trial(cfg_factory("method=l1_unstructured", "pretrain.lr=0.001"))
    assert other["baseline_trained"] and other["baseline_key"] != first["baseline_key"]


def test_same_config_gives_identical_metrics(tmp_path):
    from tests.conftest import make_cfg

    overrides = ("method=random_unstructured", "amount=0.6", "finetune.epochs=2")
    a = run_trial(make_cfg(tmp_path / "a", *overrides))
    b = run_trial(make_cfg(tmp_path / "b", *overrides))
    assert a["baseline_trained"] and b["baseline_trained"]
    same = [c for c in METRIC_COLUMNS if c not in TIMING | {"started_at"}]
    assert {c: a[c] for c in same} == {c: b[c] for c in same}


def test_nan_loss_fails_the_trial_with_reason(cfg_factory, tmp_path):
    row = run_trial(cfg_factory("finetune.lr=1e30"))
    assert row["status"] == "failed"
    assert row["error"] == "finetune: loss became nan in epoch 1"
    stored = load_results(tmp_path / "results")
    assert stored.status.tolist() == ["failed"] and stored.error[0] == row["error"]


def test_unexpected_exception_is_a_failed_row(cfg_factory, tmp_path):
    def crash(epoch: int, acc: float) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    row = run_trial(cfg_factory(), on_epoch=crash)
    assert (row["status"], row["error"]) == (
        "failed",
        "RuntimeError: CUDA out of memory (simulated)",
    )
    assert load_results(tmp_path / "results").status.tolist() == ["failed"]


def test_on_row_receives_the_row_and_layers_just_before_the_store_does(cfg_factory, tmp_path):
    """An Optuna job puts them on its trial there (`sweep.search.record_row`): a worker that
    dies after its store's write leaves its outcome where workers with other stores read it."""
    seen = []

    def on_row(row, layers):
        file = tmp_path / "results" / "trials" / f"{row['trial_key']}.parquet"
        seen.append((dict(row), [layer["layer"] for layer in layers], file.exists()))

    row = run_trial(cfg_factory(), on_row=on_row)
    [(given, names, written)] = seen
    assert given == {k: v for k, v in row.items() if k != "store_file"} and not written
    assert names == load_layers(tmp_path / "results")["layer"].tolist()


def test_trial_pruner_stop_is_recorded(cfg_factory, tmp_path):
    epochs = []

    def stop_after_first(epoch: int, acc: float) -> None:
        epochs.append((epoch, acc))
        raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    row = run_trial(cfg_factory("finetune.epochs=3"), on_epoch=stop_after_first)
    assert [e for e, _ in epochs] == [1] and 0.0 <= epochs[0][1] <= 1.0
    assert (row["status"], row["error"]) == ("pruned", "pruned at epoch 1")
    assert load_results(tmp_path / "results").status.tolist() == ["pruned"]


def test_skip_completed(cfg_factory):
    first = run_trial(cfg_factory())
    again = run_trial(cfg_factory("skip_completed=true"))
    assert again["started_at"] == first["started_at"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["amount=1.5"], "amount=1.5 is outside [0, 1)"),
        (["method=ln_structured", "method.dim=3"], "method.dim=3 does not exist for layer"),
        (["device=cuda:7"], "device='cuda:7'"),
        (["dataset=mnist"], "dataset.root is required but not set"),
        (
            ["dataset=cifar10", "dataset.root=/no/such/dir"],
            "dataset.root='/no/such/dir' is not a folder",
        ),
        (
            ["model._target_=sweep.models.nope"],
            "model._target_='sweep.models.nope' does not import (module 'sweep.models' has no 'nope')",
        ),
        (["scope.amounts={Linear:2.5}"], "scope.amounts.Linear=2.5 is outside [0, 1)"),
        (
            ["finetune.optimizer=adagradx"],
            "finetune.optimizer='adagradx' is unknown; accepted: sgd | adam | adamw",
        ),
    ],
)
def test_bad_input_writes_nothing(cfg_factory, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        run_trial(cfg_factory(*overrides))
    assert message in str(e.value)
    assert not (tmp_path / "results" / "trials").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=l1_unstructured", "amount=0.6"],
        ["method=ln_structured", "amount=0.5", "compact=true"],
        ["method=nm"],
        ["method=global_unstructured", "amount=0.8", "schedule=iterative"],
    ],
    ids=["l1", "ln-compacted", "nm", "global-iterative"],
)
def test_channels_last_changes_the_layout_not_the_trial(tmp_path, overrides):
    """The same trial with the images held in NHWC memory (3 channels: with 1, both layouts are
    one): the same key, baseline and pruned entries, and the same accuracies of the same weights
    (within an image: other kernels round otherwise)."""
    import torch

    from sweep.plan import _on_device, prepare
    from tests.conftest import make_cfg

    overrides = [*overrides, "dataset=synthetic", "dataset.in_channels=3", "dataset.noise=2.0"]
    baselines = f"store.baselines={tmp_path / 'baselines'}"  # one dense model for both
    rows, layers = {}, {}
    for layout in ("false", "true"):
        store = tmp_path / layout
        cfg = make_cfg(store, *overrides, baselines, f"channels_last={layout}")
        rows[layout] = run_trial(cfg)
        layers[layout] = load_layers(store)[["layer", "numel", "nonzero"]]
    nhwc, nchw = rows["true"], rows["false"]
    assert nhwc["status"] == "complete" and nhwc["baseline_trained"] is False
    assert nhwc["trial_key"] == nchw["trial_key"]
    assert nhwc["params_nonzero"] == nchw["params_nonzero"]
    for metric in ("acc_dense", "acc_pruned"):
        assert round(abs(nhwc[metric] - nchw[metric]) * 205) <= 1  # of 205 test images
    if "schedule=iterative" in overrides:
        # global ranks retaken while finetuning: the total is what is fixed
        assert layers["true"].nonzero.sum() == layers["false"].nonzero.sum()
    else:
        assert layers["true"].equals(layers["false"])
    data = prepare(make_cfg(tmp_path / "x", *overrides), check_store=False).data
    held = _on_device(data, torch.device("cpu"), channels_last=True)
    for split in (held.train, held.val, held.test):
        assert split.x.is_contiguous(memory_format=torch.channels_last)
        assert not split.x.is_contiguous()
    assert torch.equal(held.train.x, data.train.x)
    assert _on_device(data, torch.device("cpu")).train.x.is_contiguous()


def test_a_baseline_read_before_comes_from_memory_until_its_file_changes(
    tmp_path, cfg_factory, monkeypatch
):
    import torch

    from sweep import baseline
    from sweep._files import atomic_write
    from sweep.plan import prepare

    def built():
        return prepare(cfg_factory("pretrain.epochs=1"), check_store=False)

    plan = built()
    settings = {k: plan.resolved[k] for k in ("model", "dataset", "pretrain")}
    settings.update(seed=0, device_type="cpu")  # what keys the baseline
    trained = baseline.load_or_train(plan.model, plan.data, settings, tmp_path, progress=False)
    weights = {k: v.clone() for k, v in plan.model.state_dict().items()}
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, **kw: reads.append(f) or real_load(f, **kw))

    def load() -> tuple[dict, dict]:
        model = built().model
        facts = baseline.load_or_train(model, plan.data, settings, tmp_path, progress=False)
        return facts, model.state_dict()

    for _ in range(3):
        facts, state = load()
        assert facts == {**trained, "trained": False}
        assert all(torch.equal(v, state[k]) for k, v in weights.items())
    assert len(reads) == 1  # the first load reads the file, the next ones are served from memory
    file = baseline.weights_file(tmp_path, trained["key"])
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}
    atomic_write(file, lambda f: torch.save(changed, f))  # a baseline replaced in place
    facts, state = load()
    assert len(reads) == 2
    assert all(torch.equal(v, state[k]) for k, v in changed.items())


@pytest.mark.parametrize(("epochs", "imported"), [(0, ["False", "False"]), (1, ["True", "True"])])
def test_the_compiler_is_imported_only_by_finetuning_and_before_it_starts(
    cfg_factory, tmp_path, epochs, imported
):
    """A proxy search's trials (``finetune.epochs=0``) take no optimizer step, count FLOPs and
    seed the CPU: none of it needs ``torch._dynamo``, whose import took about a second of each
    search process before (``FlopCounterMode``'s dispatch, ``torch.manual_seed`` and an unused
    optimizer each imported it). A trial that finetunes needs it (torch.optim's first optimizer
    imports it): imported before the trial starts, it no longer lands in the first trial of
    each process's ``time_finetune_s`` (1.2 s on 2 cores, where a trial's took 0.2 s)."""
    run_trial(cfg_factory("finetune.epochs=0"))  # the baseline, pretrained and cached
    code = (
        "import sys\n"
        "from tests.conftest import make_cfg\n"
        "from sweep.trial import run_trial\n"
        "seen = []\n"
        f"cfg = make_cfg({str(tmp_path / 'results')!r}, 'finetune.epochs={epochs}', "
        "'amount=0.3')\n"
        "row = run_trial(cfg, on_start=lambda key: seen.append('torch._dynamo' in sys.modules))\n"
        "print(row['status'], row['baseline_trained'], *seen, 'torch._dynamo' in sys.modules)\n"
    )
    root = Path(__file__).parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split()[-4:] == ["complete", "False", *imported]


def test_an_untrained_baseline_is_named_once(cfg_factory, caplog):
    """A baseline no better than guessing gets one warning with what to change; one that
    learnt gets none."""
    with caplog.at_level("WARNING", logger="sweep.trial"):
        row = run_trial(cfg_factory("pretrain.epochs=0", "amount=0.2"))
        run_trial(cfg_factory("pretrain.epochs=0", "amount=0.4"))
    warned = _warnings(caplog)
    assert row["acc_dense"] <= 0.19
    assert warned == [
        f"the dense baseline scores {100 * row['acc_dense']:.1f}% on the test split, where "
        "guessing scores 10.0% (10 classes): accuracies measured against it say little. Train "
        "it longer (pretrain.epochs=0 now) or give it weights (model.checkpoint=...)"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="sweep.trial"):
        assert run_trial(cfg_factory("amount=0.2"))["acc_dense"] > 0.5
    assert not _warnings(caplog)


def _warnings(caplog) -> list[str]:
    """The trial's warnings about its dense baseline (records of any level from earlier
    steps of the test may be there too, as other tests leave loggers' levels)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sweep.trial" and r.levelname == "WARNING" and "dense baseline" in r.msg
    ]


def test_a_baseline_whose_batchnorm_statistics_lag_is_told_so(cfg_factory, tmp_path, caplog):
    """A learnt baseline whose BatchNorm running statistics are off reads as chance in eval
    mode; the warning says what recomputing them gives."""
    import torch

    run_trial(cfg_factory("finetune.epochs=0"))
    [weights] = (tmp_path / "results" / "baselines").glob("*.pt")
    state = torch.load(weights, weights_only=True)
    lagging = {k: v + 50 if k.endswith("running_mean") else v for k, v in state.items()}
    torch.save(lagging, weights)
    with caplog.at_level("WARNING", logger="sweep.trial"):
        row = run_trial(cfg_factory("finetune.epochs=0"))
    [warned] = _warnings(caplog)
    assert row["acc_dense"] <= 0.19 and row["acc_recalibrated"] > 0.5
    assert (
        "Its BatchNorm running statistics lag its weights: recomputed over 20 batches, " in warned
    )
    scored = float(warned.split("it scores ")[1].split("%")[0])
    assert scored > 50


USER_MODEL = """from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        width = in_channels * image_size**2
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, 32), nn.Linear(32, num_classes)
        )

    def forward(self, x):
        return self.body(x)
"""

USER_METHOD = """from torch.nn.utils import prune


class EveryOther(prune.BasePruningMethod):
    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask
"""


def _edited(tmp_path: Path, module: str, text: str) -> None:
    """``module``'s file now holds ``text``, and the next import reads it (as a new process)."""
    (tmp_path / f"{module}.py").write_text(text)
    sys.modules.pop(module, None)


def test_editing_your_own_class_makes_a_new_trial_and_baseline(tmp_path, monkeypatch, caplog):
    """The same config over edited code kept its trial key and its baseline key: the cached
    ReLU net's weights were loaded into the Tanh net, and skip_completed served the old rows.
    Now a user's model, method or dataset is keyed by its file's content (its path is not)."""
    from tests.conftest import make_cfg

    monkeypatch.syspath_prepend(str(tmp_path))
    _edited(tmp_path, "mynet", USER_MODEL)
    _edited(tmp_path, "mymethod", USER_METHOD)
    user = ["model._target_=mynet.Net", "method._target_=mymethod.EveryOther"]
    store = tmp_path / "results"
    first = run_trial(make_cfg(store, *user, "skip_completed=true"))
    assert first["baseline_trained"] is True
    assert first["sparsity"] == 0.5
    again = run_trial(make_cfg(store, *user, "skip_completed=true"))
    assert again["trial_key"] == first["trial_key"]  # unchanged code: the stored row
    assert again["store_file"] == "already in the store"

    _edited(tmp_path, "mynet", USER_MODEL.replace("nn.ReLU()", "nn.Tanh()"))
    tanh = run_trial(make_cfg(store, *user, "skip_completed=true"))
    assert tanh["trial_key"] != first["trial_key"]
    assert tanh["baseline_key"] != first["baseline_key"] and tanh["baseline_trained"] is True
    assert tanh["model.code_sha256"] != first["model.code_sha256"]
    tanh_file = (tmp_path / "mynet.py").read_bytes()
    assert tanh["model.code_sha256"] == hashlib.sha256(tanh_file).hexdigest()[:16]
    assert tanh["method.code_sha256"] == first["method.code_sha256"]

    # the first trial's model, kept from the ReLU net, loads into the Tanh net: said so
    from sweep import load_model

    load_model(first["trial_key"], store)
    assert any("was kept from other code of mynet.Net" in m for m in caplog.messages)
    # edited while a sweep runs: the class that runs is the one imported, and so is its key
    (tmp_path / "mynet.py").write_text(USER_MODEL.replace("nn.ReLU()", "nn.GELU()"))
    running = run_trial(make_cfg(store, *user, "skip_completed=true"))
    assert running["trial_key"] == tanh["trial_key"]
    _edited(tmp_path, "mynet", USER_MODEL.replace("nn.ReLU()", "nn.Tanh()"))

    _edited(tmp_path, "mymethod", USER_METHOD.replace("[::2]", "[::4]"))
    quarter = run_trial(make_cfg(store, *user, "skip_completed=true"))
    assert quarter["trial_key"] != tanh["trial_key"]
    assert quarter["baseline_key"] == tanh["baseline_key"]  # the method is not the baseline's
    assert quarter["sparsity"] == 0.25
    assert len(load_results(store)) == 3

    # prune-sweep's own classes carry no digest: their keys are as they were
    builtin = run_trial(make_cfg(store))
    assert "model.code_sha256" not in builtin and "method.code_sha256" not in builtin


def test_a_class_defined_in_a_notebook_is_keyed_by_its_source(monkeypatch):
    """A notebook's module has no file: Jupyter keeps each cell's source where inspect reads
    it, and a cell run again with an edited class gives another digest."""
    import linecache
    import types

    from sweep._build import code_digest

    notebook = types.ModuleType("notebook_main")
    monkeypatch.setitem(sys.modules, "notebook_main", notebook)
    digests = []
    for cell, activation in enumerate(("ReLU", "Tanh", "Tanh")):
        source = (
            "from torch import nn\n\n"
            "class Net(nn.Module):\n"
            "    def __init__(self, num_classes):\n"
            "        super().__init__()\n"
            f"        self.act = nn.{activation}()\n"
        )
        name = f"<cell {cell}>"
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        exec(compile(source, name, "exec"), notebook.__dict__)
        digests.append(code_digest({"_target_": "notebook_main.Net"}))
    assert None not in digests
    assert digests[0] != digests[1] == digests[2]  # the cell's code, wherever it ran


def test_a_notebook_method_keeps_its_digest_from_one_session_to_the_next(monkeypatch):
    """A BasePruningMethod is an ABC: each class defined carries an ``_abc_impl`` whose repr
    holds its address, so the same cell gave a new digest (a new trial key) in every kernel
    session, and skip_completed never skipped. A set attribute's order moved the same way."""
    import types

    from sweep._build import code_digest

    notebook = types.ModuleType("notebook_main")
    monkeypatch.setitem(sys.modules, "notebook_main", notebook)
    source = (
        "from torch.nn.utils import prune\n\n"
        "class EveryOther(prune.BasePruningMethod):\n"
        "    PRUNING_TYPE = 'unstructured'\n"
        "    skip = {'bias', 'weight_orig', 'running_mean'}\n"
    )
    digests = []
    for step in ("one", "two"):
        exec(compile(source, f"<cell {step}>", "exec"), notebook.__dict__)
        digests.append(code_digest({"_target_": "notebook_main.EveryOther"}))
    assert None not in digests and digests[0] == digests[1]
    exec(
        compile(source.replace("'unstructured'", "'structured'"), "<cell 3>", "exec"),
        notebook.__dict__,
    )
    assert code_digest({"_target_": "notebook_main.EveryOther"}) != digests[0]


def test_a_reloaded_module_is_hashed_again(tmp_path, monkeypatch):
    """importlib.reload (and IPython's autoreload) runs the edited file in the same module
    object: its first digest was kept, so an edited, reloaded class kept its trial key and
    was served the old class's cached baseline."""
    import importlib

    from sweep._build import code_digest

    monkeypatch.syspath_prepend(str(tmp_path))
    _edited(tmp_path, "mynet", USER_MODEL)
    import mynet

    first = code_digest({"_target_": "mynet.Net"})
    (tmp_path / "mynet.py").write_text(USER_MODEL.replace("nn.ReLU()", "nn.Tanh()"))
    assert code_digest({"_target_": "mynet.Net"}) == first  # imported: what runs is ReLU
    importlib.reload(mynet)
    tanh = hashlib.sha256((tmp_path / "mynet.py").read_bytes()).hexdigest()[:16]
    assert code_digest({"_target_": "mynet.Net"}) == tanh != first


def test_a_target_inside_a_list_is_keyed(tmp_path, monkeypatch):
    """A transform of the user's inside Compose's list was never keyed: editing it served the
    old rows and baseline."""
    from sweep._build import code_digest

    monkeypatch.syspath_prepend(str(tmp_path))
    _edited(tmp_path, "mytf", "class Scale:\n    def __call__(self, x):\n        return x\n")
    spec = {
        "_target_": "torchvision.datasets.ImageFolder",
        "transform": {
            "_target_": "torchvision.transforms.Compose",
            "transforms": [
                {"_target_": "torchvision.transforms.ToTensor"},
                {"_target_": "mytf.Scale"},
            ],
        },
    }
    digest = hashlib.sha256((tmp_path / "mytf.py").read_bytes()).hexdigest()[:16]
    assert code_digest(spec) == digest
