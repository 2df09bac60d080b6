"""SEAL (Wang et al.) on the shared stack: ``seal.extract`` turns video shards into token shards; ``seal.select``
picks, per question, the tokens to answer from and writes their crops as a short video any host answers.

``lvu predict seal/extract data.predict=VIDEOS output.folder=TOKENS`` decodes each video's frames, extracts its
scene, object and action tokens (:mod:`lvu.models.seal_extract`) and writes them as token shards
(:mod:`lvu.data.token_shards`). It runs on every trainer preset (CPU, DDP, Slurm): each video is extracted by exactly
one rank (every rank plans from the parts on disk before any rank writes), and a killed or preempted run resumes by
running the same command: the videos in complete parts are skipped. The folder records the models and settings
(``extraction.json``); a rerun with other ones is refused, so tokens of two extractors never mix.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import MISSING
from transformers import AutoTokenizer

from lvu.data.datamodule import ShardDataConfig, ShardDataModule
from lvu.data.decoders import VideoDecoder, open_video
from lvu.data.sampling import SamplerConfig
from lvu.data.shards import parse_json
from lvu.data.token_shards import (
    IDENTITY_FILE,
    TokenIndex,
    done_keys,
    next_part_number,
    part_path,
    parts,
    question_key,
    recorded_identity,
    write_manifest,
    write_part,
)
from lvu.data.video import encode_timed_mp4
from lvu.errors import ConfigError
from lvu.models.clip_encoders import ClipEncoder, embed_text
from lvu.models.seal import SelectionConfig, StreamingSelector, select
from lvu.models.seal_extract import (
    Detector,
    ExtractionConfig,
    Extractor,
    MaskProposer,
    TokenKind,
    VideoTokens,
    crop_resized,
)
from lvu.schema import RecipeConfig
from lvu.tasks.host_lm.evaluation import BenchmarkItem, benchmark_items
from lvu.tasks.registry import TaskSpec, register_task

log = logging.getLogger(__name__)


@dataclass
class SealVideoConfig(ShardDataConfig):
    """Video shards and how their frames are decoded for extraction."""

    batch_size: int = 1
    """Videos per step on each rank."""
    frames: int = 256
    """OPEN: frames decoded per video, uniformly spaced (fewer when the video has fewer); the detector and tracker
    run on all of them, scene tokens and keyframes are spread over them. The paper gives no frame rate."""
    frame_size: int = 448
    """OPEN: frames are resized to frame_size x frame_size when decoded (crops come from these)."""


@dataclass
class SealModelsConfig:
    """The models, each a local folder written by ``save_pretrained`` (nothing is downloaded)."""

    encoder: str = MISSING
    """Frame and crop encoder: CLIP or SigLIP (its text tower embeds the queries for relevance)."""
    sam2: str | None = None
    """SAM2 model (transformers ``Sam2Model``): required for object tokens."""
    detector: str | None = None
    """Object detector (transformers ``AutoModelForObjectDetection``): required for action tokens."""
    dtype: str = "float32"
    """Precision the models run in (float32, bfloat16, float16)."""


STORE_DTYPES = ("float16", "float32")


@dataclass
class TokenOutputConfig:
    """Where and how the token shards are written."""

    folder: str = MISSING
    """The token shards' folder; running the same command again resumes into it."""
    part_videos: int = 16
    """Videos per part (a kill loses at most the part being filled on each rank)."""
    dtype: str = "float16"
    """Stored embedding precision: float16 halves the disk of float32 (the selection computes in float32)."""


@dataclass
class SealExtractRecipe(RecipeConfig):
    data: SealVideoConfig = field(default_factory=SealVideoConfig)
    """Video shards (``data.predict``)."""
    models: SealModelsConfig = field(default_factory=SealModelsConfig)
    """Encoder, SAM2 and detector folders."""
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    """What is extracted (supplement values; OPEN choices marked)."""
    output: TokenOutputConfig = field(default_factory=TokenOutputConfig)
    """The token shards."""


def _kinds(cfg: SealExtractRecipe) -> list[TokenKind]:
    return [TokenKind(k) for k in cfg.extraction.kinds]


def check_extract(cfg: SealExtractRecipe) -> None:
    """Every mismatch between the kinds asked for and the models given, in one error."""
    problems = []
    if TokenKind.object in _kinds(cfg) and not cfg.models.sam2:
        problems.append("object tokens need models.sam2 (a SAM2 folder), or drop 'object' from extraction.kinds")
    if TokenKind.action in _kinds(cfg) and not cfg.models.detector:
        problems.append("action tokens need models.detector (an object-detection folder), or drop 'action' from "
                        "extraction.kinds")
    if cfg.output.dtype not in STORE_DTYPES:
        problems.append(f"output.dtype must be one of {', '.join(STORE_DTYPES)}, got {cfg.output.dtype!r}")
    if not _kinds(cfg):
        problems.append("extraction.kinds is empty")
    if cfg.data.frames < 1 or cfg.output.part_videos < 1:
        problems.append("data.frames and output.part_videos must be at least 1")
    if problems:
        raise ConfigError("seal.extract:\n  - " + "\n  - ".join(problems))


