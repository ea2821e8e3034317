"""The config root is the top-level conf/; every way of installing the package finds it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).parents[1]


def test_package_list_is_complete():
    tomllib = pytest.importorskip("tomllib")
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(d.relative_to(ROOT / "src").parts)
        for d in (ROOT / "src").rglob("*")
        if d.is_dir() and any(d.glob("*.py"))
    }
    assert set(settings["packages"]) == found | {"sweep.conf", "hydra_plugins"}
    assert settings["package-dir"]["sweep.conf"] == "conf"


def test_one_config_root():
    assert (ROOT / "conf" / "config.yaml").is_file()
    assert not list((ROOT / "src").rglob("*.yaml")), "YAML belongs under conf/ only"


def test_wheel_install_finds_its_config_from_any_folder(tmp_path):
    """Build a wheel from a copy of the sources, install it into a folder of its own, and
    compose the config from a folder that has no conf/ of its own."""
    source = _mkdir(tmp_path / "source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source],
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("prune_sweep-*.whl")
    shipped = sorted(
        n.removeprefix("sweep/conf/")
        for n in zipfile.ZipFile(wheel).namelist()
        if n.endswith(".yaml")
    )
    assert shipped == sorted(p.relative_to(ROOT / "conf").as_posix() for p in _yaml(ROOT))
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", target, wheel], check=True, capture_output=True
    )

    elsewhere = _mkdir(tmp_path / "elsewhere")

    def installed(*args: str) -> subprocess.CompletedProcess:
        """Python with only the wheel's copy ahead of the environment, from another folder."""
        env = {**os.environ, "PYTHONPATH": str(target)}
        return subprocess.run(
            [sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True
        )

    where = installed(
        "-c",
        "import sweep.conf, hydra_plugins.prune_sweep as p; print(sweep.conf.__file__); "
        "print(p.__file__)",
    )
    assert [Path(p).is_relative_to(target) for p in where.stdout.split()] == [True, True]
    job = installed("-m", "sweep", "method=ln_structured", "--cfg", "job")
    assert job.returncode == 0, job.stderr
    assert "  name: ln_structured\n  _target_: torch.nn.utils.prune.LnStructured" in job.stdout
    sweeper = installed("-m", "sweep", "search=tradeoff", "--cfg", "hydra")
    assert sweeper.returncode == 0, sweeper.stderr
    assert "_target_: hydra_plugins.prune_sweep.OptunaSweeper" in sweeper.stdout
    assert not list(elsewhere.iterdir())  # --cfg writes nothing


def test_users_config_folder_on_the_search_path(tmp_path):
    (tmp_path / "my_conf" / "method").mkdir(parents=True)
    (tmp_path / "my_conf" / "method" / "every_other.yaml").write_text(
        "name: every_other\n_target_: my_methods.EveryOther\n"
    )
    shutil.copy(Path(__file__).parent / "custom_methods.py", tmp_path / "my_methods.py")
    args = ["hydra.searchpath=[file://my_conf]", "method=every_other"]
    job = run_cli(*args, "--cfg", "job", cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert "  name: every_other\n  _target_: my_methods.EveryOther" in job.stdout
    unknown = run_cli("method=every_other", "--cfg", "job", cwd=tmp_path)
    assert unknown.returncode != 0  # without the search path the option does not exist


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _yaml(root: Path) -> list[Path]:
    return sorted((root / "conf").rglob("*.yaml"))
