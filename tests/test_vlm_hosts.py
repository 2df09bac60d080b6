"""Image-LLM hosts: tiny random models of each family, saved and loaded back through ``load_host``."""

from __future__ import annotations

import json
import re

import pytest
import torch
from support.hosts import FRAME, WIDTH, native_image_logits, save_host, save_parts

from lvu.errors import LvuError
from lvu.models.vlm import ComposedHost, load_host

FAMILIES = ["llava_onevision", "qwen2_vl", "internvl"]
TOKENS_PER_FRAME = {"llava_onevision": (FRAME // 4) ** 2, "qwen2_vl": (FRAME // 4 // 2) ** 2,
                    "internvl": (FRAME // 4 // 2) ** 2}


@pytest.fixture(scope="module", params=FAMILIES)
def host(request, tmp_path_factory):
    path = save_host(request.param, tmp_path_factory.mktemp(request.param))
    return load_host(path).eval()


def _frame_block(host, tokens: int) -> str:
    return host.visual_prompt(tokens)  # Qwen's template wraps each image; its M-RoPE groups placeholders by it


def _batch(host, frames_per_sample: list[int], tokens_per_frame: int, answers: list[str]):
    """Left-padded prompts (chat template) with placeholders, answers appended, labels on answers only."""
    rows, labels = [], []
    for n, answer in zip(frames_per_sample, answers, strict=True):
        video = "".join(_frame_block(host, tokens_per_frame) for _ in range(n))
        prompt = host.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{video}what happens in the video?"}], tokenize=False,
            add_generation_prompt=True)
        p = host.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = host.tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append(p + a)
        labels.append([-100] * len(p) + a)
    length = max(map(len, rows))
    pad = host.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    lab = torch.tensor([[-100] * (length - len(r)) + r for r in labels])
    return ids, mask, lab


def test_frames_become_tokens_in_the_llm_embedding_space(host):
    frames = torch.randn(5, 3, FRAME, FRAME)
    with torch.no_grad():
        tokens = host.encode_frames(frames)
    family = {"qwen_vl": "qwen2_vl"}.get(host.family, host.family)
    assert tokens.shape == (5, TOKENS_PER_FRAME[family], WIDTH) and host.hidden_size == WIDTH
    # The same tokens the family's own image path computes (LLaVA-OneVision's adds one image-newline row).
    inner = host.model.model
    with torch.no_grad():
        if host.family == "llava_onevision":
            own = inner.get_image_features(pixel_values=frames, image_sizes=torch.tensor([[FRAME, FRAME]] * 5),
                                           batch_num_images=torch.tensor([5])).pooler_output
            own = torch.stack([o[:-1] for o in own])
        elif host.family == "qwen_vl":
            own = torch.stack(list(inner.get_image_features(*host.patchify(frames)).pooler_output))
        else:
            own = inner.get_image_features(pixel_values=frames).pooler_output
    torch.testing.assert_close(tokens, own)


def test_loss_and_gradients_with_ragged_frame_counts(host):
    per_frame = TOKENS_PER_FRAME[{"qwen_vl": "qwen2_vl"}.get(host.family, host.family)]
    ids, mask, labels = _batch(host, [2, 3], per_frame, ["a red square moves left", "the blue circle"])
    frames = torch.randn(5, 3, FRAME, FRAME)
    tokens = host.encode_frames(frames)
    visual = [tokens[:2].flatten(0, 1), tokens[2:].flatten(0, 1)]  # ragged: 2 and 3 frames
    embeds = host.build_inputs_embeds(ids, visual)
    sizes = [[(FRAME, FRAME)] * 2, [(FRAME, FRAME)] * 3]  # every frame's tokens placed as the host places an image
    positions = host.position_ids(ids, mask, sizes)
    out = host(embeds, mask, labels, positions)
    assert torch.isfinite(out.loss) and out.logits.shape[:2] == ids.shape
    host.zero_grad()
    out.loss.backward()
    assert host.embed_layer.weight.grad is not None and host.embed_layer.weight.grad.abs().sum() > 0
    generated = host.generate(host.build_inputs_embeds(ids[:, :-4], visual), mask[:, :-4], max_new_tokens=4,
                              position_ids=host.position_ids(ids[:, :-4], mask[:, :-4], sizes))
    assert generated.dtype == torch.long and generated.shape[0] == 2 and 1 <= generated.shape[1] <= 4


def test_inputs_embeds_route_gives_the_hosts_own_logits_for_images(host):
    """The host's image tokens (encode_images) through build_inputs_embeds reproduce the family's native image
    forward: LLaVA-OneVision's AnyRes base view + tile with image newlines, Qwen's 2-D image positions, InternVL's
    single tile."""
    frames = torch.randn(2, 3, FRAME, FRAME)
    with torch.no_grad():
        tokens = host.encode_images(frames)
    ids, mask, _ = _batch(host, [1, 1], len(tokens[0]), ["a", "b"])
    with torch.no_grad():
        native = native_image_logits(host, ids, mask, frames)
        positions = host.position_ids(ids, mask, [[(FRAME, FRAME)]] * 2)
        ours = host(host.build_inputs_embeds(ids, tokens), mask, None, positions).logits
    torch.testing.assert_close(ours[mask.bool()], native[mask.bool()])


def test_prompt_without_placeholder_is_one_clear_error(host):
    ids = host.tokenizer(["what happens?"], return_tensors="pt")["input_ids"]
    with pytest.raises(LvuError, match=rf"sample\(s\) \[0\] have visual input but no '{re.escape(host.placeholder)}'"):
        host.build_inputs_embeds(ids, [torch.zeros(4, WIDTH)])
    ids = host.tokenizer([host.placeholder * 3], return_tensors="pt")["input_ids"]
    with pytest.raises(LvuError, match=r"placeholders per sample \[3\] do not match the visual tokens given \[4\]"):
        host.build_inputs_embeds(ids, [torch.zeros(4, WIDTH)])


def test_unsupported_family_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(LvuError, match=r"model type 'bert' is not a supported host family \(supported: "
                                       r"llava_onevision, qwen2_vl, qwen2_5_vl, internvl"):
        load_host(tmp_path)
    with pytest.raises(LvuError, match=r"no config\.json"):
        load_host(tmp_path / "missing")


def test_composed_host_from_a_vision_encoder_and_an_llm(tmp_path):
    vision, llm = save_parts(tmp_path)
    host = ComposedHost(vision, llm, placeholder="<image>")
    assert "<image>" in host.tokenizer.get_vocab()  # added, and the LLM's embeddings grew with it
    assert host.embed_layer.num_embeddings >= len(host.tokenizer)
    host.vision.requires_grad_(False)
    frames = torch.randn(2, 3, FRAME, FRAME)
    tokens = host.encode_frames(frames)
    assert tokens.shape == (2, (FRAME // 4) ** 2, WIDTH)
    ids, mask, labels = _batch(host, [1, 1], tokens.shape[1], ["a red square", "a blue circle"])
    out = host(host.build_inputs_embeds(ids, tokens), mask, labels)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in host.projector.parameters())  # it trains
    assert all(p.grad is None for p in host.vision.parameters())  # the encoder stays frozen
