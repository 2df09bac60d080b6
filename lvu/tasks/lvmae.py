"""LV-MAE training stages: masked-embedding pre-training, and linear / attentive probing of the frozen encoder.

``lvmae.pretrain`` (paper Table 5) trains :class:`~lvu.models.lvmae.LVMAE` on clip-embedding shards made by
``lvu data embed``. ``lvmae.probe`` freezes a pre-trained encoder (or uses the raw embeddings as a baseline) and
trains one probe per label task: a linear layer on the global average of the encoder outputs (Table 6) or one
transformer block + LayerNorm + linear on [CLS] (Table 7), with cross-entropy for classes and MSE for regression
targets. The best validation epoch is kept (``val/score``: accuracy, or minus the MSE) and the test split is
evaluated with it. ``probe.task: all`` probes every task of the label map, one run per task, and prints a table
shaped like the paper's Table 8.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING, OmegaConf

from lvu.ckpt import consolidated_state_dict, read_entries, record_of
from lvu.data.datamodule import ShardDataConfig, ShardDataModule, split_sources
from lvu.data.decoders import FeatureDecoder
from lvu.data.embed import feature_dim
from lvu.errors import ConfigError, LvuError
from lvu.metrics import LVUAccuracy, LVUMeanSquaredError, lvu_metric
from lvu.metrics.report import Results
from lvu.models.lvmae import (
    LVMAE,
    AttentiveProbe,
    LinearProbe,
    LVMAEConfig,
    RawEmbeddings,
    attention_heads_for,
)
from lvu.schema import RecipeConfig
from lvu.tasks.optim import configure_optimizers
from lvu.tasks.registry import TaskSpec, register_task, same_task

# ----------------------------------------------------------------------------------------------------------------
# Data


class Overflow(str, Enum):
    """What happens to videos with more clips than the model's ``max_tokens``."""

    # Keep the first max_tokens clips.
    truncate = "truncate"
    # Training: a random window of max_tokens consecutive clips (a different one each epoch); evaluation: the middle
    # window.
    window = "window"


@dataclass
class RandomCropConfig:
    """Training-time crops of each video to a random window of random length, as the official pre-training does
    (10 seconds up to the token cap, at a random start): the model sees short and long contexts, and every part of
    a long video, instead of always its first ``max_tokens`` clips."""

    enabled: bool = False
    """Crop training sequences (on in lvmae.pretrain; evaluation always sees whole sequences)."""
    min_clips: int = 2
    """Shortest window, in clips (2 clips = 10 s of the paper's 5-second clips); the longest is max_tokens."""


@dataclass
class LVMAEDataConfig(ShardDataConfig):
    """Clip-embedding shards (``lvu data embed``) and how long sequences are cut to the model's token cap."""

    overflow: Overflow = Overflow.truncate
    """Videos with more clips than model.max_tokens: truncate (first clips) or window (a random window in
    training, the middle one in evaluation)."""
    normalize: bool = True
    """L2-normalise every clip embedding before the model, as the official pipeline does for pre-training and
    probing (and so for the raw-embedding baselines too); a probe must match its pre-training's setting."""
    crop: RandomCropConfig = field(default_factory=RandomCropConfig)
    """Random-length training crops (see RandomCropConfig)."""
    label_maps: str | None = None
    """label_maps.json for probing; null = the one next to the first training shard folder."""
    feature_cache_mb: int = 0
    """Keep up to this many MB of decoded (and normalised) clip features in memory, per split, so each sample is
    parsed once instead of every epoch: for small feature sets loaded with data.num_workers=0 (loader workers start
    afresh every pass and would gain nothing). 0: off."""


