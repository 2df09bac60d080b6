"""LV-MAE (Naiman et al., 2025; supplement Sec. 7-8): a masked autoencoder over sequences of clip embeddings.

A long video is a sequence of embeddings of its consecutive 5-second clips (from a frozen video-text model). There is
no patch embedding: the encoder works at the clip-embedding width (an input projection is optional). A [CLS] token
is prepended; fixed 1-D sin-cos positional embeddings (learned ones optional) tell tokens where they are. Sequences
are right-padded; padding is carried by a key-padding mask, so padded positions are never attended to, never visible
and never in the loss (the [PAD] input itself is zero). The encoder sees only the visible tokens and [CLS]; a lighter
decoder puts a shared mask token at every masked position, adds its own positional embeddings and predicts the
(L2-normalised) input embeddings. The loss is the MSE over masked, non-pad tokens (1 - cosine optional).

Masking: ``random``, or ``semantic`` as the paper defines it: mask the clips least similar (cosine) to the clip
before them, i.e. the most novel ones. (The official code keeps those instead; we follow the paper.)

Everything is batched: ragged sequences share one tensor with masks, and attention is
``scaled_dot_product_attention`` with a boolean key mask, so memory grows linearly with sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class PosEmbed(str, Enum):
    sincos = "sincos"
    learned = "learned"


class Masking(str, Enum):
    random = "random"
    semantic = "semantic"


class ReconLoss(str, Enum):
    mse = "mse"
    cosine = "cosine"


@dataclass
class LVMAEConfig:
    """LV-MAE architecture. Defaults are the paper's (LanguageBind clip embeddings, 256 tokens)."""

    input_dim: int = 1024
    """Width of the clip embeddings fed in (LanguageBind: 1024)."""
    embed_dim: int = 1024
    """Encoder width; must equal input_dim unless input_proj is on."""
    depth: int = 32
    """Encoder transformer blocks."""
    num_heads: int = 16
    """Encoder attention heads."""
    decoder_dim: int = 512
    """Decoder width."""
    decoder_depth: int = 8
    """Decoder transformer blocks."""
    decoder_num_heads: int = 16
    """Decoder attention heads."""
    mlp_ratio: float = 4.0
    """MLP width as a multiple of the block width."""
    max_tokens: int = 256
    """Longest sequence (clips) the positional table covers; longer inputs are truncated or windowed by the data."""
    input_proj: bool = False
    """A linear input projection (the paper has none: encoder width = clip width)."""
    pos_embed: PosEmbed = PosEmbed.sincos
    """Positional embeddings: fixed sin-cos (the paper's) or learned."""
    mask_ratio: float = 0.4
    """Fraction of each sequence's real clips that is masked (paper ablation: 0.4 random, 0.5 semantic)."""
    masking: Masking = Masking.random
    """random, or semantic (mask the clips least similar to their predecessor)."""
    loss: ReconLoss = ReconLoss.mse
    """Reconstruction loss on masked clips: mse or cosine (1 - cosine similarity)."""
    norm_targets: bool = True
    """Reconstruct L2-normalised embeddings (the reference implementation's targets)."""
    norm_eps: float = 1e-6
    """LayerNorm epsilon. The paper is silent; the reference (built on MAE) uses 1e-6, torch's default is 1e-5."""


