"""Every trainer preset trains, checkpoints and resumes on CPU (one process; multi-process runs are in the resume
tests). DeepSpeed on CPU goes through our CPUDeepSpeedStrategy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

from lvu.cli import main
from lvu.config import load_recipe
from lvu.train.strategies import CPUDeepSpeedStrategy, build_strategy


def _deepspeed_state(run_dir: Path) -> dict:
    # ZeRO-2 writes mp_rank_00_model_states.pt, ZeRO-3 zero_pp_rank_0_mp_rank_00_model_states.pt.
    (states,) = (run_dir / "checkpoints" / "last.ckpt" / "checkpoint").glob("*mp_rank_00_model_states.pt")
    # DeepSpeed's own pickles: trusted, written by this test.
    return torch.load(states, map_location="cpu", weights_only=False)


@pytest.mark.parametrize("preset", ["cpu", "ddp", "deepspeed_zero2", "deepspeed_zero3",
                                    pytest.param("deepspeed_zero3_offload", marks=pytest.mark.slow)])
def test_preset_trains_saves_and_resumes_on_cpu(preset, recipe_path, tmp_path, capsys):
    args = [recipe_path("tiny"), f"run_dir={tmp_path}", f"trainer={preset}", "trainer.accelerator=cpu",
            "trainer.devices=1"]
    assert main(["fit", *args, "trainer.max_steps=4"]) == 0
    assert main(["fit", *args, "trainer.max_steps=6"]) == 0
    last = tmp_path / "checkpoints" / "last.ckpt"
    if preset.startswith("deepspeed"):
        assert last.is_dir()
        state = _deepspeed_state(tmp_path)
        assert state["global_step"] == 6
        assert state["lvu"]["strategy"] == "CPUDeepSpeedStrategy"
        assert state["lvu"]["config"]["trainer"]["strategy"]["stage"] == (2 if preset == "deepspeed_zero2" else 3)
        capsys.readouterr()
        assert main(["ckpt", "inspect", str(last), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["format"] == "deepspeed" and info["global_step"] == 6 and info["parameters"] == 161
    else:
        ckpt = torch.load(last, weights_only=True)
        assert ckpt["global_step"] == 6
        assert ckpt["lvu"]["strategy"] == ("DDPStrategy" if preset == "ddp" else "SingleDeviceStrategy")


def test_deepspeed_presets_pick_the_cpu_strategy_only_without_cuda(recipe_path):
    cfg = load_recipe(recipe_path("tiny"), ["trainer=deepspeed_zero2"]).to_object().trainer
    assert isinstance(build_strategy(cfg.strategy, "cpu"), CPUDeepSpeedStrategy)
    gpu = build_strategy(cfg.strategy, "gpu")
    # On GPUs: Lightning's own strategy, with only its save made crash-safe.
    assert not isinstance(gpu, CPUDeepSpeedStrategy) and type(gpu).__mro__[1] is DeepSpeedStrategy


def test_inline_and_file_deepspeed_configs(recipe_path, tmp_path):
    from lvu.errors import ConfigError
    from lvu.train.strategies import deepspeed_config

    inline = load_recipe(recipe_path("tiny"), ["trainer=deepspeed_zero2",
                                               "trainer.strategy.config={zero_optimization: {stage: 1}}"])
    assert deepspeed_config(inline.to_object().trainer.strategy) == {"zero_optimization": {"stage": 1}}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 8}))
    from_file = load_recipe(recipe_path("tiny"), ["trainer=deepspeed_zero2", f"trainer.strategy.config={path}"])
    assert deepspeed_config(from_file.to_object().trainer.strategy)["train_micro_batch_size_per_gpu"] == 8
    missing = load_recipe(recipe_path("tiny"), ["trainer=deepspeed_zero2", "trainer.strategy.config=nope.json"])
    with pytest.raises(ConfigError, match=r"DeepSpeed config file nope\.json not found"):
        deepspeed_config(missing.to_object().trainer.strategy)
