"""``seal.select``: token shards + video shards -> per question, its selected tokens as a short video (SEAL
Sec. 3.2-3.3), which any host answers through ``lvu eval`` (``seal/lvbench_qa``).

Per video: its tokens (from the token shards, by key), each question's query embedded by the encoder's text tower,
the greedy selection of :mod:`lvu.models.seal` (global, or streaming in time order), and the selected tokens'
pixels: each token's frame decoded at its original size, its box cropped (scene tokens: the whole frame), resized
and written in temporal order as an mp4 whose frames keep the tokens' times (so a host's time prompts still hold).
Resumable and distributed like extraction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import MISSING
from transformers import AutoTokenizer

from lvu.data.datamodule import ShardDataConfig, ShardDataModule
from lvu.data.decoders import open_video
from lvu.data.shards import parse_json
from lvu.data.token_shards import TokenIndex, question_key, recorded_identity
from lvu.data.video import encode_timed_mp4
from lvu.errors import ConfigError
from lvu.models.clip_encoders import ClipEncoder, embed_text
from lvu.models.seal import SelectionConfig, StreamingSelector, select
from lvu.models.seal_extract import crop_resized
from lvu.schema import RecipeConfig
from lvu.tasks.host_lm.evaluation import BenchmarkItem, benchmark_items
from lvu.tasks.seal.parts import VideoOutput, claim_folder, collate_list, done_videos, plain

log = logging.getLogger(__name__)


class SelectionMode(str, Enum):
    all_tokens = "global"
    streaming = "streaming"


class QueryText(str, Enum):
    question = "question"
    question_options = "question_options"


@dataclass
class SelectDataConfig(ShardDataConfig):
    """The video shards the tokens were extracted from, with their questions (``mc``)."""

    batch_size: int = 1
    """Videos per step on each rank."""


@dataclass
class SelectedOutputConfig:
    """Where the selected tokens go: per question, their crops in temporal order as a short mp4."""

    folder: str = MISSING
    """The selected-token shards' folder; running the same command again resumes into it."""
    part_videos: int = 16
    """Source videos per part."""
    frame_size: int = 384
    """Each crop (or scene frame) is resized to frame_size x frame_size (even; the host resizes again)."""
    crf: int = 18
    """H.264 quality of the written crops (lower: closer to the decoded pixels, larger files)."""


@dataclass
class SealSelectRecipe(RecipeConfig):
    data: SelectDataConfig = field(default_factory=SelectDataConfig)
    """Video shards (``data.predict``)."""
    tokens: str = MISSING
    """The token shards of these videos (``lvu predict seal/extract``'s output.folder)."""
    encoder: str | None = None
    """The text-image encoder that embeds the queries; null: the one the tokens were extracted with (another
    encoder's space would make relevance meaningless, so a different one is refused)."""
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    """Budget, alpha and the terms' normalisation (SEAL Sec. 3.2; supplement values)."""
    mode: SelectionMode = SelectionMode.all_tokens
    """global: select among all of a video's tokens; streaming: windows of selection.window tokens in time order,
    each selected together with the subset kept so far (memory bounded by window + budget)."""
    query: QueryText = QueryText.question
    """OPEN: the text embedded for relevance: the question alone, or the question followed by its options."""
    output: SelectedOutputConfig = field(default_factory=SelectedOutputConfig)
    """The selected tokens."""


def tokens_encoder(tokens: Path, encoder: str | None) -> str:
    """``encoder``, or the one the tokens in ``tokens`` were extracted with; refused when the two differ (relevance
    needs the queries and the tokens in one space)."""
    extracted = str(recorded_identity(tokens)["models"]["encoder"])
    if encoder and Path(encoder).resolve() != Path(extracted).resolve():
        raise ConfigError(f"encoder {encoder} is not the one the tokens in {tokens} were extracted with "
                          f"({extracted}): relevance needs queries and tokens in one space")
    return encoder or extracted


def selection_identity(cfg: SealSelectRecipe) -> dict[str, Any]:
    return {"tokens": str(Path(cfg.tokens).resolve()), "selection": plain(cfg.selection), "mode": cfg.mode.value,
            "query": cfg.query.value, "frame_size": cfg.output.frame_size, "crf": cfg.output.crf}


def query_text(item: BenchmarkItem, how: QueryText) -> str:
    if how is QueryText.question_options and item.options:
        return " ".join([item.text, *item.options])
    return item.text


def chosen_tokens(embeddings: torch.Tensor, times: torch.Tensor, query: torch.Tensor, cfg: SelectionConfig,
                  mode: SelectionMode) -> torch.Tensor:
    """Indices (into the video's tokens) of the selected ones, in temporal order (ties: token order)."""
    if mode is SelectionMode.streaming:  # windows follow the video: tokens by time, then position
        order = torch.from_numpy(np.lexsort((np.arange(len(times)), times.numpy())))
        picked = order[StreamingSelector(cfg, query).run(embeddings[order])]
    else:
        picked = select(embeddings, query, cfg).indices
    return picked[np.lexsort((picked.numpy(), times[picked].numpy()))]


