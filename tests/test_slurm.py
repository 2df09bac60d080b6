"""`lvu slurm submit` and preemption against a real Slurm (a one-node cluster on localhost).

The cluster comes from slurm/local-cluster.sh (CI runs it; so does this module when it is root and no cluster
answers). Without one these tests skip with the reason, except under ``LVU_REQUIRE_SLURM=1`` (CI), where that is a
failure. The checks that need no cluster (rendering, validation) run everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import eval_args
from support.features import make_features
from test_resume import DRIVER, Background, _assert_identical

from lvu.ckpt import consolidated_state_dict
from lvu.cli import main
from lvu.errors import LvuError

REPO = Path(__file__).resolve().parents[1]
STEPS = 600  # long enough that the signal, sent once a checkpoint exists (step 20), lands mid-training


def _lvu_args(shards: Path, preset: str) -> list[str]:
    return ["quickstart/lvmae_pretrain", f"data.train={shards}", "data.val=null", "data.batch_size=4",
            "data.num_workers=0", "model.input_dim=8", "model.embed_dim=8", "model.decoder_dim=8", "model.num_heads=2",
            "model.decoder_num_heads=2", "model.depth=1", f"trainer={preset}", "trainer.accelerator=cpu",
            "trainer.max_epochs=null", f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=50",
            "trainer.enable_model_summary=false", "trainer.checkpoint.every_n_train_steps=20"]


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return result.returncode == 0 and bool(re.search(r"idle|mix|alloc", result.stdout))


@pytest.fixture(scope="module")
def slurm() -> None:
    if not _cluster_up() and os.geteuid() == 0:
        subprocess.run([str(REPO / "slurm" / "local-cluster.sh")], capture_output=True, text=True, timeout=600)
    if not _cluster_up():
        reason = "no Slurm cluster answers `sinfo` and slurm/local-cluster.sh could not start one"
        if os.environ.get("LVU_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_features(tmp_path_factory.mktemp("slurm_features"), 96, dim=8, seed=3, per_shard=32)


def _submit(args: list[str], cwd: Path) -> tuple[str, str]:
    result = subprocess.run([sys.executable, "-m", "lvu", "slurm", "submit", *args], cwd=cwd, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO / "tests")})
    assert result.returncode == 0, result.stderr
    job = re.search(r"submitted (?:array )?job (\d+)", result.stdout)
    assert job, result.stdout
    return job.group(1), result.stdout


def _job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _wait(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _log(log_dir: Path, job_id: str) -> str:
    files = list(log_dir.glob(f"*-{job_id}*.out"))
    return "\n".join(f.read_text(errors="replace") for f in files)


@pytest.mark.parametrize("preset", ["ddp", "deepspeed_zero2"])
def test_preempted_job_requeues_resumes_and_matches_an_uninterrupted_run(slurm, shards, preset, tmp_path):
    reference = tmp_path / "reference"
    # The uninterrupted run needs no cluster: it runs while the job does (much of the job's time is waiting).
    with Background(["fit", *_lvu_args(shards, preset), "trainer.devices=2", f"run_dir={reference}"],
                    tmp_path / "reference.log") as uninterrupted:
        job, printed = _submit([*_lvu_args(shards, preset), f"runs_root={tmp_path / 'runs'}", "--nodes", "1",
                                "--gpus-per-node", "2", "--cpus-per-task", "1", "--log-dir",
                                str(tmp_path / "logs")], tmp_path)
        run_dir = tmp_path / "runs" / "quickstart" / "lvmae_pretrain" / f"slurm-{job}"
        assert f"checkpoints: {run_dir}/checkpoints/" in printed
        try:
            _wait(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), 300, "the first checkpoint")
            subprocess.run(["scancel", "--signal=USR1", job], check=True)  # what Slurm does 90 s before the limit

            # Slurm starts a requeued job again once its old credentials expired (local-cluster.sh: 15 s). Forcing
            # it earlier (scontrol update StartTime=now) races the old run's clean-up: "Job credential revoked".
            _wait(lambda: _job(job).get("JobState") == "COMPLETED" and "fit finished" in _log(tmp_path / "logs", job),
                  600, "the job to requeue itself, restart and finish", interval=0.5)
        finally:
            subprocess.run(["scancel", job], capture_output=True)
        uninterrupted.wait_ok()
    log = _log(tmp_path / "logs", job)
    assert _job(job)["JobState"] == "COMPLETED", log[-4000:]
    stopped = re.search(r"stopped by SIGUSR1 at step (\d+)", log)
    assert stopped and 20 <= int(stopped.group(1)) < STEPS, log[-4000:]
    step = int(stopped.group(1))
    assert "job requeued" in log and "(restart 1)" in log
    # The restarted leg resumed the checkpoint saved at the signal and trained from there, not from scratch.
    assert f"Resuming from {run_dir}/checkpoints/last.ckpt (step {step})" in log, log[-4000:]
    assert f"Training from step {step} " in log, log[-4000:]
    loaded = consolidated_state_dict(run_dir / "checkpoints" / "last.ckpt")
    state, client = loaded.state, loaded.entries
    assert client["global_step"] == STEPS
    _assert_identical(consolidated_state_dict(reference / "checkpoints" / "last.ckpt").state, state)


def test_devices_that_disagree_with_the_job_fail_before_training(slurm, shards, tmp_path):
    args = " ".join(_lvu_args(shards, "ddp"))
    result = subprocess.run(
        ["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", f"--output={tmp_path}/job-%j.out",
         f"--chdir={tmp_path}", f"--wrap=srun {sys.executable} {DRIVER} fit {args} trainer.devices=1"],
        capture_output=True, text=True, check=True)
    job = result.stdout.strip()
    _wait(lambda: _job(job).get("JobState") in ("COMPLETED", "FAILED"), 300, "the job to end", interval=1)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert "lvu: error: trainer.devices=1 but this Slurm job runs --ntasks-per-node=2" in log
    assert "Traceback" not in log and "Epoch" not in log


def test_array_job_runs_one_override_set_per_task(slurm, shards, tmp_path):
    sets = tmp_path / "sets.txt"
    sets.write_text("# one run per line\nseed=1\nseed=2 model.mask_ratio=0.5\n")
    args = [a for a in _lvu_args(shards, "cpu") if not a.startswith("trainer.max_steps")]
    job, printed = _submit([*args, "trainer.max_steps=3", f"runs_root={tmp_path / 'runs'}", "--nodes", "1",
                            "--gpus-per-node", "1", "--array", str(sets), "--log-dir", str(tmp_path / "logs")],
                           tmp_path)
    assert "2 tasks" in printed
    runs = tmp_path / "runs" / "quickstart" / "lvmae_pretrain"
    _wait(lambda: all((runs / f"slurm-{job}_{i}" / "checkpoints" / "last.ckpt").exists() for i in (0, 1))
          and not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
          300, "both array tasks", interval=1)
    configs = [(runs / f"slurm-{job}_{i}" / "config.yaml").read_text() for i in (0, 1)]
    assert "seed: 1" in configs[0] and "mask_ratio: 0.4" in configs[0]
    assert "seed: 2" in configs[1] and "mask_ratio: 0.5" in configs[1]


def test_eval_job_answers_on_two_tasks_and_scores(slurm, eval_host, synth_shards, tmp_path):
    """`lvu slurm submit --command eval`: srun starts both ranks at once; they agree on the evaluation folder
    without talking (run_dir here; by default the checkpoint's run), answer each question once and rank 0 scores."""
    folder = tmp_path / "eval"
    args = [*eval_args(eval_host, synth_shards, folder, "eval=lvbench"), "trainer=ddp", "trainer.accelerator=cpu"]
    job, printed = _submit([*args, "--command", "eval", "--nodes", "1", "--gpus-per-node", "2",
                            "--log-dir", str(tmp_path / "logs")], tmp_path)
    assert "results:" in printed
    _wait(lambda: _job(job).get("JobState") in ("COMPLETED", "FAILED"), 300, "the eval job", interval=1)
    assert _job(job)["JobState"] == "COMPLETED", _log(tmp_path / "logs", job)
    results = json.loads((folder / "results.json").read_text())
    lines = [json.loads(line) for f in sorted((folder / "answers").glob("answers-rank*.jsonl"))
             for line in f.read_text().splitlines()]
    assert sorted(p.name for p in (folder / "answers").iterdir()) == ["answers-rank0.jsonl", "answers-rank1.jsonl"]
    assert len(lines) == len({a["uid"] for a in lines}) == results["metrics"]["questions"]
    assert "| accuracy/KIR |" in _log(tmp_path / "logs", job)


def test_seal_extraction_job_on_two_tasks_extracts_each_video_once(slurm, synth_shards, tmp_path):
    """`lvu slurm submit --command predict` of seal/extract: both ranks write parts, every video exactly once."""
    from test_seal_pipeline import VIDEOS, _args, _read

    from lvu.models.seal_tiny import save_tiny_clip, save_tiny_detector, save_tiny_sam2

    models = {"encoder": save_tiny_clip(tmp_path / "clip"), "sam2": save_tiny_sam2(tmp_path / "sam2"),
              "detector": save_tiny_detector(tmp_path / "detector")}
    out = tmp_path / "tokens"
    args = [*_args(models, synth_shards, out)[1:], "trainer=ddp", "trainer.accelerator=cpu"]
    job, printed = _submit([*args, "--command", "predict", "--nodes", "1", "--gpus-per-node", "2",
                            "--log-dir", str(tmp_path / "logs")], tmp_path)
    assert "outputs:" in printed
    _wait(lambda: _job(job).get("JobState") in ("COMPLETED", "FAILED"), 300, "the extraction job", interval=1)
    assert _job(job)["JobState"] == "COMPLETED", _log(tmp_path / "logs", job)
    names = sorted(p.name for p in out.glob("part-*.tar"))
    assert any(n.startswith("part-R000") for n in names) and any(n.startswith("part-R001") for n in names)
    assert len(_read(out)) == VIDEOS  # _read refuses a key written twice


# -- no cluster needed ---------------------------------------------------------------------------------------------


def test_dry_run_renders_the_template(shards, tmp_path, capsys):
    assert main(["slurm", "submit", *_lvu_args(shards, "ddp"), "--nodes", "2", "--gpus-per-node", "4",
                 "--time", "2:00:00", "--partition", "gpu", "--dry-run"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --time=2:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --signal=SIGUSR1@90", "#SBATCH --requeue"):
        assert line in script
    assert "#SBATCH --gres" not in script  # trainer.accelerator=cpu: processes, no GPUs
    assert "#SBATCH --account" not in script  # fields without a value drop their line
    assert "trainer.devices=4 trainer.num_nodes=2" in script and "{{" not in script.split("set -euo")[1]
    assert re.search(r"srun --kill-on-bad-exit=1 lvu fit \S+recipes/quickstart/lvmae_pretrain.yaml ", script)
    gpu = [a for a in _lvu_args(shards, "ddp") if a != "trainer.accelerator=cpu"]
    assert main(["slurm", "submit", *gpu, "--nodes", "1", "--gpus-per-node", "8", "--dry-run"]) == 0
    assert "#SBATCH --gres=gpu:8" in capsys.readouterr().out


def test_eval_job_renders_the_eval_command_and_refuses_a_fit_only_template(eval_host, synth_shards, tmp_path,
                                                                          capsys):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    args = [*eval_args(eval_host, synth_shards, tmp_path / "e", "eval=videomme"), "trainer=ddp"]
    assert main(["slurm", "submit", *args, "--command", "eval", "--ckpt", str(ckpt), "--nodes", "1",
                 "--gpus-per-node", "2", "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert re.search(rf"srun --kill-on-bad-exit=1 lvu eval --ckpt {re.escape(str(ckpt))} \S+uniform/instruct.yaml ",
                     script)
    old = tmp_path / "old.sbatch"
    old.write_text((REPO / "lvu" / "templates" / "train.sbatch").read_text().replace("{{command}}", "fit"))
    assert main(["slurm", "submit", *args, "--command", "eval", "--nodes", "1", "--gpus-per-node", "2",
                 "--template", str(old), "--dry-run"]) == 1
    assert "has no {{command}} field" in capsys.readouterr().err
    assert main(["slurm", "submit", *args[:-2], "--command", "eval", "--nodes", "1", "--gpus-per-node", "1",
                 "--dry-run"]) == 1
    assert "--command eval needs a benchmark: add eval=NAME" in capsys.readouterr().err
    # A training job reruns its command on every requeue: `fit --ckpt X` would go back to X each time.
    assert main(["slurm", "submit", *args, "--ckpt", str(ckpt), "--nodes", "1", "--gpus-per-node", "2",
                 "--dry-run"]) == 1
    assert "--ckpt is for --command eval" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["trainer.devices=2"], "trainer.devices=2 but --gpus-per-node 4"),
    (["trainer.num_nodes=3"], "trainer.num_nodes=3 but --nodes 2"),
    (["-data.train"], "missing required value (???): data.train"),
    (["trainer=cpu", "trainer.devices=auto"], "need a distributed strategy"),
    (["run_dir=/tmp/x"], "run_dir is set"),
])
def test_submit_refuses_jobs_that_cannot_run(shards, extra, message, capsys):
    args = [a for a in _lvu_args(shards, "ddp") if f"-{a.split('=')[0]}" not in extra]  # "-key" drops key
    extra = [e for e in extra if not e.startswith("-")]
    assert main(["slurm", "submit", *args, *extra, "--nodes", "2", "--gpus-per-node", "4", "--dry-run"]) == 1
    assert message in capsys.readouterr().err


def test_array_sets_are_checked_before_submitting(shards, tmp_path, capsys):
    sets = tmp_path / "sets.txt"
    sets.write_text("model.mask_ratio=0.5\nmodel.mask_ratoi=0.6\n")
    assert main(["slurm", "submit", *_lvu_args(shards, "ddp"), "--nodes", "1", "--gpus-per-node", "2",
                 "--array", str(sets), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "--array set 'model.mask_ratoi=0.6'" in err and "mask_ratio" in err
    sets.write_text("model.mask_ratio=0.5\nseed=4\n")
    assert main(["slurm", "submit", *_lvu_args(shards, "ddp"), "--nodes", "1", "--gpus-per-node", "2",
                 "--array", str(sets), "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in script and "0) set -- model.mask_ratio=0.5 ;;" in script
    assert "%x-%A_%a.out" in script


def test_render_fills_fields_and_drops_lines_without_a_value():
    from lvu.train.slurm import render

    assert render("a {{x}}\n#SBATCH --p={{p}}\nb", {"x": "1", "p": None}) == "a 1\nb\n"
    with pytest.raises(LvuError, match=r"unknown field\(s\) \{\{y\}\}"):
        render("{{y}}", {})


def test_lvu_probe_sweep_renders_nine_array_tasks(capsys):
    assert main(["slurm", "submit", "lvmae/lvu_attentive", "data.train=/data/lvu_feats", "probe.pretrained=pre.ckpt",
                 "--nodes", "1", "--gpus-per-node", "1", "--array", str(REPO / "slurm" / "lvu_tasks.txt"),
                 "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-8" in script
    assert "0) set -- probe.task=relationship ;;" in script and "8) set -- probe.task=view_count ;;" in script
