"""``seal.ground``: SEAL's temporal-grounding head (Ego4D-NLQ) trained on the selected tokens' timeline.

Per query: its embedding by the encoder's text tower, the query-aware selection of B of the video's tokens (scene
and action tokens for Ego4D-NLQ; budget 200 or 450), those tokens in temporal order at their frame times, and the
SnAG-style head of :mod:`lvu.models.seal_grounding` (local-window transformer, cross-attention to the query's token
states, focal classification + 1 - IoU regression over positives). Validation and test report Recall@{1,5} at IoU
{0.3, 0.5} over every query (:class:`lvu.metrics.grounding.TemporalGroundingRecall`); prediction writes each query's
top windows.

The frozen text tower is kept out of the checkpoint (it is loaded again from ``encoder``); selection runs without
gradients, as in the paper (the selection is not learned).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import MISSING
from torchmetrics import MeanMetric
from transformers import AutoTokenizer

from lvu.data.datamodule import ShardDataConfig, ShardDataModule
from lvu.data.shards import BadSample, parse_json
from lvu.data.token_shards import IDENTITY_FILE
from lvu.metrics.grounding import TemporalGroundingRecall
from lvu.models.clip_encoders import ClipEncoder, text_states
from lvu.models.seal import SelectionConfig, select
from lvu.models.seal_grounding import (
    GroundingConfig,
    GroundingHead,
    GroundingOutput,
    grounding_loss,
    top_windows,
)
from lvu.schema import RecipeConfig
from lvu.tasks.optim import configure_optimizers
from lvu.tasks.seal.select import tokens_encoder


@dataclass
class GroundDataConfig(ShardDataConfig):
    """Token shards (``lvu predict seal/extract``, kinds scene and action) whose videos carry grounding queries
    (``segments``: query, start_s, end_s)."""

    batch_size: int = 4
    """Videos per step on each rank (every query of each video is a training example)."""


@dataclass
class GroundEvalConfig:
    top_k: int = 5
    """Windows kept per query (Recall@5 needs 5)."""
    nms_iou: float = 0.5
    """OPEN: 1-D NMS between a query's proposals (SnAG's soft-NMS is not reproduced; hard NMS at this IoU)."""


@dataclass
class SealGroundRecipe(RecipeConfig):
    data: GroundDataConfig = field(default_factory=GroundDataConfig)
    """Token shards with grounding queries."""
    encoder: str = MISSING
    """The encoder the tokens were extracted with (a CLIP or SigLIP folder): its text tower embeds the queries (a
    token folder that records another encoder is refused)."""
    selection: SelectionConfig = field(default_factory=lambda: SelectionConfig(budget=200))
    """Tokens per query (supplement: 200 or 450 for Ego4D-NLQ) and the selection's weights."""
    head: GroundingConfig = field(default_factory=GroundingConfig)
    """The grounding head (token_dim and query_dim are taken from the encoder)."""
    grounding: GroundEvalConfig = field(default_factory=GroundEvalConfig)
    """Inference: proposals kept per query."""


@dataclass
class GroundingQuery:
    uid: str
    text: str
    window: tuple[float, float]


@dataclass
class GroundingVideo:
    """One token sample as the head sees it: token embeddings ``[N, D]``, their times ``[N]`` (s), its queries."""

    key: str
    tokens: torch.Tensor
    times: torch.Tensor
    duration_s: float
    queries: list[GroundingQuery]
    pad: bool = False  # an evaluation padding copy (not scored)


