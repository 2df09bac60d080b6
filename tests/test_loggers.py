"""W&B (offline) and MLflow loggers: one tracker run per lvu run, continued across restarts, with the recipe as
its parameters."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import wandb
from mlflow.tracking import MlflowClient

from lvu.cli import main
from lvu.config import load_recipe
from lvu.errors import ConfigError


def _fit(recipe_path, run_dir, steps: int, *extra: str) -> None:
    assert main(["fit", recipe_path("tiny"), f"run_dir={run_dir}", "trainer.accelerator=cpu", "trainer.devices=1",
                 f"trainer.max_steps={steps}", *extra]) == 0


def test_wandb_offline_groups_the_restarts_of_one_run(recipe_path, tmp_path, monkeypatch):
    # Offline, W&B cannot continue a run by id (it would write a second local run with the same id, which clashes
    # on `wandb sync`): each start is its own W&B run, all grouped under the lvu run's id.
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    _fit(recipe_path, run_dir, 4, "trainer.loggers=[csv,wandb]")
    group = (run_dir / "logs" / "wandb_run_id").read_text().strip()
    _fit(recipe_path, run_dir, 6, "trainer.loggers=[csv,wandb]")
    assert (run_dir / "logs" / "wandb_run_id").read_text().strip() == group
    starts = sorted((run_dir / "logs" / "wandb").glob("offline-run-*"))
    ids = {p.name.rsplit("-", 1)[1] for p in starts}
    assert len(starts) == 2 and len(ids) == 2
    for start in starts:  # each start's binary log names the group (the lvu run) and holds its metrics
        log = (start / f"run-{start.name.rsplit('-', 1)[1]}.wandb").read_bytes()
        assert group.encode() in log and b"train/loss" in log
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_wandb_runs_of_one_process_do_not_log_into_each_other(recipe_path, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    _fit(recipe_path, tmp_path / "a", 2, "trainer.loggers=[wandb]")
    assert wandb.run is None  # finished with its lvu run (Lightning leaves it open)
    _fit(recipe_path, tmp_path / "b", 2, "trainer.loggers=[wandb]")
    ids = [(tmp_path / r / "logs" / "wandb_run_id").read_text() for r in ("a", "b")]
    assert ids[0] != ids[1] and all((tmp_path / r / "logs" / "wandb").glob("offline-run-*") for r in ("a", "b"))


def test_mlflow_keeps_one_run_across_a_resume_with_the_recipe_as_parameters(recipe_path, tmp_path):
    run_dir = tmp_path / "run"
    _fit(recipe_path, run_dir, 4, "trainer.loggers=[mlflow]")
    _fit(recipe_path, run_dir, 6, "trainer.loggers=[mlflow]")
    client = MlflowClient(f"sqlite:///{run_dir / 'logs' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "lvu"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == (run_dir / "logs" / "mlflow_run_id").read_text().strip()
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert steps == list(range(6))  # both legs, in the one run
    assert run.data.params["task"] == "test.tiny" and run.data.params["seed"] == "7"
    # MLflow parameters cannot change: the resumed leg's larger max_steps is a tag (it used to stop the resume).
    assert run.data.params["trainer/max_steps"] == "4" and run.data.tags["restart/trainer/max_steps"] == "6"


def test_unknown_loggers_are_refused_when_the_recipe_loads(recipe_path):
    with pytest.raises(ConfigError, match=r"unknown logger\(s\) neptune \(choose from tensorboard, csv, wandb, mlflow"):
        load_recipe(recipe_path("tiny"), ["trainer.loggers=[csv,neptune]"])


def test_a_logger_whose_package_is_missing_stops_before_the_run_folder_exists(recipe_path, tmp_path, monkeypatch,
                                                                               capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["fit", recipe_path("tiny"), f"run_dir={tmp_path / 'run'}", "trainer.loggers=[wandb]"]) == 1
    assert "the wandb package is not installed: pip install 'lvu[wandb]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