class SequenceDecoder:
    """Feature sample -> ``[L, D]`` sequence no longer than ``max_tokens``: L2-normalised when asked, cropped at
    random in training when asked (:class:`RandomCropConfig`), else cut by the :class:`Overflow` rule. Random draws
    come from the loader's per-sample generator, so a resumed run crops exactly as an uninterrupted one."""

    def __init__(self, dim: int, max_tokens: int, data: LVMAEDataConfig, train: bool) -> None:
        if data.crop.enabled and not 1 <= data.crop.min_clips <= max_tokens:
            raise ConfigError(f"data.crop.min_clips must be between 1 and the token cap {max_tokens}, got "
                              f"{data.crop.min_clips}")
        self.features = FeatureDecoder(dim)
        self.max_tokens, self.overflow, self.train = max_tokens, data.overflow, train
        self.normalize, self.crop = data.normalize, data.crop
        self.cache_bytes, self._cached_bytes = data.feature_cache_mb * 2**20, 0
        self._cache: dict[tuple[str, int, str], dict[str, Any]] = {}

    def _decoded(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Features (normalised when asked) and annotation; from the cache when this sample was decoded before.
        Decoding draws nothing from ``rng``, so a cached sample is exactly what decoding again would give."""
        key = (raw.get("__path__", raw.get("__shard__", "")), raw.get("__index__", -1), raw.get("__key__", ""))
        sample = self._cache.get(key)
        if sample is None:
            sample = self.features(raw, rng)
            if self.normalize:
                sample["features"] = F.normalize(sample["features"].float(), dim=-1)
            size = sample["features"].numel() * sample["features"].element_size()
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[key], self._cached_bytes = sample, self._cached_bytes + size
        return dict(sample)  # callers replace entries (crops), never change the tensors in place

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        sample = self._decoded(raw, rng)
        seq = sample["features"]
        if self.train and self.crop.enabled:
            longest = min(len(seq), self.max_tokens)
            length = int(rng.integers(min(self.crop.min_clips, longest), longest + 1))
            start = int(rng.integers(0, len(seq) - length + 1))
            sample["features"] = seq[start:start + length]
            return sample
        extra = len(seq) - self.max_tokens
        if extra > 0:
            if self.overflow == Overflow.truncate:
                start = 0
            elif self.train:
                start = int(rng.integers(0, extra + 1))
            else:
                start = extra // 2
            sample["features"] = seq[start:start + self.max_tokens]
        return sample


def pad_sequences(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Right-pad ``[L_i, D]`` sequences into ``x [B, L, D]`` with ``valid [B, L]``."""
    lengths = torch.tensor([len(s["features"]) for s in samples])
    x = torch.zeros(len(samples), int(lengths.max()), samples[0]["features"].shape[1])
    for i, s in enumerate(samples):
        x[i, : len(s["features"])] = s["features"]
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return {"x": x, "valid": valid, "keys": [s["__key__"] for s in samples],
            "pad": torch.tensor([s["__pad__"] for s in samples], dtype=torch.bool)}


def build_lvmae(cfg: LVMAEConfig) -> LVMAE:
    """The model, with shape mistakes in the recipe reported as configuration errors."""
    try:
        return LVMAE(cfg)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


# ----------------------------------------------------------------------------------------------------------------
# Pre-training


@dataclass
class LVMAEPretrainRecipe(RecipeConfig):
    data: LVMAEDataConfig = field(default_factory=lambda: LVMAEDataConfig(crop=RandomCropConfig(enabled=True)))
    """Clip-embedding shards (``lvu data embed``)."""
    model: LVMAEConfig = field(default_factory=LVMAEConfig)
    """The LV-MAE architecture and masking."""


class LVMAEPretrain(L.LightningModule):
    """Masked-embedding pre-training. Masks are drawn from a generator seeded by (seed, step, batch, rank), so a
    resumed run draws the same masks as an uninterrupted one without saving RNG state."""

    def __init__(self, cfg: LVMAEPretrainRecipe) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = build_lvmae(cfg.model)

    def _generator(self, stage: int, batch_idx: int) -> torch.Generator:
        # (step, batch index) is unique per micro-batch, also with gradient accumulation; validation uses only the
        # batch index, so its masks are the same at every validation.
        step = self.global_step if stage == 0 else 0
        return torch.Generator().manual_seed(_seed_for(self.cfg.seed, stage, step, batch_idx, self.global_rank))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.model(batch["x"], batch["valid"], generator=self._generator(0, batch_idx))
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch["keys"]))
        return out.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # The same masks every validation, so val/loss is comparable across epochs.
        out = self.model(batch["x"], batch["valid"], generator=self._generator(1, batch_idx))
        # Weighted like the training loss (by masked tokens), over real samples only (not evaluation padding).
        tokens = (out.mask & batch["valid"]).sum(1) * ~batch["pad"].to(out.mask.device)
        loss = (out.per_sample * tokens).sum() / tokens.sum().clamp(min=1)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=max(1, int(tokens.sum())))

    def configure_optimizers(self):
        return configure_optimizers(self, self.cfg.optim)