def sincos_1d(positions: int, dim: int) -> torch.Tensor:
    """``[positions + 1, dim]`` fixed sin-cos table; row 0 (for [CLS]) is zeros, as in MAE."""
    if dim % 2:
        raise ValueError(f"sin-cos positional embeddings need an even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * omega[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        # key_valid [B, N] -> [B, 1, 1, N]: each query attends only to real tokens of its own sample.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention and an MLP, each with a residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_valid)
        return x + self.mlp(self.norm2(x))


def visible_count(valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """Visible tokens per sample: MAE's ``int(n * (1 - ratio))``, at least one."""
    n_valid = valid.sum(1)
    return torch.clamp((n_valid * (1 - ratio)).floor().long(), min=1).minimum(n_valid)


def mask_by_score(score: torch.Tensor, valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """Mask, in every sample, the valid tokens with the highest ``score`` beyond its visible budget.

    Returns ``[B, L]`` bool, True = masked. Padding is never masked (nor visible).
    """
    score = score.masked_fill(~valid, float("inf"))
    order = torch.sort(score, dim=1, stable=True).indices  # ascending: the first ones stay visible
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return (rank >= visible_count(valid, ratio)[:, None]) & valid


def random_mask(valid: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    device = generator.device if generator is not None else valid.device
    noise = torch.rand(valid.shape, generator=generator, device=device).to(valid.device)
    return mask_by_score(noise, valid, ratio)


def semantic_mask(x: torch.Tensor, valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """Mask the clips least similar to their predecessor (the paper's semantic masking).

    The first clip has no predecessor; it counts as perfectly similar, so it is masked last.
    """
    similarity = F.cosine_similarity(x[:, 1:], x[:, :-1], dim=-1)  # [B, L-1]: clip i vs clip i-1
    similarity = torch.cat([torch.ones_like(similarity[:, :1]), similarity], dim=1)
    return mask_by_score(-similarity, valid, ratio)


class LVMAEOutput(NamedTuple):
    """A NamedTuple, not a dataclass: DeepSpeed ZeRO-3 hooks the tensors of a module's outputs to gather the
    module's parameters again for backward, and it only looks inside tuples, lists and dicts."""

    loss: torch.Tensor  # mean over all masked, non-pad tokens of the batch
    per_sample: torch.Tensor  # [B] mean over each sample's masked tokens
    pred: torch.Tensor  # [B, L, input_dim]
    mask: torch.Tensor  # [B, L] True = masked


class LVMAE(nn.Module):
    """The LV-MAE encoder-decoder. Inputs: embeddings ``x [B, L, D]`` and ``valid [B, L]`` (False = padding)."""

    def __init__(self, cfg: LVMAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if not cfg.input_proj and cfg.input_dim != cfg.embed_dim:
            raise ValueError(f"input_dim {cfg.input_dim} != embed_dim {cfg.embed_dim}: set input_proj=true")
        self.input_proj = nn.Linear(cfg.input_dim, cfg.embed_dim) if cfg.input_proj else nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.decoder_embed = nn.Linear(cfg.embed_dim, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            Block(cfg.decoder_dim, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.norm_eps) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(cfg.decoder_dim, eps=cfg.norm_eps)
        self.decoder_pred = nn.Linear(cfg.decoder_dim, cfg.input_dim)
        if cfg.pos_embed == PosEmbed.sincos:
            self.register_buffer("pos_embed", sincos_1d(cfg.max_tokens, cfg.embed_dim)[None], persistent=False)
            self.register_buffer("decoder_pos_embed", sincos_1d(cfg.max_tokens, cfg.decoder_dim)[None],
                                 persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_tokens + 1, cfg.embed_dim))
            self.decoder_pos_embed = nn.Parameter(torch.zeros(1, cfg.max_tokens + 1, cfg.decoder_dim))
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed"}

    def _check(self, x: torch.Tensor, valid: torch.Tensor) -> None:
        if x.shape[1] > self.cfg.max_tokens:
            raise ValueError(f"{x.shape[1]} tokens exceed max_tokens={self.cfg.max_tokens}; truncate or window the "
                             f"sequence (data.overflow) or raise model.max_tokens")
        if x.shape[-1] != self.cfg.input_dim:
            raise ValueError(f"embeddings are {x.shape[-1]} wide, the model expects input_dim={self.cfg.input_dim}")
        if valid.shape != x.shape[:2]:
            raise ValueError("valid must be [B, L] like x's first two dimensions")

    def make_mask(self, x: torch.Tensor, valid: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.cfg.masking == Masking.semantic:
            return semantic_mask(x, valid, self.cfg.mask_ratio)
        return random_mask(valid, self.cfg.mask_ratio, generator)

    def encode(self, x: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Encode the visible tokens.

        Returns ``latent [B, 1+K, E]`` ([CLS] then the visible tokens in temporal order), its key mask
        ``[B, 1+K]``, and ``visible_idx [B, K]`` (their positions; slots past a sample's count are unused).
        """
        b, length, _ = x.shape
        h = self.input_proj(x.masked_fill(~valid[..., None], 0.0))  # [PAD] = zeros
        h = h + self.pos_embed[:, 1:length + 1]
        visible = valid & ~mask
        # Visible first (in temporal order), then masked, then padding.
        key = torch.where(visible, 0, torch.where(valid, 1, 2))
        order = torch.sort(key, dim=1, stable=True).indices
        n_visible = visible.sum(1)
        k = int(n_visible.max())
        visible_idx = order[:, :k]  # [B, K]
        slot_valid = torch.arange(k, device=x.device)[None, :] < n_visible[:, None]
        tokens = torch.gather(h, 1, visible_idx[..., None].expand(-1, -1, h.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        key_valid = torch.cat([torch.ones_like(slot_valid[:, :1]), slot_valid], dim=1)
        for block in self.blocks:
            tokens = block(tokens, key_valid)
        return self.norm(tokens), key_valid, visible_idx

    def decode(self, latent: torch.Tensor, key_valid: torch.Tensor, visible_idx: torch.Tensor,
               valid: torch.Tensor) -> torch.Tensor:
        """Mask tokens at every non-visible position, decoder over the full sequence: ``[B, L, input_dim]``."""
        b, length = valid.shape
        d = self.decoder_embed(latent)  # [B, 1+K, Dd]
        mask_tokens = self.mask_token.expand(b, length, -1)
        # Unused slots carry the mask token, so scattering them changes nothing.
        visible = torch.where(key_valid[:, 1:, None], d[:, 1:], self.mask_token)
        full = mask_tokens.scatter(1, visible_idx[..., None].expand(-1, -1, d.shape[-1]), visible)
        full = full + self.decoder_pos_embed[:, 1:length + 1]
        cls = d[:, :1] + self.decoder_pos_embed[:, :1]
        seq = torch.cat([cls, full], dim=1)
        seq_valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        for block in self.decoder_blocks:
            seq = block(seq, seq_valid)
        return self.decoder_pred(self.decoder_norm(seq))[:, 1:]

    def reconstruction_loss(self, pred: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                            valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch loss, per-sample loss) over masked, non-pad tokens."""
        target = F.normalize(x, dim=-1) if self.cfg.norm_targets else x
        if self.cfg.loss == ReconLoss.cosine:
            per_token = 1 - F.cosine_similarity(pred, target, dim=-1)
        else:
            per_token = (pred - target).pow(2).mean(-1)
        weight = (mask & valid).to(per_token.dtype)
        per_sample = (per_token * weight).sum(1) / weight.sum(1).clamp(min=1)
        return (per_token * weight).sum() / weight.sum().clamp(min=1), per_sample

    def forward(self, x: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                features_only: bool = False) -> LVMAEOutput | tuple[torch.Tensor, torch.Tensor]:
        """Pre-training pass; with ``features_only``, :meth:`features`. Probes call the module itself rather than
        ``features`` so that module hooks (DeepSpeed ZeRO-3 gathering this module's parameters) run."""
        if features_only:
            return self.features(x, valid)
        self._check(x, valid)
        if mask is None:
            mask = self.make_mask(x, valid, generator)
        mask = mask & valid
        latent, key_valid, visible_idx = self.encode(x, valid, mask)
        pred = self.decode(latent, key_valid, visible_idx, valid)
        loss, per_sample = self.reconstruction_loss(pred, x, mask, valid)
        return LVMAEOutput(loss=loss, per_sample=per_sample, pred=pred, mask=mask)

    def features(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs with nothing masked: ``tokens [B, 1+L', E]`` ([CLS] first) and their key mask."""
        self._check(x, valid)
        latent, key_valid, _ = self.encode(x, valid, torch.zeros_like(valid))
        return latent, key_valid


class RawEmbeddings(nn.Module):
    """The baseline backbone: the clip embeddings themselves, as tokens after a [CLS] slot.

    Args:
        with_positions: add sin-cos positions and a learned [CLS] (for an attentive probe, which needs to know where
            tokens are). Without, the tokens are the plain embeddings and [CLS] is zeros, so a linear probe's mean
            pool is exactly the mean of the clip embeddings.
    """

    def __init__(self, input_dim: int, max_tokens: int, with_positions: bool = True) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        if with_positions:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, input_dim))
            nn.init.normal_(self.cls_token, std=0.02)
            self.register_buffer("pos_embed", sincos_1d(max_tokens, input_dim)[None], persistent=False)
        else:
            self.cls_token = None
            self.register_buffer("pos_embed", torch.zeros(1, max_tokens + 1, input_dim), persistent=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, features_only: bool = True) -> tuple[torch.Tensor, ...]:
        """Same as :meth:`features` (the probes' calling convention, shared with :class:`LVMAE`)."""
        return self.features(x, valid)

    def features(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] > self.max_tokens:
            raise ValueError(f"{x.shape[1]} tokens exceed max_tokens={self.max_tokens}")
        tokens = x.masked_fill(~valid[..., None], 0.0) + self.pos_embed[:, 1:x.shape[1] + 1]
        cls = self.pos_embed[:, :1] if self.cls_token is None else self.cls_token + self.pos_embed[:, :1]
        cls = cls.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1), torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)


class LinearProbe(nn.Module):
    """Global average pool of the encoder outputs over real tokens ([CLS] excluded), then a linear layer."""

    def __init__(self, dim: int, outputs: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, outputs)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        weight = key_valid[:, 1:, None].to(tokens.dtype)
        pooled = (tokens[:, 1:] * weight).sum(1) / weight.sum(1).clamp(min=1)
        return self.head(pooled)


class AttentiveProbe(nn.Module):
    """One transformer block over the encoder outputs, then LayerNorm and a linear layer on [CLS] (Sec. 8); LayerNorm
    epsilon 1e-6 as in the reference."""

    def __init__(self, dim: int, outputs: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.block = Block(dim, num_heads, mlp_ratio, eps)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = nn.Linear(dim, outputs)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.block(tokens, key_valid)[:, 0]))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def attention_heads_for(dim: int, preferred: int) -> int:
    """The largest head count <= ``preferred`` that divides ``dim`` (probes on widths like 1024 or 48)."""
    return max(h for h in range(1, preferred + 1) if dim % h == 0)


__all__ = [
    "LVMAE",
    "AttentiveProbe",
    "LVMAEConfig",
    "LinearProbe",
    "Masking",
    "PosEmbed",
    "RawEmbeddings",
    "ReconLoss",
    "count_parameters",
    "random_mask",
    "semantic_mask",
    "sincos_1d",
]