def extraction_identity(cfg: SealExtractRecipe) -> dict[str, Any]:
    """What decides the tokens: a folder holds tokens of one identity only."""
    return {"models": dict(asdict(cfg.models)), "extraction": _plain(cfg.extraction),
            "frames": cfg.data.frames, "frame_size": cfg.data.frame_size, "dtype": cfg.output.dtype}


def _plain(section: Any) -> Any:
    return json.loads(json.dumps(asdict(section), default=str))


def claim_folder(folder: Path, wanted: dict[str, Any], what: str) -> Path:
    """An output folder, its identity compared with the one recorded on its first use (written by the writer)."""
    record = folder / IDENTITY_FILE
    if record.is_file():
        recorded = json.loads(record.read_text())
        if recorded != wanted:
            changed = sorted(_differences(recorded, wanted))
            raise ConfigError(f"{folder} holds {what} made with other settings ({', '.join(changed)}); "
                              "use another output.folder, or delete this one to start again")
    return folder


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


class SealExtractTask(L.LightningModule):
    """Frozen models, no parameters to train: prediction only. The models are loaded when prediction starts, on the
    rank's device."""

    def __init__(self, cfg: SealExtractRecipe) -> None:
        super().__init__()
        check_extract(cfg)
        self.cfg = cfg
        self.extractor: Extractor | None = None
        sources = [cfg.models.encoder, cfg.models.sam2, cfg.models.detector]
        self.weights_source = ", ".join(s for s in sources if s)

    def on_predict_start(self) -> None:
        models, dtype = self.cfg.models, getattr(torch, self.cfg.models.dtype)
        encoder = ClipEncoder.from_pretrained(models.encoder, device=str(self.device), dtype=models.dtype)
        kinds = _kinds(self.cfg)
        masks = MaskProposer.from_pretrained(models.sam2, self.cfg.extraction.masks, self.device, dtype) \
            if TokenKind.object in kinds and models.sam2 else None
        detector = Detector.from_pretrained(models.detector, self.cfg.extraction.detection, self.device, dtype) \
            if TokenKind.action in kinds and models.detector else None
        self.extractor = Extractor(self.cfg.extraction, encoder, masks, detector)

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> list[VideoOutput]:
        assert self.extractor is not None
        out = []
        for sample in batch:
            if sample["__pad__"]:
                continue  # a padding copy of a video another slot extracts
            frames, times = distinct_frames(sample["frames"], torch.as_tensor(sample["timestamps"]))
            tokens = self.extractor.extract(frames, times, float(sample["duration_s"]))
            out.append(token_sample(sample["__key__"], tokens, sample, self.cfg.output.dtype))
        return out


