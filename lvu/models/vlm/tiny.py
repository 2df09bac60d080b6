"""Tiny random image-LLM hosts of each family, saved with ``save_pretrained`` (tokenizer included): the LinVT
quickstart and the tests load them through the same ``load_host(path)`` a real checkpoint takes. Nothing is
downloaded.

Every family's LLM is Qwen2-shaped (hidden 64, one layer); frames are 32x32 px.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

FRAME = 32
WIDTH = 64
VOCAB = 320
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FAMILY_TOKENS = {
    "llava_onevision": ["<image>", "<video>"],
    "qwen2_vl": ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"],
    "internvl": ["<IMG_CONTEXT>", "<img>", "</img>"],
    "composed": [],
}


def make_tokenizer(family: str, out: Path):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *FAMILY_TOKENS[family]]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        ["what happens in the video?", "a red square moves left", "the blue circle appears twice"] * 10,
        trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        extra_special_tokens=specials[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return tokenizer


def _text(tokenizer) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=128, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=None,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def save_tiny_host(family: str, out: Path, seed: int = 0) -> Path:
    """A tiny random ``family`` model and its tokenizer in ``out``; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(family, out)
    ids = tok.convert_tokens_to_ids
    torch.manual_seed(seed)
    if family == "llava_onevision":
        model = tf.LlavaOnevisionForConditionalGeneration(tf.LlavaOnevisionConfig(
            vision_config=tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                num_attention_heads=2, image_size=FRAME, patch_size=4,
                                                vision_use_head=False),
            text_config=tf.Qwen2Config(**_text(tok)), image_token_index=ids("<image>"),
            video_token_index=ids("<video>"), vision_feature_layer=-2, vision_feature_select_strategy="full",
            image_grid_pinpoints=[[FRAME, FRAME]]))
    elif family == "qwen2_vl":
        model = tf.Qwen2VLForConditionalGeneration(tf.Qwen2VLConfig(
            vision_config=dict(depth=1, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=WIDTH, patch_size=4,
                               spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
            # mrope_section sums to head_dim / 2 = 8
            text_config=dict(**_text(tok), rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                                 mrope_section=[2, 3, 3])),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>")))
    elif family == "internvl":
        model = tf.InternVLForConditionalGeneration(tf.InternVLConfig(
            vision_config=tf.InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                  num_attention_heads=2, image_size=(FRAME, FRAME),
                                                  patch_size=(4, 4)),
            text_config=tf.Qwen2Config(**_text(tok)), image_token_id=ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
            image_seq_length=16, vision_feature_layer=-1, vision_feature_select_strategy="default"))
    else:
        raise ValueError(family)
    model.save_pretrained(out)
    return out


def save_tiny_parts(out: Path, seed: int = 0, *, vision_sizes: dict | None = None,
                    text_sizes: dict | None = None) -> tuple[Path, Path]:
    """A tiny SigLIP vision encoder and a tiny Qwen2 LLM (with tokenizer), for the composed host. ``vision_sizes`` and
    ``text_sizes`` override their config values (benchmarks build CPU-sized parts the same way)."""
    torch.manual_seed(seed)
    vision = out / "siglip"
    tf.SiglipVisionModel(tf.SiglipVisionConfig(**{
        **dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=FRAME,
               patch_size=4), **(vision_sizes or {})})).save_pretrained(vision)
    llm = out / "qwen2"
    tok = make_tokenizer("composed", llm)
    tf.Qwen2ForCausalLM(tf.Qwen2Config(**{**_text(tok), **(text_sizes or {})})
                        ).save_pretrained(llm)
    return vision, llm