def _pretrain_data(cfg: LVMAEPretrainRecipe) -> ShardDataModule:
    m = cfg.model
    return ShardDataModule(
        cfg.data, cfg.seed,
        decode=lambda split: SequenceDecoder(m.input_dim, m.max_tokens, cfg.data, split == "train"),
        collate=lambda split: pad_sequences,
    )


register_task(TaskSpec("lvmae.pretrain", LVMAEPretrainRecipe, LVMAEPretrain, _pretrain_data,
                       "LV-MAE masked-embedding pre-training on clip-embedding shards",
                       metrics=lambda cfg: frozenset({"train/loss", "val/loss"})))


# ----------------------------------------------------------------------------------------------------------------
# Probing


class ProbeKind(str, Enum):
    linear = "linear"
    attentive = "attentive"


class Backbone(str, Enum):
    # A pre-trained LV-MAE encoder, frozen.
    lvmae = "lvmae"
    # The clip embeddings themselves (the paper's "raw embeddings" baseline).
    raw = "raw"


@dataclass
class ProbeConfig:
    kind: ProbeKind = ProbeKind.attentive
    """attentive (one transformer block + LayerNorm + linear on [CLS], Table 7) or linear (global average +
    linear, Table 6)."""
    task: Any = MISSING
    """A label task of the label map (e.g. "director"), a list of them, or "all" (one probe run each)."""
    backbone: Backbone = Backbone.lvmae
    """lvmae (a frozen pre-trained encoder) or raw (the clip embeddings themselves: the baseline)."""
    pretrained: str | None = None
    """LV-MAE pre-training checkpoint (file, DeepSpeed folder or converted file); its config gives the encoder's
    shape."""
    num_heads: int = 8
    """Attention heads of the attentive probe's block (lowered to a divisor of the width when needed); the paper is
    silent, the reference's attentive probe uses 8."""
    max_tokens: int = 256
    """Token cap for the raw backbone (LV-MAE backbones use their own max_tokens)."""


@dataclass
class LVMAEProbeRecipe(RecipeConfig):
    data: LVMAEDataConfig = field(default_factory=LVMAEDataConfig)
    """Clip-embedding shards with labels."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """Which probe, on which backbone, for which label task."""
    papers: dict[str, dict[str, float]] = field(default_factory=dict)
    """Published LVU results printed beside ours in results.md: {"LV-MAE (Tab. 8)": {"accuracy/genre": 71.57,
    "mean": 63.4, "mse/like_ratio": 0.23}} (accuracies in percent)."""


@dataclass(frozen=True)
class LabelTask:
    name: str
    classes: list[str] | None  # None = regression

    @property
    def outputs(self) -> int:
        return len(self.classes) if self.classes is not None else 1


def load_label_maps(cfg: LVMAEProbeRecipe) -> dict[str, LabelTask]:
    if cfg.data.label_maps:
        path = Path(cfg.data.label_maps)
    else:
        sources = split_sources(cfg.data, "train") or []
        path = Path(sources[0]) / "label_maps.json" if sources else Path("label_maps.json")
    if not path.is_file():
        raise ConfigError(f"label map {path} not found; set data.label_maps (written by `lvu data synth`, "
                          f"`lvu data pack --format lvu` and copied by `lvu data embed`)")
    raw = json.loads(path.read_text())
    return {name: LabelTask(name, spec.get("classes") if spec.get("type") == "classification" else None)
            for name, spec in raw.items()}


def probe_tasks(cfg: LVMAEProbeRecipe) -> list[str]:
    maps = load_label_maps(cfg)
    requested = cfg.probe.task
    if requested == "all":
        return list(maps)
    names = [requested] if isinstance(requested, str) else list(requested)
    unknown = [n for n in names if n not in maps]
    if unknown:
        raise ConfigError(f"probe.task: {', '.join(unknown)} not in the label map (tasks: {', '.join(maps)})")
    return names


def _pretrained_path(cfg: LVMAEProbeRecipe) -> Path:
    if not cfg.probe.pretrained:
        raise ConfigError("probe.pretrained: set the LV-MAE pre-training checkpoint (or probe.backbone=raw)")
    path = Path(cfg.probe.pretrained)
    if not path.exists():
        raise LvuError(f"probe.pretrained: checkpoint {path} not found")
    return path


@dataclass(frozen=True)
class PretrainedEncoder:
    """An ``lvmae.pretrain`` checkpoint's model settings and (when read) its LV-MAE weights."""

    config: LVMAEConfig
    state: dict[str, torch.Tensor]
    normalized_inputs: bool  # data.normalize of the pre-training (false for checkpoints older than that key)


