"""Tiny random SAM2 and object-detector checkpoints, saved like real ones (``save_pretrained``), for SEAL's
quickstart and tests: nothing is downloaded, and extraction loads them with ``from_pretrained`` as it loads real ones.
Random weights make random masks and boxes; the extraction's filters are what such runs exercise, not the models."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPModel,
    PreTrainedTokenizerFast,
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2Model,
    Sam2VisionConfig,
    YolosConfig,
    YolosForObjectDetection,
)


def save_tiny_sam2(path: Path, image_size: int = 64, seed: int = 0) -> Path:
    """A ~0.35M-parameter SAM2 (Hiera backbone of four stages, one global-attention block) at ``image_size``
    (a multiple of 32)."""
    torch.manual_seed(seed)
    backbone = Sam2HieraDetConfig(
        hidden_size=16, image_size=[image_size, image_size], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],  # not a stage's first block (it pools)
        window_positional_embedding_background_size=[4, 4])
    sizes = [[image_size // s, image_size // s] for s in (4, 8, 16)]
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                              backbone_feature_sizes=sizes, fpn_hidden_size=32)
    config = Sam2Config(vision_config=vision,
                        prompt_encoder_config={"hidden_size": 32, "image_size": image_size, "patch_size": 16},
                        mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2,
                                             "iou_head_hidden_dim": 32})
    Sam2Model(config).eval().save_pretrained(path)
    return path


def save_tiny_detector(path: Path, image_size: int = 64, seed: int = 0) -> Path:
    """A tiny random YOLOS (a ViT with detection tokens; DETR-style softmax head over 4 classes + "no object")."""
    torch.manual_seed(seed)
    config = YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         image_size=[image_size, image_size], patch_size=16, num_detection_tokens=8, num_labels=4)
    YolosForObjectDetection(config).eval().save_pretrained(path)
    return path


def save_tiny_clip(path: Path, width: int = 32, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny random CLIP with a small trained BPE tokenizer (every text ends with its end token, which CLIP's text
    tower pools), so that queries can be embedded as well as frames."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(["what is the red square doing?", "when does the blue circle appear?",
                             "which object moves left", "the person opens the door"] * 10,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|pad|>", "<|end|>"],
                                                show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    end = raw.token_to_id("<|end|>")
    raw.post_processor = processors.TemplateProcessing(single="$A <|end|>", special_tokens=[("<|end|>", end)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|end|>", pad_token="<|pad|>")
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    vision = {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": image_size, "patch_size": 8}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "vocab_size": raw.get_vocab_size(), "max_position_embeddings": 32, "bos_token_id": end,
            "eos_token_id": end, "pad_token_id": raw.token_to_id("<|pad|>")}
    CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=width)).save_pretrained(path)
    return path
