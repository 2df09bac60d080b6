"""A tiny regression task, registered as ``test.tiny``, for testing the recipe system and trainer assembly."""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from omegaconf import MISSING
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lvu.schema import RecipeConfig
from lvu.tasks import TaskSpec, register_task
from lvu.tasks.optim import configure_optimizers


@dataclass
class TinyData:
    # Required (no default), like the shard paths of real tasks.
    name: str = MISSING
    samples: int = 64
    dim: int = 8
    batch_size: int = 8
    num_workers: int = 0
    # Noise drawn from numpy inside the loader (workers included): reproducible only if workers are seeded.
    noise: float = 0.0
    shuffle: bool = True


@dataclass
class TinyModel:
    hidden: int = 16
    # Dropout draws from torch's global RNG: resuming exactly needs the RNG states in the checkpoint.
    dropout: float = 0.0
    # Give every rank its own global RNG stream when training starts (as data augmentation per rank would).
    rank_seeds: bool = False


@dataclass
class TinyRecipe(RecipeConfig):
    data: TinyData = field(default_factory=TinyData)
    model: TinyModel = field(default_factory=TinyModel)


class TinyModule(L.LightningModule):
    def __init__(self, cfg: TinyRecipe) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(cfg.data.dim, cfg.model.hidden), nn.Tanh(),
                                 nn.Dropout(cfg.model.dropout), nn.Linear(cfg.model.hidden, 1))

    def on_fit_start(self) -> None:
        if self.cfg.model.rank_seeds:
            torch.manual_seed(1000 + self.global_rank)

    def _loss(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self._loss(batch))

    def predict_step(self, batch, batch_idx):
        x, y = batch
        pred = self.net(x).squeeze(-1)
        return [{"batch": batch_idx, "target": float(t), "prediction": float(p)} for t, p in zip(y, pred, strict=True)]

    def configure_optimizers(self):
        return configure_optimizers(self, self.cfg.optim)


class _NoisyTargets(Dataset):
    def __init__(self, base: TensorDataset, noise: float) -> None:
        self.base, self.noise = base, noise

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        x, y = self.base[index]
        if self.noise:
            y = y + float(np.random.normal(scale=self.noise))
        return x, y


class TinyDataModule(L.LightningDataModule):
    def __init__(self, cfg: TinyRecipe) -> None:
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(cfg.data.samples, cfg.data.dim, generator=g)
        w = torch.randn(cfg.data.dim, generator=g)
        self.dataset = _NoisyTargets(TensorDataset(x, x @ w), cfg.data.noise)

    def _loader(self, shuffle: bool) -> DataLoader:
        # A seeded generator keeps loading from drawing on the global RNG (which dropout uses).
        return DataLoader(self.dataset, batch_size=self.cfg.data.batch_size, shuffle=shuffle,
                          num_workers=self.cfg.data.num_workers, generator=torch.Generator().manual_seed(7))

    def train_dataloader(self):
        return self._loader(self.cfg.data.shuffle)

    def val_dataloader(self):
        return self._loader(False)

    def test_dataloader(self):
        return self._loader(False)

    def predict_dataloader(self):
        return self._loader(False)


SPEC = register_task(TaskSpec("test.tiny", TinyRecipe, TinyModule, TinyDataModule, "test-only regression task"))
