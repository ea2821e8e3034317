"""model.checkpoint: the user's weights are the dense baseline; a user's own model class."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from sweep.cli import check_overrides
from sweep.errors import ConfigError
from sweep.trial import prepare, run_trial
from sweep.weights import fit, read_state
from tests.conftest import EARLIER_DEFAULTS, FAST
from tests.custom_models import UserNet

USER = ["model._target_=tests.custom_models.UserNet"]


def _untrained(tmp_path, name="ckpt.pt", wrap=None, seed=0):
    torch.manual_seed(seed)
    state = UserNet(num_classes=10).state_dict()
    file = tmp_path / name
    torch.save(wrap(state) if wrap else state, file)
    return file


# the first 16 hex digits of `sha256sum tests/custom_models.py`
USER_CODE = hashlib.sha256((Path(__file__).parent / "custom_models.py").read_bytes()).hexdigest()[
    :16
]


def test_user_model_on_a_preset_drops_the_presets_arguments(cfg_factory):
    plan = prepare(cfg_factory(*USER), check_store=False)
    # small_cnn's width is not UserNet's; the dataset facts it does not take are not passed
    assert plan.resolved["model"] == {
        "_target_": "tests.custom_models.UserNet",
        "name": "UserNet",
        "code_sha256": USER_CODE,  # the user's file, by its content
    }
    assert isinstance(plan.model, UserNet) and plan.model.head.out_features == 10
    plan = prepare(cfg_factory(*USER, "+model.hidden=8"), check_store=False)
    assert plan.model.head.in_features == 8


@pytest.mark.parametrize(
    "preset, named, dropped",
    [
        ([], "mynet", "width"),
        (["model=mlp"], "mynet", "hidden"),
        (["model=resnet18"], "mynet", "arch"),
        ([], "small_cnn", "width"),  # a preset's own name: the class names the model
    ],
)
def test_user_model_named_by_the_user_drops_the_presets_arguments_too(
    cfg_factory, preset, named, dropped
):
    # issue 22: with model.name=mynet the preset's width reached Net.__init__ (TypeError)
    plan = prepare(cfg_factory(*preset, *USER, f"model.name={named}"), check_store=False)
    name = "UserNet" if named == "small_cnn" else named
    assert plan.resolved["model"] == {
        "_target_": "tests.custom_models.UserNet",
        "name": name,
        "code_sha256": USER_CODE,
    }
    assert dropped not in plan.resolved["model"] and isinstance(plan.model, UserNet)
    # an argument the user sets is kept, as without model.name
    plan = prepare(cfg_factory(*USER, "model.name=mynet", "+model.hidden=8"), check_store=False)
    assert plan.resolved["model"]["hidden"] == 8 and plan.model.head.in_features == 8


def test_untrained_checkpoint_is_the_baseline(cfg_factory, tmp_path):
    file = _untrained(tmp_path)
    row = run_trial(cfg_factory(*USER, f"model.checkpoint={file}", "amount=0.3"))
    assert row["status"] == "complete" and row["model"] == "UserNet"
    assert row["baseline_trained"] is False
    # trained on digits this model reaches ~0.9; untrained weights are near chance (0.1)
    assert row["acc_dense"] < 0.3
    assert not (tmp_path / "results" / "baselines").exists()  # nothing pretrained or cached
    assert "pretrain.epochs" not in row  # no pretraining happened
    assert row["model.checkpoint_sha256"] and row["model.checkpoint"] == str(file)


def test_trained_checkpoint_keeps_its_accuracy(cfg_factory, tmp_path):
    # a baseline we train, saved as a user would, gives the same dense accuracy when loaded
    trained = run_trial(cfg_factory(*USER, "method=none"))
    [weights] = (tmp_path / "results" / "baselines").glob("*.pt")
    row = run_trial(cfg_factory(*USER, f"model.checkpoint={weights}", "method=none"))
    assert trained["baseline_trained"] is True and row["baseline_trained"] is False
    assert row["acc_dense"] == trained["acc_dense"]


def test_key_follows_the_files_content_not_its_path(cfg_factory, tmp_path):
    a = _untrained(tmp_path, "a.pt")
    b = tmp_path / "b.pt"
    shutil.copy(a, b)  # the same bytes at another path
    c = _untrained(tmp_path, "c.pt", seed=1)
    key = {f: prepare(cfg_factory(*USER, f"model.checkpoint={f}")).key for f in (a, b, c)}
    assert key[a] == key[b] != key[c]
    assert prepare(cfg_factory(*USER)).key not in key.values()


def test_checkpoint_leaves_keys_of_other_trials_alone(cfg_factory):
    # model.checkpoint=null is left out of the key: stores written before it existed match
    cfg = cfg_factory(*EARLIER_DEFAULTS)
    assert cfg.model.checkpoint is None
    assert prepare(cfg).key == "265616c46077d97b"  # its key before model.checkpoint existed


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"epoch": 3, "state_dict": s, "optimizer": {"lr": 0.1}},
        lambda s: {"model": s},
        lambda s: {"model_state_dict": s},
        lambda s: {f"module.{k}": v for k, v in s.items()},  # DataParallel / DDP
        lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},  # torch.compile
    ],
    ids=["state_dict", "model", "model_state_dict", "ddp", "compiled"],
)
def test_checkpoint_layouts(tmp_path, wrap):
    file = _untrained(tmp_path, wrap=wrap)
    model = UserNet()
    fit(model, read_state(file), file)
    torch.manual_seed(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), UserNet().state_dict().values(), strict=True)
    )


def test_safetensors(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    expected = UserNet().state_dict()
    safetensors.save_file(expected, tmp_path / "w.safetensors")
    state = read_state(tmp_path / "w.safetensors")
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def _bad_files(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(UserNet(), folder / "module.pt")  # a whole pickled module
    torch.save({"epoch": 3, "lr": 0.1}, folder / "nostate.pt")
    (folder / "text.pt").write_text("not a checkpoint")
    state = UserNet().state_dict()
    torch.save({k: v for k, v in state.items() if k != "head.bias"}, folder / "missing.pt")
    torch.save({**state, "extra.weight": torch.zeros(2)}, folder / "extra.pt")
    torch.save(UserNet(num_classes=5).state_dict(), folder / "classes.pt")
    return folder


BAD_CHECKPOINTS = [
    (
        "absent.pt",
        "model.checkpoint='{f}/absent.pt' is not a file; accepted: a state dict saved with torch.save(model.state_dict()), a checkpoint dict holding one under state_dict / model_state_dict / model / net / weights / module, or a .safetensors file",
    ),
    (
        "module.pt",
        "model.checkpoint='{f}/module.pt' holds Python objects that loading with weights_only=True refuses (a whole model saved with torch.save(model)?); accepted: a state dict",
    ),
    (
        "nostate.pt",
        "model.checkpoint='{f}/nostate.pt' holds no state dict (a dict with keys epoch, lr); accepted: a state dict",
    ),
    (
        "text.pt",
        "model.checkpoint='{f}/text.pt' is not a torch file (no zip or pickle header); accepted: a state dict",
    ),
    (
        "missing.pt",
        "model.checkpoint='{f}/missing.pt' does not fit the model: the model's key 'head.bias' (10,) is missing from the checkpoint; accepted: the state dict of this architecture",
    ),
    (
        "extra.pt",
        "model.checkpoint='{f}/extra.pt' does not fit the model: the checkpoint's key 'extra.weight' (2,) is not in the model; accepted:",
    ),
    (
        "classes.pt",
        "model.checkpoint='{f}/classes.pt' does not fit the model: key 'head.weight' has shape (5, 16) in the checkpoint, (10, 16) in the model (and 1 more); accepted:",
    ),
]


@pytest.mark.parametrize(("name", "message"), BAD_CHECKPOINTS, ids=[n for n, _ in BAD_CHECKPOINTS])
def test_bad_checkpoint_is_refused_before_anything_runs(
    tmp_path, monkeypatch, capsys, name, message
):
    folder = _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        check_overrides([*FAST, *USER, f"model.checkpoint={folder}/{name}"])
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: " + message.format(f=folder))
    assert [p.name for p in tmp_path.iterdir()] == ["files"]  # no store, no run folder


def test_mismatch_names_both_shapes_on_a_preset(cfg_factory, tmp_path):
    file = _untrained(tmp_path)  # UserNet's weights for small_cnn
    with pytest.raises(
        ConfigError,
        match=r"does not fit the model: the model's key 'block1.conv.weight' \(16, 1, 3, 3\) is missing",
    ):
        prepare(cfg_factory(f"model.checkpoint={file}"))
    assert not (tmp_path / "results").exists()


def test_an_imagenet_stem_on_small_inputs_points_to_small_input(cfg_factory, tmp_path):
    """torchvision weights trained on large images have a 7x7 stem; digits build a 3x3 one."""
    from torchvision.models import resnet18

    torch.save(resnet18(num_classes=10).state_dict(), tmp_path / "imagenet.pt")
    tv = ["model=torchvision", "model.arch=resnet18", f"model.checkpoint={tmp_path}/imagenet.pt"]
    with pytest.raises(ConfigError) as refused:
        prepare(cfg_factory(*tv), check_store=False)
    assert str(refused.value).endswith(
        "key 'conv1.weight' has shape (64, 3, 7, 7) in the checkpoint, (64, 1, 3, 3) in the model; "
        "accepted: the state dict of this architecture, built for this dataset's "
        "classes and input channels, or model.small_input=false for weights trained on large images"
    )