def distinct_frames(frames: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames without the repeats uniform sampling makes when a video has fewer frames than asked for (a
    repeated frame would look like a still object to the tracker)."""
    keep = torch.ones(len(times), dtype=torch.bool)
    keep[1:] = times[1:] != times[:-1]
    return frames[keep], times[keep].double()


def token_sample(key: str, tokens: VideoTokens, sample: dict[str, Any], dtype: str) -> VideoOutput:
    """One video's token sample: embeddings ``.npy`` and its tokens' records with the video's annotation ``.json``."""
    annotation = {k: v for k, v in sample["annotation"].items() if k != "tokens"}
    payload = {**annotation, "tokens": [t.record() for t in tokens.tokens], "duration_s": float(sample["duration_s"]),
               "counts": tokens.counts()}
    return VideoOutput(key, [(key, {"npy": tokens.embeddings.numpy().astype(dtype), "json": payload})])


@dataclass
class VideoOutput:
    """What a prediction stage writes for one video: its samples (key, {ext: value}), kept in one part."""

    video: str
    samples: list[tuple[str, dict[str, Any]]]


class PartWriter(BasePredictionWriter):
    """Buffers each rank's :class:`VideoOutput` and writes a part every ``part_videos`` videos (and at the end);
    records unreadable videos; writes the folder's identity and, at the end, its manifest."""

    def __init__(self, folder: Path, part_videos: int, identity: dict[str, Any], kind: str) -> None:
        super().__init__(write_interval="batch")
        self.folder, self.part_videos, self.identity, self.kind = folder, part_videos, identity, kind
        self._buffer: list[VideoOutput] = []
        self._number = 0
        self._written = 0
        self._reported = 0
        self._failed_path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank has planned its videos from the parts on disk (the loader was set up before this hook); nobody
        # writes until all have, or a fast rank's part would change a slow rank's plan.
        trainer.strategy.barrier("lvu-parts-planned")
        self.folder.mkdir(parents=True, exist_ok=True)
        if trainer.is_global_zero:
            (self.folder / IDENTITY_FILE).write_text(json.dumps(self.identity, indent=1, sort_keys=True) + "\n")
        # Part numbers: one past those on disk, then every rank its own stride (no two ranks share a number).
        self._number = next_part_number(self.folder) + trainer.global_rank
        self._failed_path = self.folder / f"failed-rank{trainer.global_rank}.jsonl"

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self._buffer += prediction or []
        if len(self._buffer) >= self.part_videos:
            self._flush(trainer)
        self._record_failures(trainer)

    def _flush(self, trainer: L.Trainer) -> None:
        if not self._buffer:
            return
        samples = [sample for output in self._buffer for sample in output.samples]
        write_part(part_path(self.folder, trainer.global_rank, self._number), samples)
        self._written += len(self._buffer)
        self._number += trainer.world_size
        self._buffer = []

    def _record_failures(self, trainer: L.Trainer) -> None:
        """Videos the loader could not read: listed at once, so that a resumed run does not try them again."""
        bad = getattr(trainer.predict_dataloaders, "bad_samples", [])
        if len(bad) > self._reported:
            assert self._failed_path is not None
            with self._failed_path.open("a", encoding="utf-8") as handle:
                for skip in bad[self._reported:]:
                    handle.write(json.dumps({"key": skip.key, "reason": f"{skip.reason}: {skip.message}"}) + "\n")
            self._reported = len(bad)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        trainer.strategy.barrier("lvu-parts-written")
        if trainer.is_global_zero:
            write_manifest(self.folder, self.kind, {"identity": self.identity})
            rank_zero_info(f"{len(parts(self.folder))} part(s) in {self.folder} ({self._written} video(s) written "
                           f"by rank 0 in this run)")


def _token_writer(cfg: SealExtractRecipe) -> PartWriter:
    return PartWriter(Path(cfg.output.folder), cfg.output.part_videos, extraction_identity(cfg), "features")


def _collate(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return samples


def seal_extract_data(cfg: SealExtractRecipe) -> ShardDataModule:
    """Video shards, each video decoded to ``data.frames`` uniform frames, over the videos not yet in the output
    folder (its complete parts and failure lists)."""
    folder = claim_folder(Path(cfg.output.folder), extraction_identity(cfg), "tokens")
    done = done_keys(folder) if folder.is_dir() else set()
    if done:
        rank_zero_info(f"{folder}: {len(done)} video(s) already extracted or recorded as unreadable; skipped")
    sampler = SamplerConfig(num_frames=cfg.data.frames, allow_repeats=True)
    decoder = VideoDecoder(sampler, size=(cfg.data.frame_size, cfg.data.frame_size), allow_images=False)
    return ShardDataModule(cfg.data, cfg.seed, decode=lambda split: decoder, collate=lambda split: _collate,
                           select=lambda split: (lambda annotation: annotation["__key__"] not in done)
                           if split == "predict" else None, empty_ok=("predict",))


register_task(TaskSpec(
    "seal.extract", SealExtractRecipe, SealExtractTask, seal_extract_data,
    "SEAL token extraction: video shards -> scene, object and action token shards (resumable)",
    predict_writer=_token_writer))


# --------------------------------------------------------------------------------------------------------------------
# seal.select: token shards + video shards -> per question, the selected tokens as a short video


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


def query_encoder_path(cfg: SealSelectRecipe) -> str:
    """``encoder``, or the tokens' own; refused when it differs from the tokens'."""
    extracted = str(recorded_identity(Path(cfg.tokens))["models"]["encoder"])
    if cfg.encoder and Path(cfg.encoder).resolve() != Path(extracted).resolve():
        raise ConfigError(f"encoder {cfg.encoder} is not the one the tokens in {cfg.tokens} were extracted with "
                          f"({extracted}): relevance needs queries and tokens in one space")
    return cfg.encoder or extracted


def selection_identity(cfg: SealSelectRecipe) -> dict[str, Any]:
    return {"tokens": str(Path(cfg.tokens).resolve()), "selection": _plain(cfg.selection), "mode": cfg.mode.value,
            "query": cfg.query.value, "frame_size": cfg.output.frame_size, "crf": cfg.output.crf}


def query_text(item: BenchmarkItem, how: QueryText) -> str:
    if how is QueryText.question_options and item.options:
        return " ".join([item.text, *item.options])
    return item.text


def chosen_tokens(embeddings: torch.Tensor, times: torch.Tensor, query: torch.Tensor, cfg: SelectionConfig,
                  mode: SelectionMode) -> torch.Tensor:
    """Indices (into the video's tokens) of the selected ones, in temporal order (ties: token order)."""
    order = torch.from_numpy(np.lexsort((np.arange(len(times)), times.numpy())))  # by time, then position
    if mode is SelectionMode.streaming:
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
        self.encoder_path = query_encoder_path(cfg)
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
        assert self.index is not None and self.encoder is not None
        key, annotation = sample["__key__"], sample["annotation"]
        items = benchmark_items(key, annotation, grounding=False)
        if key not in self.index:
            log.warning("%s: no tokens in %s (extract it first); skipped", key, self.cfg.tokens)
            return VideoOutput(key, [])
        if not items:
            return VideoOutput(key, [])
        stored, token_json = self.index.read(key)
        embeddings = torch.from_numpy(stored.astype(np.float32))
        records = token_json["tokens"]
        times = torch.tensor([r["frame_s"] for r in records], dtype=torch.float64)
        # One query at a time: padding a batch changes the embeddings in their last bits, and a near-tie in the greedy
        # would then make a question's tokens depend on the other questions of its video.
        queries = [embed_text(self.encoder, self.tokenizer, [query_text(i, self.cfg.query)])[0] for i in items]
        picks = [chosen_tokens(embeddings, times, q, self.cfg.selection, self.cfg.mode) for q in queries]
        video = open_video(sample["raw"])
        crops = TokenCrops(video, records, self.cfg.output.frame_size)
        questions = annotation.get("mc") or []
        rest = {k: v for k, v in annotation.items() if k not in ("mc", "tokens", "segments")}
        samples = []
        for number, (item, picked) in enumerate(zip(items, picks, strict=True)):
            frames = [(crops.crop(int(i)), records[int(i)]["frame_s"]) for i in picked]
            question = {**questions[number], "uid": item.id.split("/", 1)[1]}
            seal = {"video": key, "query": query_text(item, self.cfg.query),
                    "tokens": [{**records[int(i)], "index": int(i)} for i in picked]}
            samples.append((question_key(key, number),
                            {"mp4": encode_timed_mp4(frames, crf=self.cfg.output.crf),
                             "json": {**rest, "mc": [question], "seal": seal,
                                      "source_duration_s": float(token_json["duration_s"])}}))
        return VideoOutput(key, samples)


class TokenCrops:
    """The pixels of a video's tokens: each token's frame decoded once (original size), its box cropped and resized
    to ``size`` squared (a scene token: the whole frame)."""

    def __init__(self, video: Any, records: list[dict[str, Any]], size: int) -> None:
        self.video, self.records, self.size = video, records, size
        self._frames: dict[int, torch.Tensor] = {}

    def _frame(self, seconds: float) -> torch.Tensor:
        index = int(np.abs(self.video.info.frame_times - seconds).argmin())
        if index not in self._frames:
            self._frames[index] = torch.from_numpy(self.video.read([index])[0])
        return self._frames[index]

    def crop(self, token: int) -> np.ndarray:
        record = self.records[token]
        frame = self._frame(float(record["frame_s"]))
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = record["box"]
        box = torch.tensor([[x0 * width, y0 * height, x1 * width, y1 * height]])
        return crop_resized(frame, box, self.size)[0].numpy()


def _raw_video(raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The selection decodes only the frames it picks, in the main process: the loader passes the bytes on."""
    return {"raw": {k: v for k, v in raw.items() if k != "json"}, "annotation": parse_json(raw)}


def _selected_writer(cfg: SealSelectRecipe) -> PartWriter:
    return PartWriter(Path(cfg.output.folder), cfg.output.part_videos, selection_identity(cfg), "video")


def seal_select_data(cfg: SealSelectRecipe) -> ShardDataModule:
    """The video shards, over the videos not yet in the output folder."""
    folder = claim_folder(Path(cfg.output.folder), selection_identity(cfg), "selected tokens")
    done = done_keys(folder) if folder.is_dir() else set()
    if done:
        rank_zero_info(f"{folder}: {len(done)} video(s) already done; skipped")
    return ShardDataModule(cfg.data, cfg.seed, decode=lambda split: _raw_video, collate=lambda split: _collate,
                           select=lambda split: (lambda annotation: annotation["__key__"] not in done)
                           if split == "predict" else None, empty_ok=("predict",))


register_task(TaskSpec(
    "seal.select", SealSelectRecipe, SealSelectTask, seal_select_data,
    "SEAL query-aware selection: token shards -> per question, the selected tokens' crops as a short video "
    "(answered by any host with lvu eval)",
    predict_writer=_selected_writer))
