"""The host-LM layer (lvu.tasks.host_lm): parts and their modes, prompts with every assistant turn labelled, the
host's own video path, init.from, exports, and what ZeRO-3 needs of a host."""

from __future__ import annotations

import json

import pytest
import torch
from support.hosts import FRAME, save_host, save_parts

from lvu.cli import main
from lvu.config import load_recipe
from lvu.errors import LvuError
from lvu.tasks.host_lm import HostLMTask, MediaBatch
from lvu.tasks.host_lm.conversation import IGNORE, Conversation, Turn

FAMILIES = ["llava_onevision", "qwen2_vl", "internvl"]
TINY = [f"data.frame_size={FRAME}", "data.train=unused", "prompt.max_answer_tokens=64"]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("hosts")
    paths = {family: save_host(family, root / family) for family in FAMILIES}
    vision, llm = save_parts(root / "parts")
    return {**paths, "composed": (vision, llm)}


def _host_args(hosts, family: str) -> list[str]:
    if family == "composed":
        vision, llm = hosts["composed"]
        return ["host.path=null", f"host.vision={vision}", f"host.llm={llm}"]
    return [f"host.path={hosts[family]}"]


def _module(hosts, family: str, *overrides: str) -> HostLMTask:
    cfg = load_recipe("uniform/instruct", [*_host_args(hosts, family), *TINY, *overrides]).to_object()
    return HostLMTask(cfg)


def _video_batch(frames: int, turns: list[Turn], seed: int = 0) -> MediaBatch:
    generator = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (1, frames, FRAME, FRAME, 3), dtype=torch.uint8, generator=generator)
    return MediaBatch(keys=["v"], kinds=["video"], frames=video, frame_mask=torch.ones(1, frames, dtype=torch.bool),
                      timestamps=torch.arange(frames, dtype=torch.float32)[None] * 2.5 + 0.5,
                      durations=torch.tensor([frames * 2.5]), conversations=[Conversation(turns)], captions=[None],
                      pad=torch.tensor([False]))


THREE_TURNS = [Turn("user", "where does it begin?"), Turn("assistant", "in a red room"),
               Turn("user", "what moves?"), Turn("assistant", "a blue circle"),
               Turn("user", "how many flashes?"), Turn("assistant", "two")]


def _labelled_runs(labels: list[int]) -> list[list[int]]:
    runs, current = [], []
    for label in labels:
        if label == IGNORE:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return [*runs, current] if current else runs


@pytest.mark.parametrize("family", FAMILIES)
def test_every_assistant_turn_and_nothing_else_is_labelled(hosts, family):
    """A 3-turn conversation: the loss mask is exactly the three answers (each with its end-of-turn token)."""
    module = _module(hosts, family)
    batch = _video_batch(2, THREE_TURNS)
    with torch.no_grad():
        inputs = module.llm_inputs(batch, module.visual_tokens(batch), answers=True)
    tok = module.host.tokenizer
    labels, ids = inputs.labels[0].tolist(), inputs.ids[0].tolist()
    assert all(label in (IGNORE, token) for label, token in zip(labels, ids, strict=True))
    runs = _labelled_runs(labels)
    answers = [t.text for t in THREE_TURNS if t.role == "assistant"]
    assert [tok.decode(run) for run in runs] == [a + tok.eos_token for a in answers]
    # The questions, the visual placeholders and the template's markup carry no loss.
    unlabelled = tok.decode([t for t, label in zip(ids, labels, strict=True) if label == IGNORE])
    assert all(t.text in unlabelled for t in THREE_TURNS if t.role == "user")
    assert (inputs.ids == module.host.placeholder_id).sum() > 0
    # The loss is the mean over exactly those tokens.
    logits = torch.randn(1, len(ids), module.host.model.config.get_text_config().vocab_size)
    picked = [(i, ids[i + 1]) for i in range(len(ids) - 1) if labels[i + 1] != IGNORE]
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[0, i], torch.tensor(t)) for i, t in picked])
    torch.testing.assert_close(HostLMTask.answer_loss(logits, inputs.labels), expected.mean())


