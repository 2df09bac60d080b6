"""Exact resume with 2 CPU processes (DDP, DeepSpeed ZeRO-2, ZeRO-3), graceful stops on signals, atomic saves.

Every multi-process run goes through tests/support/fit_driver.py (``lvu`` as a script; Lightning re-runs it for
rank 1). The model is a tiny LV-MAE on hand-made clip-embedding shards.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.features import make_features

from lvu.ckpt import consolidated_state_dict
from lvu.cli import main
from lvu.errors import PREEMPTED_EXIT

DRIVER = str(Path(__file__).parent / "support" / "fit_driver.py")
TOTAL_STEPS = 16  # 96 samples / (batch 4 x 2 ranks) = 12 steps per epoch: the runs cross an epoch boundary


@pytest.fixture(scope="module")
def feature_shards(tmp_path_factory) -> Path:
    return make_features(tmp_path_factory.mktemp("features"), 96, dim=8, seed=3, per_shard=32)


@pytest.fixture(scope="module")
def stopped_at_step_5(feature_shards, tmp_path_factory):
    """``copy(preset, dest)``: a 2-rank run of ``preset`` stopped by max_steps at step 5 (mid-epoch), copied to
    ``dest``. Each preset's run is made once per module; the tests that resume one work on their own copy."""
    made: dict[str, Path] = {}

    def copy(preset: str, dest: Path) -> Path:
        if preset not in made:
            made[preset] = tmp_path_factory.mktemp(f"stopped_{preset}")
            _ok(launch([*_recipe(feature_shards, made[preset], preset), "trainer.max_steps=5"]))
        shutil.copytree(made[preset], dest, symlinks=True)
        return dest

    return copy


def _recipe(shards: Path, run_dir: Path, preset: str, devices: int = 2) -> list[str]:
    return ["fit", "quickstart/lvmae_pretrain", f"data.train={shards}", "data.val=null", "data.batch_size=4",
            "data.num_workers=1", "model.input_dim=8", "model.embed_dim=8", "model.decoder_dim=8",
            "model.num_heads=2", "model.decoder_num_heads=2", "model.depth=1", f"run_dir={run_dir}",
            f"trainer={preset}", "trainer.accelerator=cpu", f"trainer.devices={devices}", "trainer.max_epochs=3",
            "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
            f"optim.scheduler.total_steps={TOTAL_STEPS}", "optim.scheduler.warmup_epochs=0",
            "optim.scheduler.warmup_steps=3"]


def _driver_env(env: dict[str, str] | None) -> dict[str, str]:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get(
        "PYTHONPATH", "")]), **(env or {})}
    full_env.pop("LVU_RUN_DIR", None)
    return full_env


def launch(args: list[str], *, env: dict[str, str] | None = None, timeout: int = 300,
           new_session: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, DRIVER, *args], capture_output=True, text=True, env=_driver_env(env),
                          timeout=timeout, start_new_session=new_session)


