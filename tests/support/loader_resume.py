"""Train a trivial model on synthetic video shards with Lightning and record the sample keys each rank sees.

Usage: python loader_resume.py SHARDS OUT MAX_STEPS DEVICES [CKPT]
Writes OUT/keys_rank{R}.jsonl (one line per training step) and checkpoints to OUT/ckpt/.
Lightning's DDP launcher re-runs this file for the other ranks, so it must stay a plain script.
"""

from __future__ import annotations

import faulthandler
import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lvu.data.decoders import VideoDecoder
from lvu.data.loader import SampleSet, ShardLoader
from lvu.data.sampling import SamplerConfig
from lvu.data.shards import resolve_shards
from lvu.process_exit import exit_now
from lvu.train.callbacks import DataHealth


def collate(samples):
    return {"frames": torch.stack([s["frames"] for s in samples]).float(), "keys": [s["__key__"] for s in samples]}


class KeyRecorder(L.LightningModule):
    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out
        self.scale = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        with (self.out / f"keys_rank{self.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps({"step": self.global_step, "keys": batch["keys"]}) + "\n")
        return (self.scale * batch["frames"].mean() / 255).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Shards(L.LightningDataModule):
    def __init__(self, shards: str) -> None:
        super().__init__()
        self.shards = shards

    def train_dataloader(self):
        return ShardLoader(SampleSet(resolve_shards(self.shards)), VideoDecoder(SamplerConfig(num_frames=2),
                           size=(32, 24)), collate, batch_size=2, num_workers=2, seed=5)


def main() -> None:
    # A hang (seen once in CI, never reproduced) must leave every thread's stack in stderr rather than only a
    # timeout; the test's own limit is 300 s.
    faulthandler.dump_traceback_later(240, exit=True)
    shards, out, max_steps, devices = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ckpt = sys.argv[5] if len(sys.argv) > 5 else None
    out.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=max_steps,
        logger=CSVLogger(str(out), name="logs"), log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=str(out / "ckpt"), save_last=True, every_n_train_steps=1), DataHealth()],
    )
    trainer.fit(KeyRecorder(out), Shards(shards), ckpt_path=ckpt)


if __name__ == "__main__":
    main()
    exit_now(0)  # as `lvu` leaves: without seconds of interpreter teardown