def _model_config(path: Path, record: dict[str, Any]) -> LVMAEConfig:
    if not same_task(record.get("task") or "", "lvmae.pretrain"):
        raise LvuError(f"probe.pretrained: {path} was written by task '{record.get('task')}', not lvmae.pretrain")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LVMAEConfig), record["config"]["model"]))


@functools.lru_cache(maxsize=4)
def _cached_config(path: str, mtime_ns: int) -> LVMAEConfig:
    return _model_config(Path(path), record_of(read_entries(Path(path))))


def pretrained_config(path: Path) -> LVMAEConfig:
    """The encoder shape recorded in an ``lvmae.pretrain`` checkpoint (read once per file version, tensors not
    read)."""
    return _cached_config(str(path), path.stat().st_mtime_ns)


def load_pretrained(path: Path) -> PretrainedEncoder:
    """The model settings and weights of an ``lvmae.pretrain`` checkpoint: a Lightning file, a DeepSpeed folder
    (partitions gathered) or an ``lvu ckpt convert`` file."""
    loaded = consolidated_state_dict(path)
    state = {k.removeprefix("model."): v.clone() for k, v in loaded.state.items() if k.startswith("model.")}
    normalized = bool(((loaded.record.get("config") or {}).get("data") or {}).get("normalize", False))
    return PretrainedEncoder(_model_config(path, loaded.record), state, normalized)


