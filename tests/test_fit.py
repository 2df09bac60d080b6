"""`lvu fit` on the test-only task: what a run writes, resuming, and seeding."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from lvu.cli import main
from lvu.config import load_recipe


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


def _params(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def _csv_steps(path: Path) -> list[int]:
    with path.open() as f:
        return sorted({int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")})


def test_fit_writes_config_checkpoint_and_logs(tmp_path, recipe_path):
    assert main(["fit", recipe_path("tiny"), f"runs_root={tmp_path}"]) == 0
    run_dir = tmp_path / "tiny" / "version_0"
    saved = load_recipe(run_dir / "config.yaml")  # the resolved config is a valid recipe itself
    assert saved.to_object().trainer.max_steps == 6 and saved.to_object().run_dir == str(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert _step(last) == 6
    info = torch.load(last, map_location="cpu", weights_only=True)["lvu"]
    assert info["task"] == "test.tiny" and info["config"]["data"]["samples"] == 64
    assert _csv_steps(run_dir / "logs" / "csv" / "version_0" / "metrics.csv") == [0, 1, 2, 3, 4, 5]
    assert list((run_dir / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    # The resolved recipe is the run's hyper-parameters (it used to be {}).
    hparams = yaml.safe_load((run_dir / "logs" / "csv" / "version_0" / "hparams.yaml").read_text())
    assert hparams["task"] == "test.tiny" and hparams["trainer"]["max_steps"] == 6 and hparams["seed"] == 7
    # A second fresh run of the same recipe gets its own version folder; trainer.threads sets torch's thread count.
    threads = torch.get_num_threads()
    seen = []
    import lightning as L

    class Threads(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(torch.get_num_threads())

    from lvu.train import trainer as assembly

    build = assembly.build_callbacks
    try:
        assembly.build_callbacks = lambda *a, **k: [*build(*a, **k), Threads()]
        assert main(["fit", recipe_path("tiny"), f"runs_root={tmp_path}", "trainer.max_steps=1",
                     f"trainer.threads={threads + 1}"]) == 0
    finally:
        assembly.build_callbacks = build
    assert seen == [threads + 1] and torch.get_num_threads() == threads  # set for the run, then restored
    assert _step(tmp_path / "tiny" / "version_1" / "checkpoints" / "last.ckpt") == 1


def test_resume_from_run_dir_continues_at_the_saved_step(tmp_path, recipe_path):
    assert main(["fit", recipe_path("tiny"), f"runs_root={tmp_path}"]) == 0
    run_dir = tmp_path / "tiny" / "version_0"
    assert main(["fit", recipe_path("tiny"), f"run_dir={run_dir}", "trainer.max_steps=10"]) == 0
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 10
    # The resumed attempt logged steps 6..9 only, in a CSV of its own; the first attempt's log is kept.
    assert _csv_steps(run_dir / "logs" / "csv" / "version_1" / "metrics.csv") == [6, 7, 8, 9]
    assert _csv_steps(run_dir / "logs" / "csv" / "version_0" / "metrics.csv") == [0, 1, 2, 3, 4, 5]
    # The recipe changed (max_steps), so the previous resolved config is kept beside the new one.
    assert "max_steps: 6" in (run_dir / "config.1.yaml").read_text()
    assert "max_steps: 10" in (run_dir / "config.yaml").read_text()
    # Passing the saved config back resumes the same run again.
    assert main(["fit", str(run_dir / "config.yaml"), "trainer.max_steps=12"]) == 0
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 12
    assert not (tmp_path / "tiny" / "version_1").exists()


def test_fit_with_ckpt_starts_a_new_run_from_that_step(tmp_path, recipe_path, caplog):
    assert main(["fit", recipe_path("tiny"), f"runs_root={tmp_path}", "trainer.max_steps=4"]) == 0
    first = tmp_path / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    with caplog.at_level("INFO"):
        assert main(["fit", recipe_path("tiny"), f"runs_root={tmp_path}", "--ckpt", str(first),
                     "trainer.max_steps=7"]) == 0
    second = tmp_path / "tiny" / "version_1"
    # Not "Resuming": this is a new run that continues the checkpoint's training state.
    assert f"Continuing the training state of {first} (step, optimiser, data position) in {second}" in caplog.text
    assert "Resuming from" not in caplog.text
    assert _step(second / "checkpoints" / "last.ckpt") == 7
    assert _csv_steps(second / "logs" / "csv" / "version_0" / "metrics.csv") == [4, 5, 6]
    assert _step(first) == 4  # the source run is untouched


def test_seed_makes_runs_with_loader_workers_reproducible(tmp_path, recipe_path):
    args = [recipe_path("tiny"), "data.num_workers=2", "data.noise=1.0", "trainer.max_steps=8"]
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert main(["fit", *args, f"seed={seed}", f"run_dir={tmp_path / name}"]) == 0
    a, b, c = (_params(tmp_path / n / "checkpoints" / "last.ckpt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_validate_test_and_predict_write_results(tmp_path, recipe_path):
    assert main(["fit", recipe_path("tiny"), f"runs_root={tmp_path}"]) == 0
    run_dir = tmp_path / "tiny" / "version_0"
    assert main(["test", recipe_path("tiny"), f"runs_root={tmp_path}", "--ckpt", str(run_dir)]) == 0
    metrics = (tmp_path / "tiny" / "test_0" / "test_metrics.json").read_text()
    assert '"test/loss"' in metrics
    assert main(["validate", recipe_path("tiny"), f"runs_root={tmp_path}", "--ckpt", str(run_dir)]) == 0
    assert (tmp_path / "tiny" / "validate_0" / "validate_metrics.json").is_file()
    out = tmp_path / "preds.jsonl"
    assert main(["predict", recipe_path("tiny"), f"runs_root={tmp_path}", "--ckpt", str(run_dir),
                 "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 64 and '"prediction"' in lines[0]


def test_resume_restores_rng_states(tmp_path, recipe_path):
    # Dropout draws from the global RNG. Stopped at an epoch end (8 batches; this loader cannot resume mid-epoch)
    # and resumed, the run must continue the same random stream as the uninterrupted run.
    args = [recipe_path("tiny"), "model.dropout=0.5", "optim.lr=0.05", "data.shuffle=false"]
    assert main(["fit", *args, f"run_dir={tmp_path / 'whole'}", "trainer.max_steps=16"]) == 0
    assert main(["fit", *args, f"run_dir={tmp_path / 'pieces'}", "trainer.max_steps=8"]) == 0
    saved = torch.load(tmp_path / "pieces" / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(saved["lvu_rng"]) == 1 and set(saved["lvu_rng"][0]) >= {"torch", "numpy", "python"}
    assert main(["fit", *args, f"run_dir={tmp_path / 'pieces'}", "trainer.max_steps=16"]) == 0
    whole, pieces = (_params(tmp_path / n / "checkpoints" / "last.ckpt") for n in ("whole", "pieces"))
    assert all(torch.equal(whole[k], pieces[k]) for k in whole)


def test_incompatible_checkpoint_is_refused_with_every_mismatch(tmp_path, recipe_path, capsys):
    assert main(["fit", recipe_path("tiny"), f"run_dir={tmp_path}", "trainer.max_steps=2"]) == 0
    last = str(tmp_path / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    assert main(["fit", recipe_path("tiny"), f"run_dir={tmp_path / 'wide'}", "model.hidden=32", "--ckpt", last]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit this recipe" in err
    assert "3 tensor(s) of another shape" in err and "net.0.weight (checkpoint [16, 8], model [32, 8])" in err
    assert "model settings changed (checkpoint->recipe): model.hidden=16->32" in err
    assert not (tmp_path / "wide").exists()  # refused before any training: no folder left behind
    # Refused in an existing run (a changed model): its recorded recipe and checkpoint stay as they were.
    config = (tmp_path / "config.yaml").read_text()
    assert main(["fit", recipe_path("tiny"), f"run_dir={tmp_path}", "model.hidden=32", "trainer.max_steps=4"]) == 1
    assert "does not fit this recipe" in capsys.readouterr().err
    assert (tmp_path / "config.yaml").read_text() == config and not list(tmp_path.glob("config.*.yaml"))
    assert _step(tmp_path / "checkpoints" / "last.ckpt") == 2

    assert main(["fit", "quickstart/lvmae_pretrain", "data.train=unused", f"run_dir={tmp_path / 'other'}",
                 "--ckpt", last]) == 1
    err = capsys.readouterr().err
    assert "task: checkpoint 'test.tiny' (recipe tiny), this recipe 'lvmae.pretrain'" in err
    assert "tensor(s) the model has and the checkpoint lacks" in err


def test_a_second_writer_of_a_run_directory_is_refused_until_the_first_is_gone(tmp_path, recipe_path, capsys):
    """Two runs on one run_dir used to both exit 0 with their checkpoints and config.yaml mixed."""
    import json
    import signal
    import subprocess
    import sys

    from lvu.train.runlock import LOCK_FILE, run_lock

    run_dir = tmp_path / "shared"
    assert main(["fit", recipe_path("tiny"), f"run_dir={run_dir}", "trainer.max_steps=2"]) == 0
    config = (run_dir / "config.yaml").read_text()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from lvu.train.runlock import run_lock\n"
         f"with run_lock(Path({str(run_dir)!r})):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["fit", recipe_path("tiny"), f"run_dir={run_dir}", "trainer.max_steps=4"]) == 1
        err = capsys.readouterr().err
        assert f"run directory {run_dir} is in use by process {holder.pid} on " in err
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == holder.pid
        # The refused run changed nothing: same config, same last step.
        assert (run_dir / "config.yaml").read_text() == config and _step(run_dir / "checkpoints" / "last.ckpt") == 2
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # SIGKILL leaves the lock file but not the lock: the next run resumes at once.
    assert main(["fit", recipe_path("tiny"), f"run_dir={run_dir}", "trainer.max_steps=4"]) == 0
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 4
    # Re-entrant in one process (a task's folder, then a sub-run in it), released on exit.
    with run_lock(run_dir), run_lock(run_dir):
        pass
    with run_lock(run_dir):
        pass



def test_a_gpu_recipe_on_a_machine_without_one_stops_before_anything_is_written(tmp_path, recipe_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run_dir = tmp_path / "gpu"
    assert main(["fit", recipe_path("tiny"), f"run_dir={run_dir}", "trainer.accelerator=gpu"]) == 1
    assert "trainer.accelerator=gpu but this machine has no usable CUDA GPU" in capsys.readouterr().err
    assert not run_dir.exists()


def test_a_validation_monitor_without_validation_data_is_refused_before_training(tmp_path, recipe_path, capsys):
    """It used to exit 0 with no best checkpoint (or fail after the first epoch with a mistyped key)."""
    run_dir = tmp_path / "monitor"
    assert main(["fit", "quickstart/lvmae_pretrain", "data.train=unused", "data.val=null", f"run_dir={run_dir}",
                 "trainer.checkpoint.monitor=val/loss"]) == 1
    assert "trainer.checkpoint.monitor=val/loss needs validation data, but data.val is null" in capsys.readouterr().err
    assert not run_dir.exists()


def test_progress_is_written_as_lines_when_the_output_is_not_a_terminal(tmp_path, recipe_path, capsys):
    """Rich redraws one terminal line: a Slurm .out file showed no progress until the end of an epoch."""
    import re

    assert main(["fit", recipe_path("tiny"), f"run_dir={tmp_path / 'log'}", "trainer.progress_bar=auto",
                 "trainer.progress_every_n_steps=2"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lvu: epoch")]
    assert [re.search(r"step (\d+)/6", line).group(1) for line in lines] == ["2", "4", "6"]
    assert all(re.search(r"\d steps/s \| .*train/loss [\d.]+.* \| elapsed 0:00:\d\d \| ETA ", line) for line in lines)


def test_a_garbage_checkpoint_gets_one_line_that_says_so(tmp_path, capsys):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(bytes(range(256)) * 20)
    run_dir = tmp_path / "run"
    assert main(["fit", "quickstart/lvmae_pretrain", "data.train=unused", f"run_dir={run_dir}", "--ckpt",
                 str(garbage)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mmap" not in err  # it used to talk about torch.save's mmap option
    assert f"{garbage} (5120 bytes) is not a PyTorch checkpoint lvu can read" in err
    assert not run_dir.exists()


def test_a_full_disk_while_saving_is_one_line_saying_so(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as 'unexpected pos' under two chained tracebacks."""
    import shutil
    from collections import namedtuple

    import lvu.ckpt
    from lvu.errors import LvuError

    def full(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 576 vs 490")

    monkeypatch.setattr(lvu.ckpt.torch, "save", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(1 << 30, 1 << 30, 4096))
    (tmp_path / "last.ckpt").write_bytes(b"previous")
    with pytest.raises(LvuError, match=r"no space left on device while writing .*last\.ckpt \(0 MiB free on its file"):
        lvu.ckpt.atomic_save({"x": 1}, tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(1 << 40, 0, 1 << 40))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with space left: another failure, shown as it is
        lvu.ckpt.atomic_save({"x": 1}, tmp_path / "last.ckpt")


def test_a_read_only_run_folder_is_one_line(tmp_path, recipe_path, monkeypatch, capsys):
    import errno

    import lvu.train.run

    def read_only(run_dir):
        raise OSError(errno.EROFS, "Read-only file system", str(run_dir))

    monkeypatch.setattr(lvu.train.run, "run_lock", read_only)
    assert main(["fit", recipe_path("tiny"), f"run_dir={tmp_path / 'ro'}"]) == 1
    assert capsys.readouterr().err == f"lvu: error: read-only file system: {tmp_path / 'ro'}\n"
