"""FiLA-Video on the host-LM layer: scenes and merges inside the host's video path, the four-stage chain on a tiny
composed host with exactly Table 4's parts training, prediction in FiLA-Video and FiLA-Base modes, and stage 4
resuming bit-exactly under ZeRO-3."""

from __future__ import annotations

import json

import pytest
import torch
from support.hosts import FRAME, save_parts

from lvu.ckpt import consolidated_state_dict
from lvu.cli import main
from lvu.config import load_recipe
from lvu.quickstart.host_lm import write_frame_images
from lvu.tasks.fila import FiLATask
from lvu.tasks.host_lm import VideoInput

TOKENS = (FRAME // 4) ** 2  # the tiny SigLIP's patches per frame
POOLED = (FRAME // 4 // 2) ** 2  # after LLaVA-OneVision's 2x2 video pooling


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return save_parts(tmp_path_factory.mktemp("fila_parts"))


@pytest.fixture(scope="module")
def images(synth_shards, tmp_path_factory):
    return write_frame_images(synth_shards, tmp_path_factory.mktemp("fila_images") / "train")


def _host(parts) -> list[str]:
    vision, llm = parts
    return [f"host.vision={vision}", f"host.llm={llm}"]


def _module(parts, *overrides) -> FiLATask:
    cfg = load_recipe("quickstart/fila_stage4", [*_host(parts), "data.train=unused", "init.from=null",
                                                 "init.required=false", *overrides]).to_object()
    return FiLATask(cfg)


def _videos(frames: int, videos: int = 2) -> VideoInput:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (videos, frames, FRAME, FRAME, 3), dtype=torch.uint8, generator=generator)
    times = torch.arange(frames, dtype=torch.float32).repeat(videos, 1)
    return VideoInput(pixels, torch.ones(videos, frames, dtype=torch.bool), times, torch.full((videos,), frames * 1.0))


@pytest.mark.parametrize(("position", "tokens", "width"), [("before_projector", TOKENS, 32),
                                                           ("after_projector", TOKENS, 64),
                                                           ("after_pooling", POOLED, 64)])
def test_the_merge_sits_where_the_recipe_says_with_a_weight_of_the_right_shape(parts, position, tokens, width):
    module = _module(parts, f"model.position={position}").train()
    assert module.merge.weight.shape == (3, tokens, width) and torch.all(module.merge.weight == 1 / 3)
    made = module.video_tokens(_videos(12), None)
    # 12 frames, every 3 one scene: 4 merged frames of pooled tokens per video, then the newline token.
    assert [t.shape for t in made.tokens] == [(4 * POOLED + 1, 64)] * 2
    assert made.times == [[1.0, 4.0, 7.0, 10.0]] * 2  # each scene's mean frame time


def test_weighted_fusion_at_initialisation_is_temporal_averaging_inside_the_video_path(parts):
    module = _module(parts).train()
    videos = _videos(6, videos=1)
    with torch.no_grad():
        made = module.video_tokens(videos, None).tokens[0]
        host = module.host
        frames = host.encode_frames(host.normalize(videos.frames[0]))
        expected = host.join_video_frames(host.pool_video_frames(frames.view(2, 3, TOKENS, 64).mean(1)), [2])[0]
    torch.testing.assert_close(made, expected)


def test_evaluation_selects_scenes_and_fila_base_keeps_every_frame(parts):
    module = _module(parts).eval()
    with torch.no_grad():
        selected = module.video_tokens(_videos(12), None)
    assert [t.shape[0] for t in selected.tokens] == [4 * POOLED + 1] * 2 and len(selected.times[0]) == 4
    base = _module(parts, "scenes.eval=base").eval()
    with torch.no_grad():
        every = base.video_tokens(_videos(12), None)
    assert [t.shape[0] for t in every.tokens] == [12 * POOLED + 1] * 2 and every.times[0] == list(map(float, range(12)))
    # Fewer candidates than scenes: the scenes come from uniform selection instead of clustering.
    with torch.no_grad():
        few = module.video_tokens(_videos(3), None)
    assert [t.shape[0] for t in few.tokens] == [4 * POOLED + 1] * 2


def _stage(parts, recipe, shards, run_dir, *extra):
    return ["fit", f"quickstart/fila_{recipe}", *_host(parts), f"data.train={shards}", f"run_dir={run_dir}",
            "trainer.max_steps=2", "trainer.max_epochs=null", "trainer.log_every_n_steps=1", *extra]


def _changed(before: dict, after: dict) -> set[str]:
    return {k.split(".")[0] if not k.startswith("host.") else k.split(".")[1]
            for k in after if k in before and not torch.equal(before[k], after[k])}


def test_four_stages_chain_and_train_exactly_the_parts_of_table_4(parts, synth_shards, images, tmp_path):
    """Stage 1 trains the projector (and the video newline) alone; stages 2 and 3 the vision encoder, projector and
    LLM; stage 4 those and the merge module. Each starts from the previous stage's checkpoint."""
    import lightning as L

    L.seed_everything(0, verbose=False)  # as `lvu fit` seeds before building: the same new projector and newline
    initial = FiLATask(load_recipe("quickstart/fila_stage1", [*_host(parts), "data.train=unused"]).to_object())
    initial = initial.state_dict()
    previous, seen = None, {}
    data = {"stage1": images, "stage2": images, "stage3": images, "stage4": synth_shards}
    for stage, shards in data.items():
        extra = [f"init.from={previous}"] if previous else []
        assert main(_stage(parts, stage, shards, tmp_path / stage, *extra)) == 0
        previous = tmp_path / stage / "checkpoints" / "last.ckpt"
        seen[stage] = consolidated_state_dict(previous).state
    saved = {stage: {k.split(".")[1] if k.startswith("host.") else k.split(".")[0] for k in state}
             for stage, state in seen.items()}
    assert saved["stage1"] == {"projector", "newline"}
    assert saved["stage2"] == saved["stage3"] == {"vision", "projector", "newline", "model"}
    assert saved["stage4"] == {"vision", "projector", "newline", "model", "merge"}
    # The video newline trains with the projector but only videos use it: it moves in stage 4, not on images.
    assert _changed(initial, seen["stage1"]) == {"projector"}
    assert _changed(seen["stage1"], seen["stage2"]) == {"projector"}  # what both hold, moved on
    assert {"vision", "model"} <= _changed(initial, seen["stage2"])
    assert _changed(seen["stage2"], seen["stage3"]) == {"vision", "projector", "model"}
    assert _changed(seen["stage3"], seen["stage4"]) == {"vision", "projector", "newline", "model"}
    assert not torch.all(seen["stage4"]["merge.weight"] == 1 / 3)  # the merge trained in stage 4

    # Answers in FiLA-Video mode (scene selection) and FiLA-Base mode, from the stage-4 checkpoint.
    from lvu.data.shards import iter_samples, resolve_shards

    keys = [sample["__key__"] for sample in iter_samples(resolve_shards(str(synth_shards)), exts=("json",))]
    for mode in ("selection", "base"):
        out = tmp_path / f"answers_{mode}.jsonl"
        assert main(["predict", "quickstart/fila_stage4", *_host(parts), f"data.predict={synth_shards}",
                     f"scenes.eval={mode}", "generation.max_new_tokens=3", f"run_dir={tmp_path / mode}",
                     "--ckpt", str(previous), "--out", str(out)]) == 0
        answers = [json.loads(line) for line in out.read_text().splitlines()]
        assert all(isinstance(a["answer"], str) for a in answers)
        assert sorted(a["key"] for a in answers) == sorted(keys) and len(keys) == 10  # every video exactly once


def _lr_columns(run_dir) -> dict[str, float]:
    import csv

    with next((run_dir / "logs" / "csv").rglob("metrics.csv")).open() as f:
        return {k: float(v) for row in csv.DictReader(f) for k, v in row.items() if k.startswith("lr-") and v}


@pytest.mark.slow
def test_stage_4_full_fine_tuning_resumes_bit_exactly_under_zero3(parts, synth_shards, tmp_path):
    """Stage 4 on the composed host: vision encoder, projector, LLM and merge module all train in full, each at its
    own learning rate, on 2 ZeRO-3 processes; stopped mid-epoch and resumed, the run ends with the same weights as
    an uninterrupted one. (The host-LM layer's full fine-tuning case, tests/test_host_lm.py's parts aside.)"""
    from test_resume import Background, _assert_identical, _ok, assert_resumed, launch

    total = 4

    def args(run_dir, steps):
        return _stage(parts, "stage4", synth_shards, run_dir, "trainer=deepspeed_zero3", "trainer.accelerator=cpu",
                      "trainer.devices=2", "data.batch_size=1", f"trainer.max_steps={steps}",
                      f"optim.scheduler.total_steps={total}", "init.from=null", "init.required=false",
                      "parts.vision.lr=1e-3", "parts.projector.lr=4e-3", "parts.llm.lr=2e-3", "parts.method.lr=3e-3")

    reference, run = tmp_path / "reference", tmp_path / "run"
    with Background(args(reference, total), tmp_path / "reference.log") as uninterrupted:
        _ok(launch(args(run, 2), timeout=400))
        resumed = _ok(launch(args(run, total), timeout=400))
        uninterrupted.wait_ok()
    assert_resumed(resumed, run / "checkpoints" / "last.ckpt", 2)
    final = [consolidated_state_dict(r / "checkpoints" / "last.ckpt") for r in (reference, run)]
    assert final[0].global_step == final[1].global_step == total
    _assert_identical(final[0].state, final[1].state)
    held = {k.split(".")[1] if k.startswith("host.") else k.split(".")[0] for k in final[0].state}
    assert held == {"vision", "projector", "newline", "model", "merge"}
    assert {k.split("/", 1)[-1] for k in _lr_columns(reference)} == {"vision", "projector", "llm", "method"}
    assert not torch.all(final[0].state["merge.weight"] == 1 / 3)