def decode_grounding(raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    annotation = parse_json(raw)
    where = {"shard": raw.get("__shard__", ""), "key": raw.get("__key__", "")}
    if "npy" not in raw:
        raise BadSample("missing_features", "no .npy tokens (is this a token shard of seal/extract?)", **where)
    tokens = np.load(io.BytesIO(raw["npy"]), allow_pickle=False).astype(np.float32)
    records = annotation.get("tokens") or []
    if len(records) != len(tokens) or len(tokens) == 0:
        raise BadSample("bad_tokens", f"{len(tokens)} embeddings for {len(records)} token records", **where)
    queries = [GroundingQuery(str(s.get("uid", n)), str(s["query"]), (float(s["start_s"]), float(s["end_s"])))
               for n, s in enumerate(annotation.get("segments") or []) if s.get("query")]
    return {"video": GroundingVideo(raw["__key__"], torch.from_numpy(tokens),
                                    torch.tensor([r["frame_s"] for r in records], dtype=torch.float32),
                                    float(annotation["duration_s"]), queries)}


def _collate(samples: list[dict[str, Any]]) -> list[GroundingVideo]:
    videos = []
    for sample in samples:
        sample["video"].pad = bool(sample["__pad__"])
        videos.append(sample["video"])
    return videos


@dataclass
class HeadInputs:
    """Every query of a batch with its selected tokens, padded: ``tokens [Q, B, D]``, ``times [Q, B]``, ``mask``,
    the query's token states ``[Q, L, H]`` (``query_mask``), ``duration [Q]``, ``target [Q, 2]``."""

    tokens: torch.Tensor
    times: torch.Tensor
    mask: torch.Tensor
    query: torch.Tensor
    query_mask: torch.Tensor
    duration: torch.Tensor
    target: torch.Tensor
    names: list[tuple[str, str]]  # (video key, query uid)


LOSS_PARTS = ("loss", "classification", "regression")


def check_token_encoders(cfg: SealGroundRecipe) -> None:
    """Every token folder among the data sources that records its extraction must have used ``encoder``."""
    for split in ("train", "val", "test", "predict"):
        sources = getattr(cfg.data, split)
        for source in sources if isinstance(sources, list) else [sources]:
            if source and (Path(str(source)) / IDENTITY_FILE).is_file():
                tokens_encoder(Path(str(source)), cfg.encoder)


class SealGroundTask(L.LightningModule):
    def __init__(self, cfg: SealGroundRecipe) -> None:
        super().__init__()
        check_token_encoders(cfg)
        self.cfg = cfg
        # A plain attribute (ClipEncoder is not a Module): the frozen tower stays out of state_dict and optimiser.
        self.text = ClipEncoder.from_pretrained(cfg.encoder, device="cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.encoder)
        text_width = int(self.text.model.config.text_config.hidden_size)
        self.head_cfg = GroundingConfig(**{**vars(cfg.head), "token_dim": self.text.dim, "query_dim": text_width})
        self.head = GroundingHead(self.head_cfg)
        self.recall = torch.nn.ModuleDict({split: TemporalGroundingRecall() for split in ("val", "test")})
        # Evaluation losses as synced means (a rank whose batch holds only padding copies logs nothing per step, so
        # a per-step synced log would leave the other ranks waiting for it).
        self.eval_losses = torch.nn.ModuleDict({f"{split}_{name}": MeanMetric() for split in ("val", "test")
                                                for name in LOSS_PARTS})
        self.weights_source = None

    def _text_to_device(self) -> None:
        if self.text.device != self.device:
            self.text.model.to(self.device)
            self.text.device = self.device

    def on_fit_start(self) -> None:
        self._text_to_device()

    def on_validation_start(self) -> None:
        self._text_to_device()

    def on_test_start(self) -> None:
        self._text_to_device()

    def on_predict_start(self) -> None:
        self._text_to_device()

    @torch.no_grad()
    def head_inputs(self, videos: list[GroundingVideo]) -> HeadInputs | None:
        """Each query's selection among its video's tokens, in temporal order, padded into one batch (on the
        device the videos' tokens are on)."""
        asked = [(video, query) for video in videos for query in video.queries]
        if not asked:
            return None
        device = self.device
        pooled, states, state_mask = text_states(self.text, self.tokenizer, [q.text for _, q in asked])
        chosen = []
        for (video, _), relevance_query in zip(asked, pooled.to(device), strict=True):
            picked = select(video.tokens, relevance_query, self.cfg.selection).indices.to(device)
            picked = picked[torch.argsort(video.times[picked], stable=True)]
            chosen.append((video.tokens[picked], video.times[picked]))
        width = max(len(t) for t, _ in chosen)
        count, dim = len(asked), videos[0].tokens.shape[1]
        tokens = torch.zeros(count, width, dim, device=device)
        times = torch.zeros(count, width, device=device)
        mask = torch.zeros(count, width, dtype=torch.bool, device=device)
        for i, (embedded, at) in enumerate(chosen):
            tokens[i, :len(at)], times[i, :len(at)], mask[i, :len(at)] = embedded, at, True
        return HeadInputs(tokens, times, mask, states.to(device), state_mask.to(device),
                          torch.tensor([v.duration_s for v, _ in asked], device=device),
                          torch.tensor([q.window for _, q in asked], device=device),
                          [(v.key, q.uid) for v, q in asked])

    def _forward(self, inputs: HeadInputs) -> GroundingOutput:
        return self.head(inputs.tokens, inputs.times, inputs.mask, inputs.query, inputs.query_mask, inputs.duration)

    def _loss(self, inputs: HeadInputs, out: GroundingOutput, stage: str) -> torch.Tensor:
        """The training loss, logged per step in training and accumulated as synced means in evaluation."""
        parts = grounding_loss(out, inputs.times, inputs.mask, inputs.target, self.head_cfg)
        parts["loss"] = parts["classification"] + parts["regression"]
        size = len(inputs.names)
        for name, value in parts.items():
            if stage == "train":
                self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=size)
            else:
                self.eval_losses[f"{stage}_{name}"].update(value.detach(), weight=size)
        return parts["loss"]

    def _windows(self, inputs: HeadInputs, out: GroundingOutput) -> list[torch.Tensor]:
        return top_windows(out, inputs.times, inputs.mask, self.cfg.grounding.top_k, self.cfg.grounding.nms_iou)

    def training_step(self, batch: list[GroundingVideo], batch_idx: int) -> torch.Tensor | None:
        inputs = self.head_inputs(batch)  # never None in training: the data keep only videos with queries
        return None if inputs is None else self._loss(inputs, self._forward(inputs), "train")

    def _evaluate(self, batch: list[GroundingVideo], stage: str) -> None:
        inputs = self.head_inputs([v for v in batch if not v.pad])
        if inputs is None:
            return
        out = self._forward(inputs)
        self._loss(inputs, out, stage)
        self.recall[stage].update(self._windows(inputs, out), inputs.target)

    def validation_step(self, batch: list[GroundingVideo], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: list[GroundingVideo], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_recall(self, stage: str) -> None:
        for name, value in self.recall[stage].compute().items():
            self.log(f"{stage}/{name}", value)
        self.recall[stage].reset()
        for name in LOSS_PARTS:
            metric = self.eval_losses[f"{stage}_{name}"]
            self.log(f"{stage}/{name}", metric.compute())
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_recall("val")

    def on_test_epoch_end(self) -> None:
        self._log_recall("test")

    def predict_step(self, batch: list[GroundingVideo], batch_idx: int) -> list[dict[str, Any]]:
        inputs = self.head_inputs([v for v in batch if not v.pad])
        if inputs is None:
            return []
        windows = self._windows(inputs, self._forward(inputs))
        return [{"key": key, "uid": uid, "windows": [[round(float(a), 3), round(float(b), 3)] for a, b in found],
                 "target": [float(v) for v in target]}
                for (key, uid), found, target in zip(inputs.names, windows, inputs.target, strict=True)]

    def configure_optimizers(self):
        return configure_optimizers(self, self.cfg.optim)  # only the head has parameters


def seal_ground_data(cfg: SealGroundRecipe) -> ShardDataModule:
    """Token shards; videos without a grounding query are left out."""
    return ShardDataModule(cfg.data, cfg.seed, decode=lambda split: decode_grounding, collate=lambda split: _collate,
                           select=lambda split: lambda annotation: bool(annotation.get("segments")))


def ground_metrics(cfg: SealGroundRecipe) -> frozenset[str]:
    recall = {f"R@{k},IoU={t:g}" for k in (1, 5) for t in (0.3, 0.5)}
    losses = {"loss", "classification", "regression"}
    return frozenset({f"train/{n}" for n in losses} | {f"{s}/{n}" for s in ("val", "test") for n in losses | recall})