def test_time_instruction_names_the_sampled_frames_times(hosts):
    module = _module(hosts, "qwen2_vl", "prompt.time_instruction=fila")
    batch = _video_batch(3, THREE_TURNS[:2])
    with torch.no_grad():
        inputs = module.llm_inputs(batch, module.visual_tokens(batch), answers=False)
    text = module.host.tokenizer.decode(inputs.ids[0])
    assert "This video samples 3 frames of a 7.5-second video at 0.5, 3.0, 5.5 seconds.\nwhere does it begin?" \
        in text
    assert text.rstrip().endswith("assistant")  # a generation prompt: no answer in it


def test_llava_onevision_video_path_gives_the_native_hosts_logits(hosts):
    """The no-method baseline on a video reproduces LLaVA-OneVision's own video forward: each frame's grid pooled
    2x2, the frames in a row, one image-newline token, on the same prompt."""
    module = _module(hosts, "llava_onevision").eval()
    batch = _video_batch(3, THREE_TURNS[:2])
    with torch.no_grad():
        visual = module.visual_tokens(batch)
        inputs = module.llm_inputs(batch, visual, answers=True)
        ours = module.host(inputs.embeds, inputs.mask, None, inputs.positions).logits
        model = module.host.model
        native_ids = inputs.ids.masked_fill(inputs.ids == module.host.placeholder_id, model.config.video_token_index)
        pixels = module.host.normalize(batch.frames[0])[None]
        native = model(input_ids=native_ids, attention_mask=inputs.mask, pixel_values_videos=pixels).logits
    grid = (FRAME // 4 + 1) // 2
    assert len(visual.per_sample[0]) == 3 * grid * grid + 1
    torch.testing.assert_close(ours, native)


@pytest.mark.parametrize("family", [*FAMILIES, "composed"])
def test_every_host_tensor_belongs_to_exactly_one_part(hosts, family):
    module = _module(hosts, family, "parts.llm.mode=frozen")
    parts = {name: module.plan.part_of(name) for name in module.state_dict()}
    assert {p for n, p in parts.items() if n.startswith("host.")} == {"vision", "projector", "llm"}
    assert all(p == "method" for n, p in parts.items() if not n.startswith("host."))


def test_part_modes_set_gradients_train_modes_checkpoints_and_learning_rates(hosts):
    module = _module(hosts, "llava_onevision", "parts.vision.mode=full", "parts.vision.lr=0.1",
                     "parts.projector.mode=lora", "lora.targets=[linear_1]", "parts.llm.mode=frozen",
                     "optim.weight_decay=0.5")
    plan = module.plan
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(plan.part_of(n) in ("vision", "projector") for n in trainable)
    assert all("lora_" in n for n in trainable if plan.part_of(n) == "projector")
    # The vision tower's last layer and final norm never reach the LLM (feature layer -2): they stay frozen.
    assert plan.frozen_always and not plan.frozen_always & trainable
    assert any("post_layernorm" in n for n in plan.frozen_always)
    with torch.no_grad():  # evaluation scripts build tasks inside no_grad: the probe for such parameters still works
        again = _module(hosts, "llava_onevision", "parts.vision.mode=full", "parts.llm.mode=frozen")
    assert again.plan.frozen_always == plan.frozen_always
    module.train()
    assert module.host.model.model.vision_tower.training and not module.host.model.model.language_model.training
    projector = module.host.model.model.multi_modal_projector
    assert not projector.linear_1.base_layer.training and projector.linear_1.lora_dropout.default.training
    assert module.saved_in_checkpoint("host.model.model.vision_tower.embeddings.patch_embedding.weight")
    assert module.saved_in_checkpoint("host.model.model.multi_modal_projector.linear_1.lora_A.default.weight")
    assert not module.saved_in_checkpoint("host.model.model.multi_modal_projector.linear_1.base_layer.weight")
    assert not module.saved_in_checkpoint("host.model.lm_head.weight")
    from lvu.tasks.optim import parameter_groups

    groups = {g["name"]: g for g in parameter_groups(
        module, module.cfg.optim, lambda n: plan.rate(n, module.cfg.optim.lr, module.cfg.optim.weight_decay))}
    assert groups["vision"]["lr"] == 0.1 and groups["vision"]["weight_decay"] == 0.5
    assert groups["vision/no_decay"]["lr"] == 0.1 and groups["projector"]["lr"] == module.cfg.optim.lr
    assert all(p.ndim > 1 for p in groups["vision"]["params"])  # no decay on norms and biases


def test_lora_targets_that_match_nothing_in_a_part_are_an_error(hosts):
    with pytest.raises(LvuError, match=r"lora.targets \['nope'\] match no module of the vision part"):
        _module(hosts, "qwen2_vl", "parts.vision.mode=lora", "lora.targets=[nope]")


def _fit_args(hosts, family, shards, run_dir, *extra):
    return ["fit", "uniform/instruct", *_host_args(hosts, family), *TINY[:1], f"data.train={shards}",
            f"run_dir={run_dir}", "trainer=cpu", "data.batch_size=2", "data.num_workers=0",
            "data.sampler.num_frames=2", "data.eval_frames=2", "trainer.progress_bar=none",
            "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false", "optim.lr=3e-3",
            "optim.scheduler.warmup_steps=0", "trainer.max_epochs=null", "lora.r=4", *extra]


def test_init_from_takes_the_parts_asked_for_and_lists_every_difference(hosts, synth_shards, tmp_path, capsys):
    source = tmp_path / "source"
    assert main(_fit_args(hosts, "qwen2_vl", synth_shards, source, "trainer.max_steps=2", "parts.projector.mode=full",
                          "parts.llm.mode=lora")) == 0
    ckpt = source / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    merger = next(k for k in saved if "merger" in k and k.endswith("weight") and "lora" not in k)
    # Only the projector: the LLM's adapters start fresh (B = 0), the projector is the trained one.
    module = _module(hosts, "qwen2_vl", f"init.from={ckpt}", "init.parts=[projector]", "parts.projector.mode=full",
                     "lora.r=4")
    state = module.state_dict()
    assert torch.equal(state[merger], saved[merger])
    assert all(state[k].abs().sum() == 0 for k in state if "lora_B" in k)
    assert module.weights_source == str(ckpt)
    # Every part the source holds (projector weights and LLM adapters): the adapters come back too.
    module = _module(hosts, "qwen2_vl", f"init.from={ckpt}", "parts.projector.mode=full", "lora.r=4")
    lora_b = next(k for k in saved if "lora_B" in k)
    assert torch.equal(module.state_dict()[lora_b], saved[lora_b]) and saved[lora_b].abs().sum() > 0
    # Asking for a part the source does not hold, adapters of another rank, and LoRA into a fully trained LLM: all
    # named in one error.
    with pytest.raises(LvuError) as error:
        _module(hosts, "qwen2_vl", f"init.from={ckpt}", "init.parts=[vision,llm]", "lora.r=8")
    message = str(error.value)
    assert "vision: the source holds no vision weights (frozen there)" in message
    assert "tensor(s) of another shape" in message and "lora.r=4->8" in message
    with pytest.raises(LvuError, match=r"llm: the source trained it with LoRA adapters and this recipe has "
                                       r"parts.llm.mode=full"):
        _module(hosts, "qwen2_vl", f"init.from={ckpt}", "parts.llm.mode=full")
    with pytest.raises(LvuError, match=r"host tensor\(s\) of another model"):
        _module(hosts, "llava_onevision", f"init.from={ckpt}", "lora.r=4")


def test_uniform_baseline_trains_answers_and_exports_a_loadable_host(hosts, synth_shards, tmp_path):
    """The baseline with its projector trained in full and LoRA on the LLM: answers, and an export whose host
    folder loads as the family model with the trained projector."""
    from peft import PeftModel

    from lvu.models.vlm import load_host

    run = tmp_path / "run"
    args = _fit_args(hosts, "llava_onevision", synth_shards, run, "trainer.max_steps=3", "parts.projector.mode=full")
    assert main(args) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert {k.split(".")[3] for k in state} == {"multi_modal_projector", "image_newline", "language_model"}
    predict = [a for a in args if not a.startswith(("run_dir=", "trainer.max_steps"))]
    predict[0] = "predict"
    assert main([*predict, f"data.predict={synth_shards}", f"run_dir={tmp_path / 'p'}", "--ckpt", str(ckpt),
                 "generation.max_new_tokens=3"]) == 0
    answers = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    assert len(answers) == 10 and all(a["question"] and a["reference"] for a in answers)
    out = tmp_path / "export"
    assert main(["ckpt", "export", str(ckpt), str(out)]) == 0
    record = json.loads((out / "export.json").read_text())
    assert record["host_weights"] == "host" and record["parts"]["projector"] == "full"
    assert set(record["written"]) == {"adapter", "host"}
    host = load_host(out / "host")
    assert torch.equal(host.model.model.multi_modal_projector.linear_1.weight,
                       state["host.model.model.multi_modal_projector.linear_1.weight"])
    adapted = PeftModel.from_pretrained(host.model, out / "adapter")  # the whole transformers model
    assert any(p.abs().sum() > 0 for n, p in adapted.named_parameters() if "lora_B" in n)
    # A new run starts from the export (its adapters); its trained host is loaded through host.path.
    module = _module(hosts, "llava_onevision", f"host.path={out / 'host'}", f"init.from={out}", "lora.r=4")
    key = next(k for k in state if "lora_B" in k)
    assert torch.equal(module.state_dict()[key], state[key])


# Full fine-tuning of the vision encoder, projector and LLM of a tiny composed host at their own learning rates, resumed
# bit-exactly under ZeRO-3 on 2 processes: tests/test_fila_tasks.py (FiLA-Video's stage 4, which trains exactly that
# plus its merge module).


def test_parameters_read_outside_their_modules_forward_are_registered_for_zero3(hosts):
    """LLaVA-OneVision's image newline is read by get_image_features and the video path, outside its module's
    forward: it is handed to ZeRO-3 as an external parameter of the host's ParameterUser, which runs those reads."""
    from lvu.train.strategies import register_external_parameters

    module = _module(hosts, "llava_onevision")
    register_external_parameters(module)
    newline = module.host.model.model.image_newline
    assert [p for p in module.host.newline_user._external_params.values()] == [newline]


@pytest.mark.parametrize("family", ["composed", "qwen2_vl"])
def test_gradient_checkpointing_recomputes_the_host_and_keeps_its_gradients(hosts, family):
    from lvu.tasks.host_lm.config import HostSection
    from lvu.tasks.host_lm.host import build_host

    if family == "composed":
        vision, llm = hosts["composed"]
        section = dict(vision=str(vision), llm=str(llm))
    else:
        section = dict(path=str(hosts[family]))
    frames = torch.rand(2, 3, FRAME, FRAME)
    ids = torch.randint(0, 200, (1, 5))
    results = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)  # a composed host's new projector
        host = build_host(HostSection(**section, gradient_checkpointing=checkpointing,
                                      attn_implementation="eager")).train()
        assert host.language_model.config._attn_implementation == "eager"
        saved = []  # what autograd keeps for backward: far less when layers are recomputed
        with torch.autograd.graph.saved_tensors_hooks(lambda t, s=saved: s.append(t.numel()) or t, lambda t: t):
            visual = host.encode_frames(frames).flatten(0, 1)[None]  # every frame's tokens as one sequence
            embeds = torch.cat([visual, host.embed_text(ids)], 1)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long)
            labels = torch.cat([torch.full(visual.shape[:2], -100), ids], 1)
            loss = host(embeds, mask, labels).loss
        loss.backward()
        grads = {k: p.grad.clone() for k, p in host.named_parameters() if p.grad is not None}
        results[checkpointing] = (loss.detach(), grads, sum(saved))
    (loss_a, grads_a, saved_a), (loss_b, grads_b, saved_b) = results[False], results[True]
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for key in grads_a:
        torch.testing.assert_close(grads_a[key], grads_b[key], rtol=1e-4, atol=1e-6)
    assert saved_b < 0.6 * saved_a, (saved_a, saved_b)  # activations recomputed in backward, not stored
