"""The package as a user installs it: a wheel built from the sources, installed apart from this checkout, runs
`lvu recipes`, `lvu config`, a tiny fit and a Slurm dry run (the wheel used to leave recipes and the job template
out, so an installed `lvu recipes` listed nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.features import make_features

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (a build in place would leave build/ in the checkout) and
    installed into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT / "lvu", source / "lvu", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(work / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (work / "dist").glob("lvu-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lvu/recipes/lvmae/pretrain.yaml" in names and "lvu/templates/train.sbatch" in names
    assert "lvu/recipes/trainer/ddp.yaml" in names and "lvu/recipes/quickstart/fila_stage4.yaml" in names
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(work / "site"),
                    str(wheel)], check=True, capture_output=True)
    return work


def _lvu(installed: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed / "site")}
    env.pop("LVU_RECIPES", None)
    code = "import sys, lvu; print('package:', lvu.__file__); from lvu.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=installed, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_an_installed_wheel_has_its_recipes_and_job_template(installed, tmp_path):
    listed = _lvu(installed, "recipes")
    assert listed.returncode == 0, listed.stderr
    assert f"package: {installed / 'site' / 'lvu' / '__init__.py'}" in listed.stdout  # not this checkout
    assert all(name in listed.stdout for name in ("lvmae/pretrain", "linvt/align", "fila/stage4", "quickstart/"))
    config = _lvu(installed, "config", "lvmae/pretrain", "data.train=feats")
    assert config.returncode == 0 and "task: lvmae.pretrain" in config.stdout, config.stderr
    features = make_features(tmp_path / "features", 16, dim=8, seed=1)
    run_dir = tmp_path / "run"
    fit = _lvu(installed, "fit", "quickstart/lvmae_pretrain", f"data.train={features}", "data.val=null",
               "data.num_workers=0", "data.batch_size=4", "model.input_dim=8", "model.embed_dim=8",
               "model.decoder_dim=8", "model.num_heads=2", "model.decoder_num_heads=2", "model.depth=1",
               f"run_dir={run_dir}", "trainer.max_steps=2", "trainer.max_epochs=null", "trainer.progress_bar=none")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    script = _lvu(installed, "slurm", "submit", "lvmae/pretrain", "data.train=feats", "--nodes", "1",
                  "--gpus-per-node", "2", "--dry-run")
    assert script.returncode == 0, script.stderr
    assert "#SBATCH" in script.stdout and "fit" in script.stdout