class Background:
    """``launch`` in the background, output (both streams) in ``log``: an uninterrupted reference run goes alongside
    the interrupted one it is compared with. A launch is mostly one rank importing at a time, so two of them share
    2 cores well. Used as a context manager, it is stopped (both ranks: its own process group) if the test fails
    before ``wait_ok``."""

    def __init__(self, args: list[str], log: Path, script: str = DRIVER) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen([sys.executable, script, *args], stdout=out, stderr=subprocess.STDOUT,
                                            env=_driver_env(None), start_new_session=True)

    def wait_ok(self, timeout: int = 450) -> None:  # under pytest's own 600 s, so this message is the one shown
        code = self.process.wait(timeout=timeout)
        assert code == 0, f"exit {code}\n{self.log.read_text(errors='replace')[-6000:]}"

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None or exc_info[0] is not None:  # the other ranks too, even if rank 0 is gone
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _ok(result: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def assert_resumed(result: subprocess.CompletedProcess, checkpoint: Path, step: int) -> None:
    """The leg resumed ``checkpoint``, saved at ``step``, and its training really started there (a resume that
    silently restarted from scratch would say "Training from step 0")."""
    output = result.stdout + result.stderr
    assert f"Resuming from {checkpoint} (step {step})" in output, output[-3000:]
    assert f"Training from step {step} " in output, output[-3000:]


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    loaded = consolidated_state_dict(run_dir / "checkpoints" / "last.ckpt")
    state, client = loaded.state, loaded.entries
    assert client["global_step"] == TOTAL_STEPS
    return state


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"parameters differ after resume: {different[:5]}"


@pytest.mark.parametrize("preset", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_stopped_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(preset, feature_shards, stopped_at_step_5,
                                                                            tmp_path):
    reference = tmp_path / "reference"
    with Background([*_recipe(feature_shards, reference, preset), f"trainer.max_steps={TOTAL_STEPS}"],
                    tmp_path / "reference.log") as uninterrupted:
        # 1. stopped by max_steps, mid-epoch
        run = stopped_at_step_5(preset, tmp_path / "interrupted")
        # 2. resumed, then stopped by a signal that reaches rank 0 only, mid-epoch of the second epoch
        stopped = _ok(launch([*_recipe(feature_shards, run, preset), f"trainer.max_steps={TOTAL_STEPS}"],
                             env={"LVU_TEST_SIGNAL": "SIGUSR1:14"}), PREEMPTED_EXIT)
        assert_resumed(stopped, run / "checkpoints" / "last.ckpt", 5)
        assert "stopped by SIGUSR1 at step 14" in stopped.stderr
        assert consolidated_state_dict(run / "checkpoints" / "last.ckpt").global_step == 14
        # 3. resumed to the end with the same command
        final = _ok(launch([*_recipe(feature_shards, run, preset), f"trainer.max_steps={TOTAL_STEPS}"]))
        assert_resumed(final, run / "checkpoints" / "last.ckpt", 14)
        uninterrupted.wait_ok()

    _assert_identical(_final_state(reference), _final_state(run))


def test_sigterm_stops_gracefully_and_resumes_exactly(feature_shards, tmp_path):
    reference = tmp_path / "reference"
    args = [f"trainer.max_steps={TOTAL_STEPS}", f"data.val={feature_shards}"]  # validation at epoch ends
    uninterrupted = Background([*_recipe(feature_shards, reference, "ddp"), *args], tmp_path / "reference.log")
    with uninterrupted:
        run = tmp_path / "run"
        stopped = _ok(launch([*_recipe(feature_shards, run, "ddp"), *args], env={"LVU_TEST_SIGNAL": "SIGTERM:6"}),
                      PREEMPTED_EXIT)
        uninterrupted.wait_ok()
    assert "stopped by SIGTERM at step 6" in stopped.stderr and "run the same command to resume" in stopped.stderr
    # No validation pass after the signal (Lightning runs one when a run stops mid-epoch): time is short.
    with (run / "logs" / "csv" / "version_0" / "metrics.csv").open() as f:
        assert not [row for row in csv.DictReader(f) if row.get("val/loss")]
    resumed = _ok(launch([*_recipe(feature_shards, run, "ddp"), *args]))
    assert_resumed(resumed, run / "checkpoints" / "last.ckpt", 6)
    _assert_identical(_final_state(reference), _final_state(run))


@pytest.mark.parametrize("preset", ["cpu", "deepspeed_zero2"])
def test_kill_during_a_checkpoint_save_leaves_the_run_resumable(preset, feature_shards, tmp_path):
    args = [*_recipe(feature_shards, tmp_path, preset, devices=1), "trainer.checkpoint.every_n_train_steps=2",
            "trainer.max_steps=8"]
    killed = launch(args, env={"LVU_TEST_KILL_IN_SAVE": "3"})  # saves at steps 2, 4, then killed saving step 6
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = tmp_path / "checkpoints"
    assert consolidated_state_dict(checkpoints / "last.ckpt").global_step == 4  # the old one survived
    resumed = _ok(launch(args))
    assert_resumed(resumed, checkpoints / "last.ckpt", 4)
    assert consolidated_state_dict(checkpoints / "last.ckpt").global_step == 8
    assert not list(checkpoints.glob(".*partial*"))


def test_a_two_rank_zero_run_killed_during_a_save_resumes_from_the_previous_checkpoint(feature_shards, tmp_path):
    """Every rank SIGKILLed while DeepSpeed writes a checkpoint (rank 0 kills the process group half-way through its
    own files): the previous checkpoint is intact, the run resumes from it and ends bit-identical to an
    uninterrupted run."""
    args = [*_recipe(feature_shards, tmp_path / "run", "deepspeed_zero2"), "trainer.checkpoint.every_n_train_steps=2",
            "trainer.max_steps=8"]
    with Background([*_recipe(feature_shards, tmp_path / "reference", "deepspeed_zero2"), "trainer.max_steps=8"],
                    tmp_path / "reference.log") as uninterrupted:
        killed = launch(args, env={"LVU_TEST_KILL_IN_SAVE": "3"}, new_session=True)  # saves 2, 4; killed saving 6
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        checkpoints = tmp_path / "run" / "checkpoints"
        assert consolidated_state_dict(checkpoints / "last.ckpt").global_step == 4  # the previous one survived
        assert (checkpoints / ".last.ckpt.partial").is_dir()  # the cut save, never swapped in
        resumed = _ok(launch(args))
        uninterrupted.wait_ok()
    assert_resumed(resumed, checkpoints / "last.ckpt", 4)
    assert consolidated_state_dict(checkpoints / "last.ckpt").global_step == 8
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]
    reference = consolidated_state_dict(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    _assert_identical(reference.state, consolidated_state_dict(checkpoints / "last.ckpt").state)


def test_convert_writes_one_fp32_state_dict_that_evaluation_loads(stopped_at_step_5, tmp_path, capsys):
    run = stopped_at_step_5("deepspeed_zero3", tmp_path / "run")
    out = tmp_path / "lvmae.pt"
    assert main(["ckpt", "convert", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = torch.load(out, weights_only=True)
    assert converted["global_step"] == 5 and converted["lvu"]["task"] == "lvmae.pretrain"
    assert all(t.dtype == torch.float32 for t in converted["state_dict"].values())
    assert not any(k.startswith("_forward_module") for k in converted["state_dict"])
    # The same weights DeepSpeed holds, and a model of the recipe loads them strictly.
    from lvu.config import load_recipe

    recipe = load_recipe(run / "config.yaml")
    module = recipe.task.build_module(recipe.to_object())
    module.load_state_dict(converted["state_dict"], strict=True)
    assert main(["ckpt", "convert", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 1
    assert "pass --force" in capsys.readouterr().err
    # LV-MAE probes take the ZeRO-3 folder itself as probe.pretrained (partitions gathered), like the converted file.
    from lvu.tasks.lvmae import load_pretrained, pretrained_config

    folder, file = load_pretrained(run / "checkpoints" / "last.ckpt"), load_pretrained(out)
    assert folder.config == file.config == pretrained_config(run / "checkpoints" / "last.ckpt")
    assert folder.state.keys() == file.state.keys() and all(torch.equal(folder.state[k], file.state[k])
                                                            for k in file.state)


def _resume_loads_the_saved_parameters(run: Path, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Resume ``run`` with ``args``; assert the parameters training started from are the saved ones, exactly."""
    last = run / "checkpoints" / "last.ckpt"
    saved = consolidated_state_dict(last)
    loaded_file = tmp_path / "parameters_at_start.pt"
    resumed = _ok(launch(args, env={"LVU_TEST_PARAMETERS_AT_START": str(loaded_file)}))
    assert_resumed(resumed, last, saved.global_step)
    loaded = torch.load(loaded_file, weights_only=True)
    assert loaded and set(loaded) <= set(saved.state)
    _assert_identical(loaded, {k: saved.state[k].float() for k in loaded})
    return resumed


@pytest.mark.parametrize("preset", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_resume_on_a_smaller_world_size(preset, feature_shards, stopped_at_step_5, tmp_path):
    run = stopped_at_step_5(preset, tmp_path / "run")
    resumed = _resume_loads_the_saved_parameters(
        run, [*_recipe(feature_shards, run, preset, devices=1), "trainer.max_steps=8"], tmp_path)
    out = resumed.stdout + resumed.stderr
    assert "data position restored approximately" in out and "RNG states of 2 ranks and this run has 1" in out
    last = run / "checkpoints" / "last.ckpt"
    assert consolidated_state_dict(last).global_step == 8
    if preset.startswith("deepspeed"):
        assert "written by 2 ranks and this run has 1: loading it through a DeepSpeed universal checkpoint" in out
        # The optimiser state came along: Adam has taken 5 + 3 steps, not 3 from a fresh start.
        (optim,) = (last / "checkpoint").glob("*optim_states.pt")
        state = torch.load(optim, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        inner = "optimizer_state_dict" if preset == "deepspeed_zero3" else "base_optimizer_state"
        adam = state[inner]["state"]
        assert {float(s["step"]) for s in adam.values()} == {8.0}
        # Each parameter group keeps its own settings (DeepSpeed's ZeRO-3 universal loading copies group 0's).
        groups = state[inner]["param_groups"]
        assert len({g["name"] for g in groups}) == len(groups) == 2
        assert {g["weight_decay"] for g in groups} == {0.0, 0.05}
        assert not (run / "checkpoints" / ".last.ckpt.universal").exists()  # removed once stale


@pytest.mark.parametrize("preset", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_resume_on_a_larger_world_size(preset, feature_shards, tmp_path):
    run = tmp_path / "run"
    _ok(launch([*_recipe(feature_shards, run, preset, devices=1), "trainer.max_steps=5"]))
    resumed = _resume_loads_the_saved_parameters(
        run, [*_recipe(feature_shards, run, preset, devices=2), "trainer.max_steps=8"], tmp_path)
    assert "data position restored approximately" in resumed.stdout + resumed.stderr
    assert consolidated_state_dict(run / "checkpoints" / "last.ckpt").global_step == 8


def test_a_deepspeed_save_killed_between_its_renames_resumes_from_the_newest_complete_copy(
        feature_shards, stopped_at_step_5, tmp_path):
    """The state a kill leaves between the two renames of a DeepSpeed save: no last.ckpt, the previous checkpoint
    moved aside (.last.ckpt.old, step 5) and the new one complete but not yet in place (.last.ckpt.partial, step 7).
    The run resumes from the newer copy, ends exactly as an uninterrupted run, and leaves no debris."""
    preset = "deepspeed_zero2"
    with Background([*_recipe(feature_shards, tmp_path / "reference", preset), "trainer.max_steps=8"],
                    tmp_path / "reference.log") as uninterrupted:
        run = stopped_at_step_5(preset, tmp_path / "run")
        checkpoints = run / "checkpoints"
        shutil.copytree(checkpoints / "last.ckpt", tmp_path / "step5")
        _ok(launch([*_recipe(feature_shards, run, preset), "trainer.max_steps=7"]))
        os.replace(checkpoints / "last.ckpt", checkpoints / ".last.ckpt.partial")
        os.replace(tmp_path / "step5", checkpoints / ".last.ckpt.old")
        resumed = _ok(launch([*_recipe(feature_shards, run, preset), "trainer.max_steps=8"]))
        uninterrupted.wait_ok()
    assert "is missing or incomplete (a save was interrupted); resuming from" in resumed.stderr
    assert_resumed(resumed, checkpoints / ".last.ckpt.partial", 7)
    assert consolidated_state_dict(checkpoints / "last.ckpt").global_step == 8
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith(".last")) == []
    reference = consolidated_state_dict(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    _assert_identical(reference.state, consolidated_state_dict(checkpoints / "last.ckpt").state)


def test_ckpt_universal_command(feature_shards, stopped_at_step_5, tmp_path, capsys):
    stopped_at_step_5("deepspeed_zero2", tmp_path / "run")
    out = tmp_path / "uni"
    assert main(["ckpt", "universal", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    assert "written by 2 ranks" in capsys.readouterr().out
    assert (out / "latest_universal").read_text() == "checkpoint" and list((out / "checkpoint" / "zero").iterdir())
    _ok(launch([*_recipe(feature_shards, tmp_path / "more", "deepspeed_zero2", devices=1), "trainer.max_steps=7",
                "--ckpt", str(out)]))
    assert consolidated_state_dict(tmp_path / "more" / "checkpoints" / "last.ckpt").global_step == 7


def test_a_moved_run_folder_resumes_in_place(recipe_path, tmp_path, caplog):
    # Lightning drops ModelCheckpoint's history when its folder changed: the resumed run wrote last-v1.ckpt beside
    # the old last.ckpt, and the next resume went back to the old one.
    args = ["fit", recipe_path("tiny"), "trainer.accelerator=cpu", "trainer.devices=1"]
    assert main([*args, f"run_dir={tmp_path / 'scratch'}", "trainer.max_steps=4"]) == 0
    shutil.move(tmp_path / "scratch", tmp_path / "project")
    assert main([*args, f"run_dir={tmp_path / 'project'}", "trainer.max_steps=6"]) == 0
    assert "the run folder was moved" in caplog.text
    checkpoints = tmp_path / "project" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 6


def test_every_rank_gets_its_own_rng_state_back(tmp_path, recipe_path):
    # Dropout on two ranks that draw from different global RNG streams: restoring rank 0's state on rank 1 (or
    # none) would change rank 1's masks after the resume and, through the averaged gradients, the parameters.
    args = ["fit", recipe_path("tiny"), "model.dropout=0.5", "model.rank_seeds=true", "data.shuffle=false",
            "optim.lr=0.05", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    _ok(launch([*args, f"run_dir={tmp_path / 'whole'}", "trainer.max_steps=8"]))
    _ok(launch([*args, f"run_dir={tmp_path / 'pieces'}", "trainer.max_steps=4"]))  # an epoch end: 64 / (8 x 2)
    saved = torch.load(tmp_path / "pieces" / "checkpoints" / "last.ckpt", weights_only=True)["lvu_rng"]
    assert len(saved) == 2 and not torch.equal(saved[0]["torch"], saved[1]["torch"])
    resumed = _ok(launch([*args, f"run_dir={tmp_path / 'pieces'}", "trainer.max_steps=8"]))
    assert_resumed(resumed, tmp_path / "pieces" / "checkpoints" / "last.ckpt", 4)
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    pieces = torch.load(tmp_path / "pieces" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    _assert_identical(whole, pieces)


def test_world_size_is_read_from_shard_names_bf16_included(tmp_path):
    from lvu.train.universal import deepspeed_world_size

    for name, files in {"fp32": ["zero_pp_rank_{r}_mp_rank_00_optim_states.pt"],
                        "bf16": ["bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt"],
                        "zero3": ["zero_pp_rank_{r}_mp_rank_00_model_states.pt",
                                  "zero_pp_rank_{r}_mp_rank_00_optim_states.pt"]}.items():
        tag = tmp_path / name / "checkpoint"
        tag.mkdir(parents=True)
        (tmp_path / name / "latest").write_text("checkpoint")
        for rank in range(4):
            for pattern in files:
                (tag / pattern.format(r=rank)).touch()
        assert deepspeed_world_size(tmp_path / name) == 4, name


def test_ckpt_universal_refuses_to_replace_a_foreign_folder(tmp_path, capsys):
    source = tmp_path / "last.ckpt" / "checkpoint"
    source.mkdir(parents=True)
    (source / "zero_pp_rank_0_mp_rank_00_optim_states.pt").touch()
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["ckpt", "universal", str(tmp_path / "last.ckpt"), "--out", str(out)]) == 1
    assert "is not a universal checkpoint made by lvu; pass --force" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return bool(caught >> (signum - 1) & 1)


def test_a_signal_while_lvu_fit_is_still_starting_is_acted_on_not_fatal(feature_shards, tmp_path):
    """SIGUSR1 in the first seconds (imports: Lightning, torch) used to end the process with nothing saved (the
    signal's default action). Now it is noted from the first moment and acted on at the first step boundary: saved,
    stopped with the graceful exit code, and the run resumes from there."""
    import signal
    import subprocess
    import sys
    import time

    from lvu.errors import PREEMPTED_EXIT

    run_dir = tmp_path / "early"
    command = [sys.executable, "-c", "import sys; from lvu.cli import main; sys.exit(main())",
               *_recipe(feature_shards, run_dir, "cpu", devices=1), "trainer.max_steps=6"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not _catches(process.pid, signal.SIGUSR1):  # the CLI has parsed its arguments, nothing heavy yet
        assert process.poll() is None and time.monotonic() < deadline, "the CLI never installed its handler"
        time.sleep(0.005)
    assert "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text()  # still starting: torch not loaded yet
    process.send_signal(signal.SIGUSR1)
    _, err = process.communicate(timeout=120)
    assert process.returncode == PREEMPTED_EXIT, err[-2000:]
    assert "stopped by SIGUSR1 at step 1" in err
    assert consolidated_state_dict(run_dir / "checkpoints" / "last.ckpt").global_step == 1
    assert main([*_recipe(feature_shards, run_dir, "cpu", devices=1), "trainer.max_steps=6"]) == 0
    assert consolidated_state_dict(run_dir / "checkpoints" / "last.ckpt").global_step == 6


def test_without_graceful_stops_an_early_signal_keeps_its_default_action(feature_shards, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-c", "import sys; from lvu.cli import main; sys.exit(main())",
               *_recipe(feature_shards, tmp_path / "plain", "cpu", devices=1), "trainer.preemption.enabled=false"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not _catches(process.pid, signal.SIGTERM):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == -signal.SIGTERM  # delivered once the recipe said: no graceful stop
    assert not list((tmp_path / "plain").glob("checkpoints/*.ckpt"))


def test_a_graceful_stop_under_slurm_that_lvu_did_not_requeue_says_how_it_resumes():
    from lvu.errors import Preempted

    message = str(Preempted(signal.SIGTERM, 6, "runs/x/checkpoints/last.ckpt", requeued=False, slurm_job="4242"))
    assert "stopped by SIGTERM at step 6" in message and "run the same command" not in message
    assert "if Slurm requeues job 4242 (preemption with --requeue) it resumes from there" in message
    assert "run the same command to resume" in str(Preempted(signal.SIGTERM, 6, None, requeued=False))
