"""LinVT's two stages (linvt/align, linvt/instruct) on tiny random hosts of each family and synthetic videos."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from support.hosts import FRAME, native_image_logits, save_host

from lvu.cli import main
from lvu.config import load_recipe


@pytest.fixture(scope="module", params=["llava_onevision", "qwen2_vl", "internvl"])
def host_path(request, tmp_path_factory):
    return save_host(request.param, tmp_path_factory.mktemp(request.param))


def _args(host_path, shards, run_dir, *extra):
    return ["fit", "linvt/align", f"host.path={host_path}", f"data.train={shards}", f"run_dir={run_dir}",
            "trainer=cpu", "trainer.precision=32-true", f"data.frame_size={FRAME}", "data.batch_size=2",
            "data.num_workers=0", "data.sampler.min_frames=2", "data.sampler.max_frames=4", "model.layers=1",
            "model.heads=2", "model.top_k=32", "model.queries=[4,2,1]", "trainer.progress_bar=none",
            "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false", "optim.lr=3e-3",
            "optim.scheduler.warmup_steps=0", "trainer.max_epochs=null", *extra]


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory):
    from conftest import SMALL_VIDEOS

    from lvu.data.synth import synthesize

    out = tmp_path_factory.mktemp("two") / "train"
    synthesize(out, 2, seed=3, cfg=SMALL_VIDEOS, quiet=True)
    return out


def _losses(run_dir, name="train/loss"):
    with (run_dir / "logs" / "csv" / "version_0" / "metrics.csv").open() as f:
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name)]


def test_align_trains_only_linvt_and_lowers_the_loss(host_path, two_videos, tmp_path):
    run_dir = tmp_path / "run"
    fixed = ["data.sampler.name=uniform", "data.sampler.num_frames=3"]  # one batch, the same frames: fit it
    assert main(_args(host_path, two_videos, run_dir, "trainer.max_steps=12", *fixed)) == 0
    losses = _losses(run_dir)
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    # The same batch again and again: with the host frozen, LinVT alone must lower the training objective. (The
    # caption term alone barely moves with a random frozen LLM, ~ln(vocab) whatever it reads, and the contrastive
    # term competes with it: the caption loss going down is checked with the contrastive term off below.)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05
    assert all(c >= 0 for c in _losses(run_dir, "train/contrastive_loss"))
    # What the task declares (and `trainer.checkpoint.monitor` is checked against) is what it logs.
    recipe = load_recipe(run_dir / "config.yaml")
    with (run_dir / "logs" / "csv" / "version_0" / "metrics.csv").open() as f:
        logged = {name for name in next(csv.reader(f)) if name.startswith(("train/", "val/"))}
    assert logged == {name for name in recipe.task.metrics(recipe.cfg) if name.startswith("train/")}
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state and all(k.startswith(("linvt.", "log_scale")) for k in state)  # the frozen host is not saved
    # Resuming restores LinVT and continues.
    assert main(_args(host_path, two_videos, run_dir, "trainer.max_steps=14", *fixed)) == 0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 14
    captions_only = tmp_path / "captions_only"
    assert main(_args(host_path, two_videos, captions_only, "trainer.max_steps=12", "loss.contrastive_weight=0",
                      *fixed)) == 0
    caption = _losses(captions_only, "train/caption_loss")
    assert sum(caption[-3:]) / 3 < sum(caption[:3]) / 3


def test_contrastive_negatives_come_from_every_rank(two_videos, tmp_path_factory, tmp_path):
    """Two DDP processes, one video each: every caption is scored against both videos. A rank that only saw its
    own video would have a single candidate and a loss of exactly 0."""
    from test_resume import _ok, launch

    host = save_host("qwen2_vl", tmp_path_factory.mktemp("ddp_host"))
    args = _args(host, two_videos, tmp_path / "run", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                 "data.batch_size=1", "trainer.max_steps=2", "data.sampler.name=uniform",
                 "data.sampler.num_frames=3")
    _ok(launch(args))
    first = _losses(tmp_path / "run", "train/contrastive_loss")[0]
    assert first > 0.05, first


def test_instruct_trains_lora_and_linvt_from_the_alignment_checkpoint(host_path, two_videos, tmp_path):
    fixed = ["data.sampler.name=uniform", "data.sampler.num_frames=3"]
    align = tmp_path / "align"
    assert main(_args(host_path, two_videos, align, "trainer.max_steps=2", *fixed)) == 0
    aligned = torch.load(align / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    args = _args(host_path, two_videos, tmp_path / "instruct", "trainer.max_steps=4", *fixed,
                 "init.from=" + str(align / "checkpoints" / "last.ckpt"))
    args[1] = "linvt/instruct"
    assert main(args) == 0
    state = torch.load(tmp_path / "instruct" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    lora = {k: v for k, v in state.items() if "lora_" in k}
    assert lora and all(k.startswith("host.") for k in lora)
    assert not [k for k in state if k.startswith("host.") and "lora_" not in k]  # base weights are not saved
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero: it trained
    # LinVT started from stage 1 and moved on.
    key = next(k for k in aligned if k.startswith("linvt."))
    assert not torch.equal(state[key], aligned[key])
    losses = _losses(tmp_path / "instruct")
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    # Resuming restores LinVT and the adapters and continues.
    args[args.index("trainer.max_steps=4")] = "trainer.max_steps=5"
    assert main(args) == 0
    assert torch.load(tmp_path / "instruct" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5


def test_instruct_input_errors(host_path, two_videos, tmp_path, capsys):
    from lvu.errors import LvuError
    from lvu.tasks.host_lm.conversation import Turn, conversation_of

    args = _args(host_path, two_videos, tmp_path / "x", "trainer.max_steps=1", "lora.targets=[nope_proj]",
                 "init.required=false")
    args[1] = "linvt/instruct"
    assert main(args) == 1
    assert "lora.targets ['nope_proj'] match no module of the llm part" in capsys.readouterr().err
    args = [a for a in args if not a.startswith(("lora.targets", "init."))]  # no stage-1 start given
    assert main(args) == 1
    assert "linvt/instruct starts from an earlier stage: set init.from=CKPT" in capsys.readouterr().err
    # A video shorter than the sampler needs: skipped and counted by default, one clear error with data.strict.
    args = _args(host_path, two_videos, tmp_path / "short", "trainer.max_steps=1", "data.strict=true",
                 "data.sampler.min_frames=900", "data.sampler.max_frames=900")
    assert main(args) == 1
    assert re.search(r"bad sample \(too_short\) in .*video has \d+ frames .*needs 900", capsys.readouterr().err)
    sample = {"__key__": "k", "annotation": {"conversations": [{"from": "human", "value": "what happens?"},
                                                               {"from": "gpt", "value": "nothing"}]}}
    with pytest.raises(LvuError, match=r"the question has no '<video>' or '<image>' placeholder"):
        conversation_of(sample, caption=False, caption_prompt="")
    sample["annotation"]["conversations"][0]["value"] = "<video>\nwhat happens?"
    assert conversation_of(sample, caption=False, caption_prompt="").turns == [Turn("user", "what happens?"),
                                                                               Turn("assistant", "nothing")]


def test_stage_1_refuses_a_contrastive_loss_without_negatives_and_varies_its_questions(host_path, two_videos,
                                                                                      tmp_path, capsys):
    from lvu.config import load_recipe
    from lvu.tasks.host_lm.conversation import conversation_of

    assert main(_args(host_path, two_videos, tmp_path / "one", "trainer.max_steps=1", "data.batch_size=1")) == 1
    assert ("loss.contrastive_weight=1 needs negatives, but a global batch of data.batch_size=1 x 1 device(s) holds "
            "one video") in capsys.readouterr().err
    assert not list((tmp_path / "one").glob("checkpoints/*.ckpt"))
    prompts = load_recipe("linvt/align", ["host.path=x", "data.train=x"]).to_object().prompt.caption_prompts
    asked = {conversation_of({"__key__": f"v{n}", "annotation": {"caption": "c"}}, caption=True, caption_prompt="",
                             caption_prompts=prompts).turns[0].text for n in range(40)}
    assert len(prompts) == 8 and asked == set(prompts)  # every question is used, each key always gets the same one
    again = conversation_of({"__key__": "v7", "annotation": {"caption": "c"}}, caption=True, caption_prompt="",
                            caption_prompts=prompts)
    assert again.turns[0].text == conversation_of({"__key__": "v7", "annotation": {"caption": "c"}}, caption=True,
                                                  caption_prompt="", caption_prompts=prompts).turns[0].text


# Stage 2 on every strategy (LoRA dropout draws from each rank's RNG stream: its restore is tested too); stage 1 where
# its cross-rank contrastive gather meets ZeRO-3's partitioning.
@pytest.mark.parametrize(("stage", "preset"), [("instruct", "cpu"), ("instruct", "ddp"),
                                               ("instruct", "deepspeed_zero2"), ("instruct", "deepspeed_zero3"),
                                               ("align", "deepspeed_zero3")])
def test_stopped_and_resumed_linvt_matches_an_uninterrupted_run(stage, preset, synth_shards, tmp_path_factory,
                                                                tmp_path):
    """Stopped mid-epoch, resumed: the same LinVT (and LoRA) as an uninterrupted run, bit for bit. (Stops by signal
    take the same save and restore path; test_resume.py covers them model-independently.)"""
    from test_resume import Background, _assert_identical, _ok, assert_resumed, launch

    from lvu.ckpt import consolidated_state_dict

    host = save_host("qwen2_vl", tmp_path_factory.mktemp(f"resume_host_{stage}_{preset}"))
    devices = 1 if preset == "cpu" else 2
    total = 7

    def args(run_dir, steps):
        extra = ["init.required=false", "lora.r=4"] if stage == "instruct" else []
        a = _args(host, synth_shards, run_dir, f"trainer={preset}", "trainer.accelerator=cpu",
                  f"trainer.devices={devices}", "data.batch_size=1", f"trainer.max_steps={steps}",
                  f"optim.scheduler.total_steps={total}", *extra)  # 10 videos / 2 ranks: 5 steps per epoch
        a[1] = f"linvt/{stage}"
        return a

    run = tmp_path / "run"
    with Background(args(tmp_path / "reference", total), tmp_path / "reference.log") as uninterrupted:
        _ok(launch(args(run, 3)))
        resumed = _ok(launch(args(run, total)))
        uninterrupted.wait_ok()
    assert_resumed(resumed, run / "checkpoints" / "last.ckpt", 3)
    final = [consolidated_state_dict(r / "checkpoints" / "last.ckpt") for r in (tmp_path / "reference", run)]
    assert final[0].global_step == final[1].global_step == total
    if stage == "instruct":
        assert any("lora_B" in k for k in final[0].state)
    _assert_identical(final[0].state, final[1].state)
    if preset.startswith("deepspeed"):  # exclude_frozen_parameters: the frozen host stays out of DeepSpeed saves
        saved_states = list((run / "checkpoints" / "last.ckpt").rglob("*model_states.pt"))
        assert saved_states  # the loop below checks something
        for states in saved_states:
            saved = torch.load(states, weights_only=False, map_location="cpu")
            assert not [k for k in saved["module"] if k.startswith("host.") and "lora_" not in k]
            assert not saved.get("frozen_param_fragments")


def _write_kinds(tmp_path, kinds, synth_shards):
    from support.mixed import write_mixed

    return write_mixed(tmp_path / "mixed", kinds, synth_shards)


def test_one_batch_mixes_video_image_and_text(host_path, synth_shards, tmp_path):
    shards = _write_kinds(tmp_path, [["video", "image", "text"]], synth_shards)
    args = _args(host_path, shards, tmp_path / "run", "trainer.max_steps=2", "data.batch_size=3",
                 "init.required=false")
    args[1] = "linvt/instruct"
    assert main(args) == 0
    losses = _losses(tmp_path / "run")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_an_image_through_the_linvt_model_gives_the_hosts_own_logits(host_path, tmp_path):
    """Images skip LinVT: the wrapped host (LoRA injected, B = 0 at the start) reproduces the family's native
    image forward on the same prompt."""
    from lvu.config import load_recipe
    from lvu.tasks.host_lm import MediaBatch
    from lvu.tasks.host_lm.conversation import Conversation, Turn
    from lvu.tasks.linvt import LinVTTask

    cfg = load_recipe("linvt/instruct", [f"host.path={host_path}", "data.train=unused", "init.required=false",
                                         f"data.frame_size={FRAME}", "model.layers=1", "model.heads=2",
                                         "model.top_k=8", "model.queries=[2,1]"]).to_object()
    model = LinVTTask(cfg).eval()
    image = torch.randint(0, 256, (1, 1, FRAME, FRAME, 3), dtype=torch.uint8)
    batch = MediaBatch(keys=["k"], kinds=["image"], frames=image, frame_mask=torch.ones(1, 1, dtype=torch.bool),
                       timestamps=torch.zeros(1, 1), durations=torch.zeros(1), captions=[None],
                       conversations=[Conversation([Turn("user", "what is it?"), Turn("assistant", "a")])],
                       pad=torch.tensor([False]))
    with torch.no_grad():
        visual = model.visual_tokens(batch)
        inputs = model.llm_inputs(batch, visual, answers=True)
        out = model.host(inputs.embeds, inputs.mask, None, inputs.positions)
        host = model.host
        native = native_image_logits(host, inputs.ids, inputs.mask, host.normalize(image[:, 0]))
    assert (inputs.ids == host.placeholder_id).sum() == len(visual.per_sample[0]) > 0
    torch.testing.assert_close(out.logits, native)


def test_host_pooling_feeds_linvt_the_video_paths_pooled_tokens(tmp_path_factory):
    from lvu.config import load_recipe
    from lvu.tasks.host_lm import TextInput, VideoInput
    from lvu.tasks.linvt import LinVTTask

    host = save_host("llava_onevision", tmp_path_factory.mktemp("pool_host"))
    seen = {}
    frames = torch.randint(0, 256, (1, 3, FRAME, FRAME, 3), dtype=torch.uint8)
    videos = VideoInput(frames, torch.ones(1, 3, dtype=torch.bool), torch.arange(3.0)[None], torch.tensor([3.0]))
    for pooling in (False, True):
        cfg = load_recipe("linvt/instruct", [f"host.path={host}", "data.train=unused", "init.required=false",
                                             f"data.frame_size={FRAME}", "model.layers=1", "model.heads=2",
                                             "model.top_k=8", "model.queries=[2,1]",
                                             f"model.host_pooling={str(pooling).lower()}"]).to_object()
        task = LinVTTask(cfg).eval()
        task.linvt.register_forward_pre_hook(lambda _m, args, p=pooling: seen.__setitem__(p, args[0].shape))
        text = TextInput(torch.zeros(1, 2, task.host.hidden_size), torch.ones(1, 2, dtype=torch.bool))
        with torch.no_grad():
            task.video_tokens(videos, text)
    side = FRAME // 4  # the tiny host's patch grid
    assert seen[False][:3] == (1, 3, side * side)
    assert seen[True][:3] == (1, 3, (side // 2) ** 2)  # LLaVA-OneVision's video path pools 2x2


def test_shot_numbers_reach_linvt_when_data_shots_is_on(synth_shards, tmp_path_factory):
    from lvu.config import load_recipe
    from lvu.tasks.host_lm import host_lm_data
    from lvu.tasks.linvt import LinVTTask

    host = save_host("qwen2_vl", tmp_path_factory.mktemp("shot_host"))
    cfg = load_recipe("linvt/align", [f"host.path={host}", f"data.train={synth_shards}", f"data.frame_size={FRAME}",
                                      "data.batch_size=2", "data.num_workers=0", "data.sampler.name=uniform",
                                      "data.sampler.num_frames=12", "model.layers=1", "model.heads=2",
                                      "model.top_k=32", "model.queries=[4,2,1]", "data.shots.enabled=true",
                                      "data.shots.fps=4"]).to_object()
    batch = next(iter(host_lm_data(cfg).loader("train")))
    assert batch.shots is not None and batch.shots.shape == batch.frame_mask.shape
    assert (batch.shots[batch.frame_mask] >= 0).all() and batch.shots.max() >= 1  # synthetic acts: several shots
    assert (batch.shots.diff(dim=1)[batch.frame_mask[:, 1:]] >= 0).all()  # numbered in time order
    task = LinVTTask(cfg).eval()
    seen = {}
    task.linvt.register_forward_pre_hook(lambda _m, _a, kwargs: seen.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        task.visual_tokens(batch)
    assert torch.equal(seen["frame_shots"], batch.shots)


def test_ranks_with_different_sample_kinds_stay_in_step_under_zero3(synth_shards, tmp_path_factory, tmp_path):
    """One rank's batches hold no video (text-only, then an image) while the other's are videos: every rank still
    runs the frame encoder, the image encoder and LinVT, and backward visits the same modules (ZeRO-3 gathers
    weights collectively there too)."""
    from test_resume import _ok, launch

    host = save_host("qwen2_vl", tmp_path_factory.mktemp("zero3_mixed_host"))
    shards = _write_kinds(tmp_path / "instruct", [["text", "image"], ["video", "video"]], synth_shards)
    args = _args(host, shards, tmp_path / "instruct" / "run", "trainer=deepspeed_zero3", "trainer.accelerator=cpu",
                 "trainer.devices=2", "data.batch_size=1", "trainer.max_steps=2", "init.required=false")
    args[1] = "linvt/instruct"
    _ok(launch(args, timeout=240))
    assert len(_losses(tmp_path / "instruct" / "run")) == 2
    # The ZeRO-3 folder exports whole LoRA matrices (gathered from both ranks' partitions), not shards.
    from safetensors.torch import load_file

    assert main(["ckpt", "export", str(tmp_path / "instruct" / "run" / "checkpoints" / "last.ckpt"),
                 str(tmp_path / "export")]) == 0
    adapter = load_file(str(tmp_path / "export" / "adapter" / "adapter_model.safetensors"))
    q_a = next(v for k, v in adapter.items() if k.endswith("q_proj.lora_A.weight"))
    assert q_a.shape == (16, 64) and q_a.abs().sum() > 0
    # Answering from the ZeRO-3 folder on one CPU process (consolidated on the fly); prediction needs neither
    # training shards nor the stage-1 checkpoint.
    settings = [a for a in _args(host, synth_shards, tmp_path / "p", "generation.max_new_tokens=3")[2:]
                if not a.startswith("data.train=")]
    assert main(["predict", "linvt/instruct", *settings, f"data.predict={tmp_path / 'instruct' / 'mixed'}",
                 "--ckpt", str(tmp_path / "instruct" / "run" / "checkpoints" / "last.ckpt")]) == 0
    answers = (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()
    assert len(answers) == 4 and not list((tmp_path / "p").glob("consolidated-*"))  # removed after use


def test_predict_answers_export_loads_back_and_a_later_run_starts_from_it(host_path, two_videos, tmp_path, capsys):
    from peft import PeftModel

    from lvu.data.shards import ShardReader, resolve_shards
    from lvu.models.linvt import LinVT
    from lvu.models.vlm import load_host

    fixed = ["data.sampler.name=uniform", "data.sampler.num_frames=3", "data.eval_frames=3", "init.required=false"]
    run = tmp_path / "instruct"
    args = _args(host_path, two_videos, run, "trainer.max_steps=3", *fixed)
    args[1] = "linvt/instruct"
    assert main(args) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    settings = [a for a in args[2:] if not a.startswith(("run_dir=", "trainer.max_steps"))]
    predict = ["predict", "linvt/instruct", *settings, "generation.max_new_tokens=4", f"data.predict={two_videos}"]

    # A shard set -> JSON lines with an answer per video.
    assert main([*predict, "--ckpt", str(ckpt), f"run_dir={tmp_path / 'p1'}", "--out", str(tmp_path / "a.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(isinstance(r["answer"], str) and r["question"] and r["reference"]
                                     for r in records)

    # One video and a question from the command line -> the answer on stdout.
    reader = ShardReader(resolve_shards(str(two_videos)))
    video = tmp_path / "clip.mp4"
    video.write_bytes(reader.read(0, 0)["mp4"])
    reader.close()
    capsys.readouterr()
    one = [a for a in predict if not a.startswith("data.predict=")]
    assert main([*one, "--ckpt", str(ckpt), f"run_dir={tmp_path / 'p2'}", "--video", str(video),
                 "--question", "what happens?"]) == 0
    answer = json.loads((tmp_path / "p2" / "predictions.jsonl").read_text())["answer"]
    assert capsys.readouterr().out == answer + "\n"  # (a random tiny host may well answer with nothing)

    # Export, then load each part with from_pretrained.
    out = tmp_path / "export"
    assert main(["ckpt", "export", str(ckpt), str(out)]) == 0
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    linvt = LinVT.from_pretrained(out / "linvt")
    for name, value in linvt.state_dict().items():
        assert torch.equal(value, state[f"linvt.{name}"])
    record = json.loads((out / "export.json").read_text())
    fresh = load_host(record["host_path"])
    # The adapter loads onto the whole transformers model, as peft users load one; only the LLM gets adapters.
    adapted = PeftModel.from_pretrained(fresh.model, out / "adapter")
    assert adapted.peft_config["default"].base_model_name_or_path == str(host_path)
    trained = {k.removeprefix("host.model."): v for k, v in state.items() if "lora_" in k}
    loaded = {k.removeprefix("base_model.model."): p for k, p in adapted.named_parameters() if "lora_" in k}
    assert trained.keys() == loaded.keys() and all(torch.equal(trained[k], loaded[k]) for k in trained)
    assert all(k.startswith(record["adapter_base"] + ".") for k in loaded)
    assert any(p.abs().sum() > 0 for k, p in loaded.items() if "lora_B" in k)  # trained, not the zero init
    # ... and gives lvu's logits on a text prompt.
    from lvu.config import load_recipe
    from lvu.tasks.linvt import LinVTTask

    task = LinVTTask(load_recipe("linvt/instruct", [*settings, "data.train=unused"]).to_object())
    task.load_state_dict(state, strict=False)
    ids = torch.randint(0, 200, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(adapted.eval()(input_ids=ids).logits, task.eval().host.model(input_ids=ids).logits)
    assert (out / "host" / "config.json").is_file() and not list((out / "host").glob("*.safetensors"))

    # A later run starts from the export and answers exactly as the checkpoint did.
    assert main([*predict, f"init.from={out}", f"run_dir={tmp_path / 'p3'}", "--out", str(tmp_path / "b.jsonl")]) == 0
    again = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in again] == [r["answer"] for r in records]


def test_stage_2_trains_lora_dropout_but_keeps_the_host_in_eval_mode(tmp_path_factory):
    from lvu.config import load_recipe
    from lvu.tasks.linvt import LinVTTask

    host = save_host("qwen2_vl", tmp_path_factory.mktemp("dropout_host"))
    cfg = load_recipe("linvt/instruct", [f"host.path={host}", "data.train=unused", "model.layers=1",
                                         "model.heads=2", "model.top_k=8", "model.queries=[2,1]"]).to_object()
    model = LinVTTask(cfg).train()
    dropouts = [m for n, m in model.host.named_modules() if n.endswith("lora_dropout.default")]
    assert dropouts and all(m.training for m in dropouts) and dropouts[0].p == 0.05
    assert not model.host.training and not model.host.language_model.training and model.linvt.training
    model.eval()
    assert not any(m.training for m in dropouts)


LEGACY = Path(__file__).parent / "data" / "legacy_linvt"  # see its README


def test_checkpoints_of_the_first_linvt_tasks_still_load(two_videos, tmp_path_factory, tmp_path, capsys):
    """Checkpoints of the old per-stage tasks (linvt.align, linvt.instruct) start, resume and export as the one
    linvt task: stage 1 -> init.from, stage 2 -> --ckpt resume, stage 2 -> export, the old export -> init.from."""
    from lvu.config import load_recipe
    from lvu.models.linvt import LinVT
    from lvu.tasks.linvt import LinVTTask

    host = save_host("qwen2_vl", tmp_path_factory.mktemp("legacy_host"))
    settings = ["model.layers=1", "model.heads=2", "model.top_k=32", "model.queries=[4,2,1]", "model.width=16",
                "model.mlp_ratio=1.0", "model.positions=false", "lora.r=4"]
    aligned = torch.load(LEGACY / "linvt_align.ckpt", weights_only=False)
    assert aligned["lvu"]["task"] == "linvt.align"
    cfg = load_recipe("linvt/instruct", [f"host.path={host}", "data.train=unused", f"data.frame_size={FRAME}",
                                         *settings, f"init.from={LEGACY / 'linvt_align.ckpt'}"]).to_object()
    state = LinVTTask(cfg).state_dict()
    assert all(torch.equal(state[k], v) for k, v in aligned["state_dict"].items() if k.startswith("linvt."))

    run = tmp_path / "resumed"
    args = _args(host, two_videos, run, "trainer.max_steps=3", "data.sampler.name=uniform",
                 "data.sampler.num_frames=3", *settings[4:], "init.required=false")
    args[1] = "linvt/instruct"
    args = [a for a in args if not a.startswith(("model.layers", "model.heads", "model.top_k", "model.queries"))]
    args += settings[:4]
    # Saved before LinVT had positions: resuming with them on names the setting to turn off.
    assert main([*[a for a in args if a != "model.positions=false"], "--ckpt",
                 str(LEGACY / "linvt_instruct.ckpt")]) != 0
    assert "model.positions=(not recorded)->True" in capsys.readouterr().err
    assert main([*args, "--ckpt", str(LEGACY / "linvt_instruct.ckpt")]) == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 3 and resumed["lvu"]["task"] == "linvt"

    out = tmp_path / "export"
    # Recorded with a host that is not on this machine: the error names the override that fixes it.
    assert main(["ckpt", "export", str(LEGACY / "linvt_instruct.ckpt"), str(out)]) != 0
    assert "host.path /tmp/legacy/host has no config.json here" in capsys.readouterr().err
    assert main(["ckpt", "export", str(LEGACY / "linvt_instruct.ckpt"), str(out), f"host.path={host}"]) == 0
    old = torch.load(LEGACY / "linvt_instruct.ckpt", weights_only=False)["state_dict"]
    linvt = LinVT.from_pretrained(out / "linvt")
    assert all(torch.equal(v, old[f"linvt.{k}"]) for k, v in linvt.state_dict().items())
    assert json.loads((out / "export.json").read_text())["adapter_base"] == "model.language_model"

    cfg = load_recipe("linvt/instruct", [f"host.path={host}", "data.train=unused", f"data.frame_size={FRAME}",
                                         *settings, f"init.from={LEGACY / 'export'}"]).to_object()
    state = LinVTTask(cfg).state_dict()
    lora = [k for k in old if "lora_B" in k]
    assert lora and all(torch.equal(state[k], old[k]) for k in lora)
