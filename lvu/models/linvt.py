"""LinVT: a linear video tokenizer between an image-LLM's visual tokens and its LLM (Gao et al., Sec. 3.2).

Frames' visual tokens (from the host's own encoder and projector, already in the LLM's embedding space) become a
fixed number of video tokens, each a *convex combination* of input tokens, so the LLM keeps reading tokens from the
space its projector was trained to produce:

* SVR (Sec. 3.2.1): L spatio-temporal layers (attention within each frame, then across frames at each position)
  score every token; the top-k tokens are kept (raw values, in temporal order; the scorer learns through a
  straight-through gate) and pooled at several temporal scales by averaging windows (multi-scale token pooling).
* TTA (Sec. 3.2.2): per scale, learnable queries go through L layers of self-attention, cross-attention to that
  scale's tokens and cross-attention to the text; the linear aggregation ``softmax(Wq Q (Wk T)^T) T`` (no value
  transform, no residual) turns them into output tokens.

Choices the paper leaves open are marked OPEN below. All inputs are batch-first with masks; no Python loop runs over
samples or frames, and attention goes through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from safetensors.torch import load_file, save_file
from torch import nn


class TTAWeights(str, Enum):
    """multi_c / tta_only: one TTA stack per scale (``separate``, the default: the module the paper's 267M parameters
    point to) or one stack whose layers every scale shares, with per-scale query sets (``shared``: the same
    parameters as multi_b, so Table 4's multi_b / multi_c comparison differs only in aggregating the scales at once
    or one by one)."""

    separate = "separate"
    shared = "shared"


class Variant(str, Enum):
    """The paper's ablations (Tables 2 and 4). All but ``avg`` output ``sum(queries)`` tokens."""

    multi_c = "multi_c"  # default: MTP, then one TTA per scale with its own queries (Table 4)
    multi_b = "multi_b"  # MTP, then one TTA over all scales' tokens together
    multi_a = "multi_a"  # one TTA over the top-k tokens, then MTP over its outputs
    single_a = "single_a"  # one TTA over the top-k tokens, no MTP
    svr_only = "svr_only"  # SVR + top-k, then window averages down to sum(queries) tokens (no TTA)
    tta_only = "tta_only"  # no scoring or top-k: every token, MTP, per-scale TTA
    avg = "avg"  # one token per frame: the mean of its tokens (Table 2 baseline)


@dataclass
class LinVTConfig:
    """Defaults: supplement Sec. 6 (L = 4 layers, 8 heads, queries 64/32/16, three scales) and Table 12 (k = 2048)."""

    dim: int = 896  # the LLM's hidden size (tokens stay in its embedding space)
    layers: int = 4
    heads: int = 8
    top_k: int = 2048
    queries: list[int] = field(default_factory=lambda: [64, 32, 16])  # one set per scale, finest first
    variant: Variant = Variant.multi_c
    text_conditioning: bool = True  # TTA's cross-attention to the text (Table 5)
    mlp_ratio: float = 4.0  # OPEN: the paper gives no MLP width; 4x as in ViT/LLaMA-style blocks
    # Width the attention layers work at (None: dim). Scores, queries and attention maps live at this width; the
    # selected, pooled and aggregated tokens stay the host's own (dim-wide), so linearity is unaffected. The paper's
    # The paper's 267M: dim 896 at full width gives 249.3M (-6.6%); 7B-class hosts (dim 3584+) need a smaller width
    # to stay near it (896: 271.8M at dim 3584). benchmarks/README.md has the counts.
    width: int | None = None
    # Where each token came from (frame number, position in the frame) in SVR's input and TTA's keys (see
    # TokenPositions). Off reproduces the paper's module as written, which cannot tell frame order.
    positions: bool = True
    tta_weights: TTAWeights = TTAWeights.separate
    # Recompute each SVR layer's activations in backward instead of storing them (training only): SVR runs over
    # every input token, so its stored activations grow with frames x tokens per frame; one more forward per layer.
    checkpoint_svr: bool = False

    @property
    def inner(self) -> int:
        return self.width or self.dim

    @property
    def num_output_tokens(self) -> int:
        return sum(self.queries)