class LVMAEProbe(L.LightningModule):
    """A probe on a frozen backbone for one label task.

    The frozen backbone is rebuilt from ``probe.pretrained`` whenever the probe is built, so checkpoints hold only
    the probe (a few MB instead of the whole encoder).
    """

    def __init__(self, cfg: LVMAEProbeRecipe) -> None:
        super().__init__()
        self.cfg = cfg
        names = probe_tasks(cfg)
        if len(names) != 1:
            raise ConfigError("probe.task: one run probes one task; give a single name, a list or 'all' on the "
                              "command line so that `lvu fit` runs one probe per task")
        self.label = load_label_maps(cfg)[names[0]]
        if cfg.probe.backbone == Backbone.lvmae:
            pretrained = load_pretrained(_pretrained_path(cfg))
            if pretrained.normalized_inputs != cfg.data.normalize:
                raise ConfigError(f"data.normalize={str(cfg.data.normalize).lower()}, but the encoder was pre-trained "
                                  f"with data.normalize={str(pretrained.normalized_inputs).lower()}: probe it on "
                                  "embeddings prepared the same way")
            model_cfg = pretrained.config
            backbone = LVMAE(model_cfg)
            backbone.load_state_dict(pretrained.state)
            self.input_dim, self.max_tokens, width = model_cfg.input_dim, model_cfg.max_tokens, model_cfg.embed_dim
            backbone.requires_grad_(False).eval()
        else:
            self.input_dim = feature_dim(split_sources(cfg.data, "train") or split_sources(cfg.data, "test") or [])
            self.max_tokens, width = cfg.probe.max_tokens, self.input_dim
            # Mean-pooled (linear) baseline: the plain average of the clip embeddings. Attentive: a learned [CLS] and
            # sin-cos positions, so the probe's block can use order, as it can on LV-MAE's outputs.
            backbone = RawEmbeddings(self.input_dim, cfg.probe.max_tokens,
                                     with_positions=cfg.probe.kind == ProbeKind.attentive)
        self.backbone = backbone
        if cfg.probe.kind == ProbeKind.linear:
            self.head = LinearProbe(width, self.label.outputs)
        else:
            self.head = AttentiveProbe(width, self.label.outputs, attention_heads_for(width, cfg.probe.num_heads))
        metric = lvu_metric(self.label.outputs if self.label.classes is not None else None)
        self.val_metric, self.test_metric = metric.clone(), metric.clone()

    @property
    def _frozen(self) -> bool:
        return self.cfg.probe.backbone == Backbone.lvmae

    def train(self, mode: bool = True):
        super().train(mode)
        if self._frozen:
            self.backbone.eval()
        return self

    def saved_in_checkpoint(self, name: str) -> bool:
        """Whether checkpoints hold tensor ``name``: not the frozen pre-trained encoder, which the probe restores
        from probe.pretrained itself (the compatibility check before resuming does not ask for it)."""
        return not (self._frozen and name.startswith("backbone."))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._frozen:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                        if not k.startswith("backbone.")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._frozen and "state_dict" in checkpoint:  # DeepSpeed restores the module itself
            checkpoint["state_dict"].update({f"backbone.{k}": v for k, v in self.backbone.state_dict().items()})

    def targets(self, batch: dict[str, Any]) -> torch.Tensor:
        values = []
        for key, labels in zip(batch["keys"], batch["labels"], strict=True):
            value = labels[self.label.name]
            if self.label.classes is None:
                values.append(float(value))
            elif value in self.label.classes:
                values.append(self.label.classes.index(value))
            else:
                raise LvuError(f"sample {key}: label '{value}' of task {self.label.name} is not in the label map "
                               f"(classes: {', '.join(self.label.classes)})")
        dtype = torch.float32 if self.label.classes is None else torch.long
        return torch.tensor(values, dtype=dtype, device=self.device)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self._frozen:
            with torch.no_grad():
                tokens, key_valid = self.backbone(x, valid, features_only=True)
        else:
            tokens, key_valid = self.backbone(x, valid, features_only=True)
        out = self.head(tokens, key_valid)
        return out if self.label.classes is not None else out.squeeze(-1)

    def _loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target) if self.label.classes is not None else F.mse_loss(out, target)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["x"], batch["valid"]), self.targets(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["keys"]))
        return loss

    def _evaluate(self, batch: dict[str, Any], metric: LVUAccuracy | LVUMeanSquaredError, split: str) -> None:
        keep = ~batch["pad"].to(self.device)
        out, target = self(batch["x"], batch["valid"])[keep], self.targets(batch)[keep]
        if keep.any():
            metric.update(out, target)
        # Log on every rank, also after a batch of padding only: the metric's epoch-end sync is a collective, and a
        # rank that had not logged it would hang the others.
        self.log(f"{split}/{metric.name}", metric, prog_bar=True, batch_size=max(1, int(keep.sum())))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metric, "val")

    def on_validation_epoch_end(self) -> None:
        # One higher-is-better number for model selection, whatever the task kind.
        self.log("val/score", self.val_metric.score(), sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metric, "test")

    def configure_optimizers(self):
        return configure_optimizers(self, self.cfg.optim)


def _probe_select(cfg: LVMAEProbeRecipe, task: str):
    split_name = {"train": "train", "val": "val", "test": "test", "predict": "test"}

    def select(split: str):
        def keep(annotation: dict[str, Any]) -> bool:
            labels, splits = annotation.get("labels") or {}, annotation.get("splits") or {}
            return task in labels and (task not in splits or splits[task] == split_name[split])

        return keep

    return select


