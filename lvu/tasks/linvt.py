"""LinVT on the host-LM layer (Gao et al., Sec. 3.3): one module, its two stages as recipes.

* ``recipes/linvt/align.yaml`` (stage 1): the host frozen, only LinVT trains, on video-caption pairs, with the
  caption's next-token loss plus a contrastive loss between pooled video tokens and caption text embeddings
  (negatives gathered across ranks);
* ``recipes/linvt/instruct.yaml`` (stage 2): LinVT from stage 1 (``init.from``) and LoRA on the host LLM train on
  instruction conversations; no contrastive loss.

The paper gives neither the contrastive loss's pooling nor its temperature (OPEN): video tokens and caption token
embeddings are mean-pooled and compared with a symmetric InfoNCE whose temperature is learnt from 0.07 (CLIP). The
caption side is the host's own *input* word embeddings, deliberately: LinVT's outputs live in the LLM's input
embedding space (they are convex combinations of projected visual tokens the LLM reads as words), so a caption's
pooled word embeddings are comparable with them without any text encoder, while the frozen LLM's hidden states live
in other spaces layer by layer. A global batch of one video has no negatives and the loss is exactly zero: training
refuses a contrastive weight without negatives.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lvu.errors import LvuError
from lvu.models.linvt import LinVT, LinVTConfig, TTAWeights, Variant
from lvu.tasks.host_lm import (
    HostLMRecipe,
    HostLMTask,
    LossTerm,
    MediaBatch,
    TextInput,
    VideoInput,
    VideoTokens,
    VisualTokens,
    export_host_lm,
    host_lm_data,
    host_lm_metrics,
)
from lvu.tasks.host_lm.host import host_hidden_size
from lvu.tasks.registry import TaskSpec, register_task


@dataclass
class LinVTModelConfig:
    """LinVT's hyper-parameters (lvu.models.linvt.LinVTConfig; its width comes from the host)."""

    layers: int = 4
    """Spatio-temporal layers in SVR and layers per TTA (supplement Sec. 6: 4)."""
    heads: int = 8
    """Attention heads (supplement Sec. 6: 8)."""
    top_k: int = 2048
    """Tokens SVR keeps (Table 12: 2048)."""
    queries: list[int] = field(default_factory=lambda: [64, 32, 16])
    """Output tokens per temporal scale, finest first (supplement Sec. 6: 64/32/16)."""
    variant: Variant = Variant.multi_c
    """The architecture or one of the paper's ablations (multi_c, multi_b, multi_a, single_a, svr_only, tta_only,
    avg)."""
    text_conditioning: bool = True
    """TTA's cross-attention to the question (Table 5)."""
    mlp_ratio: float = 4.0
    """MLP width of LinVT's blocks as a multiple of their width (not given in the paper)."""
    width: int | None = None
    """Width the attention layers work at (null: the host's hidden size); tokens stay in the host's space."""
    host_pooling: bool = False
    """Pool each frame's tokens as the host's own video path does before LinVT (LLaVA-OneVision: 2x2, 729 -> 196
    tokens per frame; hosts without video pooling: unchanged). Off: the frame-level tokens of the image path, as the
    paper feeds them; on: 3.7x fewer tokens into SVR for long videos (costs in benchmarks/README.md)."""
    tta_weights: TTAWeights = TTAWeights.separate
    """multi_c / tta_only: one TTA stack per scale (separate) or one stack shared by the scales with per-scale
    queries (shared: multi_b's parameter count, for Table 4's comparison)."""
    checkpoint_svr: bool = False
    """Recompute SVR's layer activations in backward instead of storing them (less memory for long videos, one
    more forward of SVR per step)."""
    positions: bool = True
    """Frame number and position within the frame in SVR's scoring and TTA's keys (never in the output values), so
    LinVT can tell frame order; false: the paper's module as written (order-blind). Checkpoints saved before this
    option existed need false."""


def linvt_config(m: LinVTModelConfig, dim: int) -> LinVTConfig:
    return LinVTConfig(dim=dim, layers=m.layers, heads=m.heads, top_k=m.top_k, queries=list(m.queries),
                       variant=Variant(m.variant), text_conditioning=m.text_conditioning, mlp_ratio=m.mlp_ratio,
                       width=m.width, positions=m.positions, tta_weights=TTAWeights(m.tta_weights),
                       checkpoint_svr=m.checkpoint_svr)