class SealSelectTask(L.LightningModule):
    """Per video: its tokens, each question's query embedding, the selection, the selected tokens' crops."""

    def __init__(self, cfg: SealSelectRecipe) -> None:
        super().__init__()
        if cfg.output.frame_size % 2:
            raise ConfigError(f"output.frame_size must be even (H.264), got {cfg.output.frame_size}")
        self.cfg = cfg
        self.encoder_path = tokens_encoder(Path(cfg.tokens), cfg.encoder)
        self.weights_source = self.encoder_path
        self.index: TokenIndex | None = None
        self.encoder: ClipEncoder | None = None
        self.tokenizer: Any = None

    def on_predict_start(self) -> None:
        self.encoder = ClipEncoder.from_pretrained(self.encoder_path, device=str(self.device))
        self.tokenizer = AutoTokenizer.from_pretrained(self.encoder_path)
        self.index = TokenIndex(Path(self.cfg.tokens))

    def on_predict_end(self) -> None:
        if self.index is not None:
            self.index.close()

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> list[VideoOutput]:
        return [self._video(sample) for sample in batch if not sample["__pad__"]]

    def _video(self, sample: dict[str, Any]) -> VideoOutput:
        """Every question of the video gets a sample, so that an evaluation still counts it: a video missing from the
        token shards, or a selection of nothing (a video without tokens), gives one blank frame, flagged in the
        sample's ``seal.note`` (the answer is then a guess, scored like any other)."""
        assert self.index is not None and self.encoder is not None
        key, annotation = sample["__key__"], sample["annotation"]
        items = benchmark_items(key, annotation, grounding=False)
        if not items:
            return VideoOutput(key, [])
        stored, token_json = self.index.read(key) if key in self.index else (np.zeros((0, self.encoder.dim)), {})
        if key not in self.index:
            log.warning("%s: no tokens in %s (not extracted); its questions get a blank frame", key, self.cfg.tokens)
        embeddings = torch.from_numpy(stored.astype(np.float32))
        records = token_json.get("tokens", [])
        times = torch.tensor([r["frame_s"] for r in records], dtype=torch.float64)
        # One query at a time: padding a batch changes the embeddings in their last bits, and a near-tie in the greedy
        # would then make a question's tokens depend on the other questions of its video.
        queries = [embed_text(self.encoder, self.tokenizer, [query_text(i, self.cfg.query)])[0] for i in items]
        picks = [chosen_tokens(embeddings, times, q, self.cfg.selection, self.cfg.mode) for q in queries]
        needed = {int(i) for picked in picks for i in picked}
        crops = TokenCrops(open_video(sample["raw"]), records, needed, self.cfg.output.frame_size)
        questions = annotation.get("mc") or []
        rest = {k: v for k, v in annotation.items() if k not in ("mc", "tokens", "segments")}
        samples = []
        for number, (item, picked) in enumerate(zip(items, picks, strict=True)):
            frames = [(crops.crop(int(i)), records[int(i)]["frame_s"]) for i in picked]
            seal: dict[str, Any] = {"video": key, "query": query_text(item, self.cfg.query),
                                    "tokens": [{**records[int(i)], "index": int(i)} for i in picked]}
            if not frames:
                size = self.cfg.output.frame_size
                frames = [(np.zeros((size, size, 3), dtype=np.uint8), 0.0)]
                seal["note"] = "no tokens to select from: one blank frame"
            question = {**questions[number], "uid": item.id[len(key) + 1:]}
            samples.append((question_key(key, number),
                            {"mp4": encode_timed_mp4(frames, crf=self.cfg.output.crf),
                             "json": {**rest, "mc": [question], "seal": seal,
                                      "source_duration_s": float(token_json.get("duration_s", 0.0))}}))
        return VideoOutput(key, samples)


class TokenCrops:
    """The pixels of a video's selected tokens: every frame they come from decoded in one pass (original size; a
    seek per frame would cost a decode from the previous keyframe each), each token's box cropped and resized to
    ``size`` squared (a scene token: the whole frame)."""

    def __init__(self, video: Any, records: list[dict[str, Any]], tokens: set[int], size: int) -> None:
        self.records, self.size = records, size
        times = video.info.frame_times
        self._index = {t: int(np.abs(times - float(records[t]["frame_s"])).argmin()) for t in tokens}
        wanted = sorted(set(self._index.values()))
        self._frames = dict(zip(wanted, torch.from_numpy(video.read(wanted)), strict=True)) if wanted else {}

    def crop(self, token: int) -> np.ndarray:
        frame = self._frames[self._index[token]]
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = self.records[token]["box"]
        box = torch.tensor([[x0 * width, y0 * height, x1 * width, y1 * height]])
        return crop_resized(frame, box, self.size)[0].numpy()


def _raw_video(raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The selection decodes only the frames it picks, in the main process: the loader passes the bytes on."""
    return {"raw": {k: v for k, v in raw.items() if k != "json"}, "annotation": parse_json(raw)}


def seal_select_data(cfg: SealSelectRecipe) -> ShardDataModule:
    """The video shards, over the videos not yet in the output folder."""
    folder = claim_folder(Path(cfg.output.folder), selection_identity(cfg), "selected tokens")
    done = done_videos(folder, "video", selection_identity(cfg))
    if done:
        rank_zero_info(f"{folder}: {len(done)} video(s) already done; skipped")
    return ShardDataModule(cfg.data, cfg.seed, decode=lambda split: _raw_video, collate=lambda split: collate_list,
                           select=lambda split: (lambda annotation: annotation["__key__"] not in done)
                           if split == "predict" else None, empty_ok=("predict",))