@dataclass
class LinVTOutput:
    tokens: torch.Tensor  # [B, M, D]
    mask: torch.Tensor  # [B, M] valid output tokens (all True except for the avg baseline's padded frames)
    scores: torch.Tensor | None  # [B, T*N] SVR significance scores (None without SVR)
    weights: torch.Tensor | None  # [B, M, T*N] tokens = weights @ inputs (only with return_weights)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
            heads: int) -> torch.Tensor:
    """Multi-head attention over [..., L, D] with a boolean mask (True = attend): per key ``[..., S]`` or per query
    and key ``[..., L, S]``.

    Leading dimensions are flattened into one batch: SDPA's fused kernels (flash, memory-efficient) take 4-D
    inputs only, and a 5-D call (SVR's per-frame and per-position attention) would fall back to the unfused path
    that stores every attention map."""
    *lead, lq, d = q.shape
    split = lambda x: x.reshape(-1, x.shape[-2], heads, d // heads).transpose(1, 2)  # noqa: E731
    mask = None
    if key_mask is not None and key_mask.dim() == q.dim():  # [..., L, S]
        mask = key_mask.expand(*lead, lq, key_mask.shape[-1]).reshape(-1, 1, lq, key_mask.shape[-1])
    elif key_mask is not None:
        mask = key_mask.expand(*lead, key_mask.shape[-1]).reshape(-1, 1, 1, key_mask.shape[-1])
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return out.transpose(1, 2).reshape(*lead, lq, d)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"LinVT: dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return self.out(_attend(self.q(x), self.k(context), self.v(context), key_mask, self.heads))


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: float) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class TokenPositions(nn.Module):
    """Where a token came from, as a vector added to the *scoring and key* paths only: ``[..., 2]`` (frame number,
    position within the frame; averages of them after pooling) -> ``[..., width]``.

    OPEN, and a fix: the paper's SVR attends within frames and across frames without any position, so its scores
    follow shuffled frames and, with k >= the token count, reversing time changes no output; the LLM then reads the
    output tokens in query order. Positions enter as sin-cos features of both coordinates (16 frequencies each, as
    the Transformer's, so any number of frames or tokens per frame works) through one learnt linear map initialised
    small, added where tokens are *compared* (SVR's input, TTA's keys and cross-attention context) and never to the
    values the linear aggregation returns: outputs stay exact convex combinations of the input tokens."""

    frequencies = 16

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(4 * self.frequencies, width, bias=False)
        nn.init.normal_(self.proj.weight, std=0.02)
        self.register_buffer("rates", 10000.0 ** (-torch.arange(self.frequencies) / self.frequencies),
                             persistent=False)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        angles = coords[..., None].to(self.rates.dtype) * self.rates  # [..., 2, F]
        features = torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)  # [..., 4F]
        return self.proj(features.to(self.proj.weight.dtype))


def token_coords(batch: int, frames: int, per_frame: int, device: torch.device) -> torch.Tensor:
    """``[B, T*N, 2]`` (frame number, position in the frame) of each token of the frame-major flattened input."""
    t = torch.arange(frames, device=device).repeat_interleave(per_frame)
    n = torch.arange(per_frame, device=device).repeat(frames)
    return torch.stack([t, n], -1).float().expand(batch, -1, -1)


class SpatioTemporalLayer(nn.Module):
    """Self-attention within each frame, then across frames at each spatial position, then an MLP (pre-norm,
    residual: OPEN in the paper)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_s, self.norm_t, self.norm_m = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.spatial, self.temporal = Attention(dim, heads), Attention(dim, heads)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # x [B, T, N, D]; frame_mask [B, T] (valid frames) or [B, T, T] (frames each frame may attend to)
        h = self.norm_s(x)
        x = x + self.spatial(h, h, None)
        h = self.norm_t(x).transpose(1, 2)  # [B, N, T, D]: each position attends over the valid frames
        x = x + self.temporal(h, h, frame_mask[:, None].expand(-1, x.shape[2], *frame_mask.shape[1:])).transpose(1, 2)
        return x + self.mlp(self.norm_m(x))


class SVR(nn.Module):
    """Spatio-temporal significance scoring and top-k selection (Sec. 3.2.1)."""

    def __init__(self, cfg: LinVTConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.dim, cfg.inner) if cfg.inner != cfg.dim else nn.Identity()
        self.layers = nn.ModuleList(SpatioTemporalLayer(cfg.inner, cfg.heads, cfg.mlp_ratio)
                                    for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.inner)
        self.score = nn.Linear(cfg.inner, 1)  # OPEN: the paper does not say how a token's score is read out
        self.positions = TokenPositions(cfg.inner) if cfg.positions else None
        self.checkpoint = cfg.checkpoint_svr

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor, frame_shots: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Scores ``[B, T*N]`` (-inf on padded frames). With ``frame_shots`` ``[B, T]`` (each frame's shot number),
        the temporal attention stays inside each shot: the supplement segments videos into clips (AutoShot) before
        LinVT, and this is where a clip boundary can act without breaking the outputs' linearity."""
        attend = frame_mask
        if frame_shots is not None:
            same = frame_shots[:, :, None] == frame_shots[:, None, :]
            attend = (same | ~frame_mask[:, :, None]) & frame_mask[:, None, :]  # padded frames: any valid one
        h = self.proj(x)
        if self.positions is not None:
            b, t, n, _ = x.shape
            h = h + self.positions(token_coords(b, t, n, x.device)).view(b, t, n, -1).to(h.dtype)
        for layer in self.layers:
            if self.checkpoint and self.training and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(layer, h, attend, use_reentrant=False)
            else:
                h = layer(h, attend)
        scores = self.score(self.norm(h)).squeeze(-1).flatten(1)
        valid = frame_mask[:, :, None].expand(-1, -1, x.shape[2]).flatten(1)
        return scores.masked_fill(~valid, float("-inf"))


