"""Every option of every config group composes and builds what it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sweep._build import build_model
from sweep.data import Dataset
from sweep.pruning import PruningMethod, Scope
from sweep.training import make_optimizer
from tests.conftest import make_cfg
from tests.test_image_folder import write_images

CONF = Path(__file__).parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def build(node, **kwargs):
    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("name")
    return instantiate(spec, **kwargs)


@pytest.mark.parametrize("name", options("dataset"))
def test_dataset_options(name, data_roots, tmp_path):
    extra = [] if name in {"digits", "synthetic", "custom"} else [f"dataset.root={data_roots}"]
    if name == "cifar10":
        extra.append("dataset.allow_unpickling_unverified_files=true")
    if name == "image_folder":
        write_images(tmp_path / "images", 3)
        extra = [f"dataset.root={tmp_path / 'images'}", "dataset.image_size=8"]
    if name == "custom":
        extra.append("dataset.dataset._target_=tests.custom_datasets.Squares")
    cfg = make_cfg(tmp_path, f"dataset={name}", *extra)
    assert cfg.dataset.name == name
    ds = build(cfg.dataset)
    assert isinstance(ds, Dataset) and len(ds.train) > 0 and len(ds.test) > 0


@pytest.mark.parametrize("name", options("model"))
@pytest.mark.parametrize("shape", [(1, 8), (3, 32)], ids=["digits", "cifar"])
def test_model_options(name, shape, tmp_path):
    cfg = make_cfg(tmp_path, f"model={name}")
    assert cfg.model.name == (cfg.model.arch if name == "torchvision" else name)
    channels, size = shape
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    model = build_model(spec, {"num_classes": 7, "in_channels": channels, "image_size": size})
    model.eval()
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", options("method"))
def test_method_options(name, tmp_path):
    cfg = make_cfg(tmp_path, f"method={name}")
    method = PruningMethod.from_config(cfg.method)
    assert method.name == name
    assert (method.cls is None) == (name == "none")


@pytest.mark.parametrize("group", ["pretrain", "finetune"])
def test_training_options(group, tmp_path):
    for name in options(group):
        cfg = make_cfg(tmp_path, f"{group}={name}")
        optimizer = make_optimizer(torch.nn.Linear(2, 2), cfg[group])
        assert optimizer.param_groups[0]["lr"] == cfg[group].lr


def test_top_level_defaults(tmp_path):
    cfg = make_cfg(tmp_path)
    assert (cfg.model.name, cfg.dataset.name, cfg.method.name) == (
        "small_cnn",
        "digits",
        "l1_unstructured",
    )
    assert cfg.device == "auto" and cfg.seed == 0 and cfg.amount == 0.5
    assert Scope.from_config(cfg.scope) == Scope()  # FAST prunes every layer, as Scope() does
    assert Scope.from_config(make_cfg(tmp_path, fast=False).scope) == Scope(dense_ends=True)
