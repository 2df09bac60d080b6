"""Exact resume on CUDA with Lightning's DeepSpeed strategy (ZeRO-2, ZeRO-3) in bf16. Skipped without a GPU.

Run on a GPU machine: ``pytest -m gpu tests/test_gpu.py``. Uses up to two GPUs (one process each).
``trainer.deterministic=true`` makes cuBLAS/cuDNN choose deterministic kernels, so the comparison is exact.
"""

from __future__ import annotations

import pytest
import torch
from test_resume import TOTAL_STEPS, _assert_identical, _final_state, _ok, _recipe, launch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from support.features import make_features  # noqa: E402

from lvu.errors import PREEMPTED_EXIT  # noqa: E402


@pytest.fixture(scope="module")
def feature_shards(tmp_path_factory):
    return make_features(tmp_path_factory.mktemp("features"), 96, dim=8, seed=3, per_shard=32)


@pytest.mark.parametrize("preset", ["deepspeed_zero2", "deepspeed_zero3"])
def test_cuda_deepspeed_bf16_resume_is_exact(preset, feature_shards, tmp_path):
    devices = min(2, torch.cuda.device_count())

    def args(run_dir):
        cpu = _recipe(feature_shards, run_dir, preset, devices=devices)
        return [a for a in cpu if a != "trainer.accelerator=cpu"] + [
            "trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "trainer.deterministic=true"]

    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    _ok(launch([*args(tmp_path / "reference"), f"trainer.max_steps={TOTAL_STEPS}"], env=env))
    run = tmp_path / "interrupted"
    _ok(launch([*args(run), "trainer.max_steps=5"], env=env))
    _ok(launch([*args(run), f"trainer.max_steps={TOTAL_STEPS}"], env={**env, "LVU_TEST_SIGNAL": "SIGUSR1:11"}),
        PREEMPTED_EXIT)
    _ok(launch([*args(run), f"trainer.max_steps={TOTAL_STEPS}"], env=env))
    info = torch.load(next((run / "checkpoints" / "last.ckpt" / "checkpoint").glob("*mp_rank_00_model_states.pt")),
                      map_location="cpu", weights_only=False)["lvu"]
    assert info["strategy"] == "LvuDeepSpeedStrategy"  # Lightning's CUDA strategy, not the CPU one
    _assert_identical(_final_state(tmp_path / "reference"), _final_state(run))