def select_top_k(tokens: torch.Tensor, scores: torch.Tensor, k: int,
                 basis: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Keep each sample's k best tokens in temporal order: (values [B, K, D], valid [B, K], basis rows).

    Values are the raw inputs times a straight-through gate (1 forward, d/d score backward) so the scorer trains
    while the forward pass stays a selection. ``basis`` ``[B, T*N, E]`` (any per-token rows: the identity for the
    weights, token coordinates) is gathered the same way, without the gate.
    """
    k = int(min(k, int(torch.isfinite(scores).sum(1).max())))
    top = torch.topk(scores, k, dim=1).indices
    order = torch.sort(top, dim=1).indices  # flattened index = frame * N + position: ascending is temporal order
    index = torch.gather(top, 1, order)
    valid = torch.isfinite(torch.gather(scores, 1, index))  # samples with fewer than k tokens picked some padding
    picked = torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))
    gate = torch.sigmoid(torch.gather(scores, 1, index).masked_fill(~valid, 0.0))
    picked = picked + picked * (gate - gate.detach())[..., None]  # exactly the raw values forward
    picked = picked.masked_fill(~valid[..., None], 0.0)
    rows = None
    if basis is not None:
        rows = torch.gather(basis, 1, index[..., None].expand(-1, -1, basis.shape[-1]))
        rows = rows.masked_fill(~valid[..., None], 0.0)
    return picked, valid, rows


def window_average(x: torch.Tensor, valid: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average consecutive windows of ``window`` valid tokens (padding excluded): ``[B, ceil(K/w), D]``, valid."""
    if window == 1:
        return x, valid
    b, k, d = x.shape
    pad = (-k) % window
    x = F.pad(x * valid[..., None], (0, 0, 0, pad)).reshape(b, -1, window, d)
    count = F.pad(valid.to(x.dtype), (0, pad)).reshape(b, -1, window).sum(-1)
    return x.sum(2) / count.clamp(min=1)[..., None], count > 0


def adaptive_average(x: torch.Tensor, valid: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` averages over consecutive bins of the valid tokens (bins as in adaptive average pooling)."""
    k = x.shape[1]
    start = torch.arange(m, device=x.device) * k // m
    end = (torch.arange(m, device=x.device) + 1) * k // m
    end = torch.maximum(end, start + 1).clamp(max=k)
    position = torch.arange(k, device=x.device)
    bins = ((position[None] >= start[:, None]) & (position[None] < end[:, None])).to(x.dtype)  # [m, K]
    weights = bins[None] * valid[:, None, :].to(x.dtype)  # [B, m, K]
    count = weights.sum(-1)
    return weights @ x / count.clamp(min=1)[..., None], count > 0


def multiscale_pool(x: torch.Tensor, valid: torch.Tensor, scales: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Multi-scale token pooling: windows of 1, 2, 4, ... tokens along the temporally ordered sequence.

    OPEN: the paper says "average pooling in a shifted-window manner" without sizes; windows double per scale and
    do not overlap, so each pooled token stays an average (convex) of selected tokens.
    """
    return [window_average(x, valid, 2 ** s) for s in range(scales)]


class TTALayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, text: bool) -> None:
        super().__init__()
        self.norm_q, self.norm_v, self.norm_m = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn, self.visual = Attention(dim, heads), Attention(dim, heads)
        self.norm_t = nn.LayerNorm(dim) if text else None
        self.text = Attention(dim, heads) if text else None
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, q, visual, visual_mask, text, text_mask):
        h = self.norm_q(q)
        q = q + self.self_attn(h, h, None)
        q = q + self.visual(self.norm_v(q), visual, visual_mask)
        if self.text is not None and text is not None:
            q = q + self.text(self.norm_t(q), text, text_mask)
        return q + self.mlp(self.norm_m(q))


class TTA(nn.Module):
    """Text-conditioned token aggregation for one query set: layers, then the linear aggregation layer."""

    def __init__(self, cfg: LinVTConfig, num_queries: int) -> None:
        super().__init__()
        w = cfg.inner
        self.queries = nn.Parameter(torch.randn(num_queries, w) * 0.02)
        self.visual_proj = nn.Linear(cfg.dim, w) if w != cfg.dim else nn.Identity()
        self.text_proj = nn.Linear(cfg.dim, w) if w != cfg.dim and cfg.text_conditioning else nn.Identity()
        self.layers = nn.ModuleList(TTALayer(w, cfg.heads, cfg.mlp_ratio, cfg.text_conditioning)
                                    for _ in range(cfg.layers))
        self.wq, self.wk = nn.Linear(w, w, bias=False), nn.Linear(w, w, bias=False)
        self.positions = TokenPositions(w) if cfg.positions else None

    def forward(self, visual, visual_mask, text, text_mask, basis=None, coords=None, queries: slice | None = None):
        """``coords`` ``[B, K, 2]``: where each visual token came from (required when built with positions);
        ``queries``: the query set to use (a shared stack's one scale), all by default."""
        q = self.queries[queries if queries is not None else slice(None)].expand(visual.shape[0], -1, -1)
        context = self.visual_proj(visual)
        if self.positions is not None:
            context = context + self.positions(coords).to(context.dtype)  # keys and cross-attention only
        text = self.text_proj(text) if text is not None else None
        for layer in self.layers:
            q = layer(q, context, visual_mask, text, text_mask)
        # Linear aggregation: softmax over the visual tokens, applied to the tokens themselves (no value map).
        logits = self.wq(q) @ self.wk(context).transpose(1, 2) / math.sqrt(q.shape[-1])
        attn = logits.masked_fill(~visual_mask[:, None, :], float("-inf")).softmax(-1)
        return attn @ visual, (attn @ basis if basis is not None else None)


class LinVT(nn.Module):
    """Frames' visual tokens ``[B, T, N, D]`` (+ frame mask, text embeddings and mask) -> video tokens ``[B, M, D]``.

    Args of forward:
        tokens: per-frame visual tokens in the LLM embedding space; padded frames are ignored via ``frame_mask``.
        frame_mask: ``[B, T]`` True for real frames.
        text, text_mask: the instruction's token embeddings ``[B, S, D]`` and mask (TTA's text condition).
        frame_shots: ``[B, T]`` each frame's shot number (optional): SVR's temporal attention stays in a shot.
        return_weights: also return the matrix W with ``tokens_out = W @ tokens_in`` (tests, analysis; memory
            grows with T*N).
    """

    def __init__(self, cfg: LinVTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        v = cfg.variant
        self.svr = SVR(cfg) if v not in (Variant.tta_only, Variant.avg) else None
        if v in (Variant.multi_c, Variant.tta_only) and TTAWeights(cfg.tta_weights) == TTAWeights.shared:
            self.tta = nn.ModuleList([TTA(cfg, cfg.num_output_tokens)])  # per-scale query sets, shared layers
        elif v in (Variant.multi_c, Variant.tta_only):
            self.tta = nn.ModuleList(TTA(cfg, n) for n in cfg.queries)
        elif v in (Variant.multi_b, Variant.single_a):
            self.tta = nn.ModuleList([TTA(cfg, cfg.num_output_tokens)])
        elif v == Variant.multi_a:
            self.tta = nn.ModuleList([TTA(cfg, cfg.queries[0])])
        else:
            self.tta = nn.ModuleList()

    def forward(self, tokens: torch.Tensor, frame_mask: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, return_weights: bool = False,
                frame_shots: torch.Tensor | None = None) -> LinVTOutput:
        b, t, n, d = tokens.shape
        if d != self.cfg.dim:
            raise ValueError(f"LinVT: tokens are {d} wide, the module was built for dim={self.cfg.dim}")
        if not bool(frame_mask.any(1).all()):
            raise ValueError("LinVT: every sample needs at least one frame")
        if self.cfg.text_conditioning and self.cfg.variant != Variant.avg and text is None:
            raise ValueError("LinVT: text conditioning is on but no text was given (or build it with "
                             "text_conditioning=False)")
        if text is not None and text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        flat = tokens.flatten(1, 2)  # [B, T*N, D], frame-major: temporal order
        basis = None
        if return_weights:
            basis = torch.eye(t * n, device=tokens.device, dtype=tokens.dtype).expand(b, -1, -1)
        v = self.cfg.variant

        token_mask = frame_mask[:, :, None].expand(-1, -1, n).flatten(1)
        if v == Variant.avg:
            x, valid = window_average(flat, token_mask, n)
            return LinVTOutput(x, valid, None, window_average(basis, token_mask, n)[0] if return_weights else None)

        # Per-token rows carried through selection and pooling: the identity (weights) and the coordinates.
        coords = token_coords(b, t, n, tokens.device) if self.cfg.positions else None
        carried = [r for r in (basis, coords) if r is not None]
        scores = None
        if self.svr is not None:
            scores = self.svr(tokens, frame_mask, frame_shots)
            x, valid, picked = select_top_k(flat, scores, self.cfg.top_k, torch.cat(carried, -1) if carried else None)
        else:
            x, valid, picked = flat, token_mask, torch.cat(carried, -1) if carried else None
        rows = picked[..., :t * n] if basis is not None else None
        coords = picked[..., -2:] if coords is not None else None

        if v == Variant.svr_only:
            out, out_valid = adaptive_average(x, valid, self.cfg.num_output_tokens)
            out_rows = adaptive_average(rows, valid, self.cfg.num_output_tokens)[0] if rows is not None else None
            return LinVTOutput(out, out_valid, scores, out_rows)
        if v in (Variant.single_a, Variant.multi_a):
            out, out_rows = self.tta[0](x, valid, text, text_mask, rows, coords)
            if v == Variant.single_a:
                return self._output(out, scores, out_rows)
            full = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
            pooled = multiscale_pool(out, full, len(self.cfg.queries))
            out = torch.cat([p for p, _ in pooled], 1)
            if out_rows is not None:
                out_rows = torch.cat([p for p, _ in multiscale_pool(out_rows, full, len(self.cfg.queries))], 1)
            return self._output(out, scores, out_rows)

        num_scales = len(self.cfg.queries)
        scales = multiscale_pool(x, valid, num_scales)
        scale_rows = [r for r, _ in multiscale_pool(rows, valid, num_scales)] if rows is not None else None
        # A pooled token's coordinates: the mean of its tokens' (a window's centre in time).
        scale_coords = [c for c, _ in multiscale_pool(coords, valid, num_scales)] if coords is not None else None
        if v == Variant.multi_b:
            xs, vs = torch.cat([p for p, _ in scales], 1), torch.cat([m for _, m in scales], 1)
            rs = torch.cat(scale_rows, 1) if scale_rows is not None else None
            cs = torch.cat(scale_coords, 1) if scale_coords is not None else None
            out, out_rows = self.tta[0](xs, vs, text, text_mask, rs, cs)
            return self._output(out, scores, out_rows)
        outs, out_rows = [], []
        shared = len(self.tta) == 1 and num_scales > 1
        ends = torch.tensor(self.cfg.queries).cumsum(0).tolist()
        for s, (xs, vs) in enumerate(scales):
            tta = self.tta[0] if shared else self.tta[s]
            o, r = tta(xs, vs, text, text_mask, scale_rows[s] if scale_rows is not None else None,
                       scale_coords[s] if scale_coords is not None else None,
                       slice(ends[s] - self.cfg.queries[s], ends[s]) if shared else None)
            outs.append(o)
            out_rows.append(r)
        return self._output(torch.cat(outs, 1), scores, torch.cat(out_rows, 1) if return_weights else None)

    # Saved as config.json + model.safetensors, like a transformers model, so exports load in a user's script.
    # (Not huggingface_hub's ModelHubMixin: its config handling would need LinVTConfig as plain kwargs and adds
    # hub download code paths we never want at run time.)
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {**asdict(self.cfg), "variant": Variant(self.cfg.variant).value,
                  "tta_weights": TTAWeights(self.cfg.tta_weights).value, "architecture": "LinVT"}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(folder / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LinVT:
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        config.pop("architecture", None)
        config.setdefault("positions", False)  # exported before positions existed
        model = cls(LinVTConfig(**{**config, "variant": Variant(config["variant"]),
                                   "tta_weights": TTAWeights(config.get("tta_weights", "separate"))}))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model

    @staticmethod
    def _output(out: torch.Tensor, scores: torch.Tensor | None, rows: torch.Tensor | None) -> LinVTOutput:
        return LinVTOutput(out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device), scores, rows)