def _with_labels(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Padded features plus each sample's labels. Only the labels: Lightning walks every object of a batch on its way
    to the device, and whole annotations (events, parts, captions) made that a fifth of a probe's step time."""
    batch = pad_sequences(samples)
    batch["labels"] = [s["annotation"].get("labels") or {} for s in samples]
    return batch


def _probe_data(cfg: LVMAEProbeRecipe) -> ShardDataModule:
    (task,) = probe_tasks(cfg)
    if cfg.probe.backbone == Backbone.lvmae:
        model_cfg = pretrained_config(_pretrained_path(cfg))
        dim, cap = model_cfg.input_dim, model_cfg.max_tokens
    else:
        dim = feature_dim(split_sources(cfg.data, "train") or split_sources(cfg.data, "test") or [])
        cap = cfg.probe.max_tokens
    return ShardDataModule(
        cfg.data, cfg.seed,
        decode=lambda split: SequenceDecoder(dim, cap, cfg.data, split == "train"),
        collate=lambda split: _with_labels,
        select=_probe_select(cfg, task),
    )


def _expand_probe(cfg: LVMAEProbeRecipe) -> list[tuple[str, list[str]]] | None:
    if isinstance(cfg.probe.task, str) and cfg.probe.task != "all":
        return None
    return [(name, [f"probe.task={name}"]) for name in probe_tasks(cfg)]


# LVU (paper Table 8) column order and headings; other label tasks follow in label-map order.
LVU_COLUMNS = {"director": "Dir.", "genre": "Genre", "writer": "Writer", "year": "Year", "scene": "Scene",
               "way_speaking": "Speak", "speaking_style": "Speak", "relationship": "Rel."}  # speaking_style: old packs
LVU_REGRESSION = {"like_ratio": "Like (MSE)", "view_count": "View (MSE)"}


def summarize_probes(cfg: LVMAEProbeRecipe, results: dict[str, dict[str, float]]) -> str:
    """A Table-8-shaped row: top-1 accuracy (%) per classification task and their average, then MSEs."""
    classification = {n: m["test/acc"] * 100 for n, m in results.items() if "test/acc" in m}
    regression = {n: m["test/mse"] for n, m in results.items() if "test/mse" in m}
    order = [n for n in LVU_COLUMNS if n in classification] + [n for n in classification if n not in LVU_COLUMNS]
    reg_order = [n for n in LVU_REGRESSION if n in regression] + [n for n in regression if n not in LVU_REGRESSION]
    method = f"{'LV-MAE' if cfg.probe.backbone == Backbone.lvmae else 'raw embeddings'} ({cfg.probe.kind.value})"
    heads = ["Method", *[LVU_COLUMNS.get(n, n) for n in order]]
    cells = [method, *[f"{classification[n]:.2f}" for n in order]]
    if classification:
        heads.append("Avg.")
        cells.append(f"{sum(classification.values()) / len(classification):.2f}")
    heads += [LVU_REGRESSION.get(n, f"{n} (MSE)") for n in reg_order]
    cells += [f"{regression[n]:.3f}" for n in reg_order]
    widths = [max(len(h), len(c)) for h, c in zip(heads, cells, strict=True)]
    line = lambda row: "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(heads), "|" + "|".join("-" * (w + 2) for w in widths) + "|", line(cells)])


def probe_results(cfg: LVMAEProbeRecipe, results: dict[str, dict[str, float]]) -> Results:
    """The probes' test scores in the evaluation format (lvu.metrics.report): ``accuracy/<task>`` and their mean,
    ``mse/<task>`` for the regression tasks; sub-runs without test metrics (fit without test_after_fit) are left
    out."""
    metrics = {f"accuracy/{n}": m["test/acc"] for n, m in results.items() if "test/acc" in m}
    if metrics:
        metrics["mean"] = sum(metrics.values()) / len(metrics)
    metrics |= {f"mse/{n}": m["test/mse"] for n, m in results.items() if "test/mse" in m}
    method = f"{'LV-MAE' if cfg.probe.backbone == Backbone.lvmae else 'raw embeddings'} ({cfg.probe.kind.value})"
    return Results(title=f"LVU: {method}", metrics=metrics, headline="mean",
                   papers={k: dict(v) for k, v in cfg.papers.items()},
                   details={"benchmark": "lvu", "probe": cfg.probe.kind.value, "backbone": cfg.probe.backbone.value})


def _probe_metrics(cfg: Any) -> frozenset[str]:
    """The label task's kind is only known from the label maps (data), so both metric names are allowed here;
    ``val/score`` is the one that works for either."""
    return frozenset({"train/loss", "val/score", f"val/{LVUAccuracy.name}", f"val/{LVUMeanSquaredError.name}"})


register_task(TaskSpec("lvmae.probe", LVMAEProbeRecipe, LVMAEProbe, _probe_data,
                       "linear or attentive probing of a frozen LV-MAE encoder (or raw embeddings)",
                       expand=_expand_probe, summarize=summarize_probes, metrics=_probe_metrics,
                       results=probe_results))

__all__ = ["LVMAEPretrain", "LVMAEPretrainRecipe", "LVMAEProbe", "LVMAEProbeRecipe", "summarize_probes"]