@dataclass
class LossConfig:
    """Stage 1's contrastive alignment (not given in the paper: weight and initial temperature are ours)."""

    contrastive_weight: float = 1.0
    """Weight of the video-caption contrastive loss; 0 switches it off (stage 2)."""
    temperature: float = 0.07
    """Initial temperature of the contrastive loss (learnt, as in CLIP)."""


@dataclass
class LinVTRecipe(HostLMRecipe):
    model: LinVTModelConfig = field(default_factory=LinVTModelConfig)
    """LinVT's architecture."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Losses besides the answers' next-token loss."""


class LinVTTask(HostLMTask):
    """LinVT between the host's per-frame visual tokens and its LLM; both stages (see the module docstring)."""

    uses_text = True  # TTA reads the question

    def build_method(self) -> dict[str, nn.Module | nn.Parameter]:
        cfg = self.cfg
        parts: dict[str, nn.Module | nn.Parameter] = {"linvt": LinVT(linvt_config(cfg.model, self.host.hidden_size))}
        if cfg.loss.contrastive_weight > 0:
            # Shape [1], not a scalar: DeepSpeed cannot broadcast 0-dim parameters.
            parts["log_scale"] = nn.Parameter(torch.tensor([math.log(1 / cfg.loss.temperature)]))
        return parts

    def on_fit_start(self) -> None:
        super().on_fit_start()
        videos = self.cfg.data.batch_size * self.trainer.world_size
        if self.cfg.loss.contrastive_weight > 0 and videos < 2:
            raise LvuError(f"loss.contrastive_weight={self.cfg.loss.contrastive_weight:g} needs negatives, but a "
                           f"global batch of data.batch_size={self.cfg.data.batch_size} x {self.trainer.world_size} "
                           f"device(s) holds one video: the contrastive loss would be exactly 0. Use a larger "
                           f"data.batch_size (or more devices), or loss.contrastive_weight=0")

    def video_tokens(self, videos: VideoInput, text: TextInput | None) -> VideoTokens:
        """Every frame of the batch through the host's encoder and projector in one pass (pooled as the host's video
        path pools with model.host_pooling), then LinVT per video."""
        per_frame = self.host.encode_frames(self.host.normalize(videos.frames[videos.frame_mask]))
        if self.cfg.model.host_pooling:
            per_frame = self.host.pool_video_frames(per_frame)
        grid = per_frame.new_zeros(*videos.frame_mask.shape, *per_frame.shape[1:])
        grid[videos.frame_mask] = per_frame
        assert text is not None  # uses_text
        out = self.linvt(grid, videos.frame_mask, text.embeds, text.mask, frame_shots=videos.shots)
        return VideoTokens(list(out.tokens))

    def extra_losses(self, batch: MediaBatch, visual: VisualTokens) -> dict[str, LossTerm]:
        if "contrastive_loss" not in self.extra_loss_names(self.cfg):
            return {}
        return {"contrastive_loss": LossTerm(self.contrastive(batch, visual), self.cfg.loss.contrastive_weight)}

    @classmethod
    def extra_loss_names(cls, cfg: LinVTRecipe) -> tuple[str, ...]:
        return ("contrastive_loss",) if cfg.loss.contrastive_weight > 0 else ()

    def contrastive(self, batch: MediaBatch, visual: VisualTokens) -> torch.Tensor:
        """Symmetric InfoNCE between each video's pooled tokens and its caption, against every video and caption
        of the global batch. Rows of every rank are padded to the local batch size (equal on all ranks) so the
        gather never sees ragged shapes; evaluation padding copies, samples without a caption and non-video samples
        are masked out, and a rank left with none still joins the gathers' backward with a zero loss."""
        captions = [c or "" for c in batch.captions]
        tok = self.host.tokenizer
        enc = tok(captions, add_special_tokens=False, padding=True, truncation=True,
                  max_length=self.cfg.prompt.max_answer_tokens, return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device).bool()
        with torch.no_grad():
            words = self.host.embed_text(ids)
        text = (words * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        width = self.host.hidden_size
        v = text.new_zeros(len(captions), width, dtype=torch.float32)
        if visual.videos:
            pooled = torch.stack([t.float().mean(0) for t in visual.videos])
            v = v.index_put((visual.is_video.nonzero().squeeze(1),), pooled)
        v, t = F.normalize(v, dim=-1), F.normalize(text.float(), dim=-1)
        has_caption = torch.tensor([c is not None for c in batch.captions], device=self.device)
        used = visual.is_video & ~batch.pad.to(self.device) & has_caption
        all_v, all_t = self._gather(v), self._gather(t)
        ok = self._gather(used.to(v.dtype)) > 0.5
        offset = self.global_rank * v.shape[0] if self.trainer.world_size > 1 else 0
        rows = used.nonzero().squeeze(1)
        scale = self.log_scale.exp().clamp(max=100)
        if rows.numel() == 0:  # no video here: still a (zero) loss through the gathers, whose backward is collective
            return (all_v.sum() + scale.sum()) * 0.0
        blocked = ~ok[None]
        v_to_t = (scale * v[rows] @ all_t.T).masked_fill(blocked, float("-inf"))
        t_to_v = (scale * t[rows] @ all_v.T).masked_fill(blocked, float("-inf"))
        return 0.5 * (F.cross_entropy(v_to_t, rows + offset) + F.cross_entropy(t_to_v, rows + offset))

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size == 1:
            return x
        return self.all_gather(x, sync_grads=True).flatten(0, 1)  # negatives from every rank


def save_linvt(cfg: LinVTRecipe, state: dict[str, torch.Tensor], folder: Path) -> dict[str, Any]:
    """LinVT's export: ``LinVT.from_pretrained(folder)`` loads it. The host's width is read from LinVT's own
    weights, so a checkpoint exports on a machine without the host it was trained on."""
    linvt = LinVT(linvt_config(cfg.model, _input_width(state) or host_hidden_size(cfg.host)))
    linvt.load_state_dict(state)
    linvt.save_pretrained(folder)
    return {"parameters": sum(p.numel() for p in linvt.parameters())}


def _input_width(state: dict[str, torch.Tensor]) -> int | None:
    """The width of the tokens LinVT was built for, from its weights (None for the parameter-free avg variant)."""
    for name, axis in (("svr.proj.weight", 1), ("tta.0.visual_proj.weight", 1), ("svr.norm.weight", 0),
                       ("tta.0.queries", 1)):
        if name in state:
            return int(state[name].shape[axis])
    return None


def upgrade_stage_recipes(config: dict[str, Any]) -> dict[str, Any]:
    """A config recorded by the first LinVT tasks (``linvt.align`` / ``linvt.instruct``, one task per stage) in
    today's schema: the same stage as parts, data and loss settings of the one ``linvt`` task."""
    old = config.get("task")
    model = config.get("model")
    if isinstance(model, dict) and "positions" not in model:  # recorded before LinVT had positions
        config = {**config, "model": {**model, "positions": False}}
    if old not in ("linvt.align", "linvt.instruct"):
        return config
    new = copy.deepcopy(config)
    new["task"] = "linvt"
    data = new.setdefault("data", {})
    prompt = new.setdefault("prompt", {})
    if "max_caption_tokens" in data:
        prompt["max_answer_tokens"] = data.pop("max_caption_tokens")
    init = new.pop("init", None) or {}
    if old == "linvt.align":
        data.update(kinds=["video"], target="caption")
        new["parts"] = {"method": {"mode": "full"}}
    else:
        data.update(kinds=["video", "image", "text"], target="conversations")
        new["parts"] = {"llm": {"mode": "lora"}, "method": {"mode": "full"}}
        new.setdefault("loss", {})["contrastive_weight"] = 0.0
        new["init"] = {"from": init.get("align") or init.get("export"), "required": not init.get("random", False)}
    return new


register_task(TaskSpec(
    "linvt", LinVTRecipe, LinVTTask, host_lm_data,
    "LinVT (Gao et al.): a linear video tokenizer on an image-LLM host; stages linvt/align, linvt/instruct",
    export=functools.partial(export_host_lm, savers={"linvt": save_linvt}),
    aliases=("linvt.align", "linvt.instruct"), upgrade=upgrade_stage_recipes, metrics=host_lm_metrics(LinVTTask)))

__all__ = ["LinVTModelConfig", "LinVTRecipe", "LinVTTask", "linvt_config", "upgrade_stage_recipes"]
