"""SEAL's grounding task (``seal.ground``) from the CLI: a head trained on each query's selected tokens learns a toy
timeline (Recall@1 up from the untrained head's, loss down), keeps the frozen text tower out of its checkpoint, and
predicts each query's top windows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lvu.cli import main
from lvu.data.token_shards import part_path, write_part
from lvu.models.seal_tiny import save_tiny_clip

DIM, TOKENS, DURATION = 32, 40, 40.0


def _toy_tokens(folder: Path, videos: int, seed: int) -> Path:
    """One token per second; the tokens inside each query's window carry a shared "event" direction (the signal
    the head must find), the others are random. Two queries a video, windows of 6-10 s anywhere."""
    event = np.random.default_rng(100).standard_normal(DIM)  # one event, the same in every split
    rng = np.random.default_rng(seed)
    samples = []
    for v in range(videos):
        embeddings = rng.standard_normal((TOKENS, DIM)).astype(np.float32)
        segments = []
        for q in range(2):
            start = float(rng.integers(0, 30))
            end = start + float(rng.integers(6, 11))
            inside = (np.arange(TOKENS) >= start) & (np.arange(TOKENS) <= end)
            embeddings[inside] = 0.3 * embeddings[inside] + 3 * event
            segments.append({"uid": f"q{q}", "query": ["the door opens", "a person cooks"][q], "start_s": start,
                             "end_s": end})
        records = [{"kind": "scene", "start_s": float(t), "end_s": float(t + 1), "box": [0, 0, 1, 1],
                    "frame_s": float(t)} for t in range(TOKENS)]
        samples.append((f"toy_{v:03d}", {"npy": embeddings.astype(np.float16),
                                         "json": {"tokens": records, "duration_s": DURATION, "segments": segments}}))
    write_part(part_path(folder, 0, 0), samples)
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seal-ground")
    return {"encoder": save_tiny_clip(root / "clip"), "train": _toy_tokens(root / "train", 24, 0),
            "test": _toy_tokens(root / "test", 12, 1), "root": root}


def _args(toy: dict[str, Path], *extra: str) -> list[str]:
    return ["seal/ground_ego4d", "trainer=cpu", f"encoder={toy['encoder']}", f"data.train={toy['train']}",
            f"data.test={toy['test']}", "data.num_workers=0", "data.batch_size=4", "selection.budget=24",
            "selection.alpha=1.0", "head.width=32", "head.heads=2", "optim.lr=3e-3",
            "optim.scheduler.warmup_steps=0", "trainer.progress_bar=none", f"runs_root={toy['root'] / 'runs'}",
            *extra]


def _test_recall(run: Path) -> float:
    return json.loads((run / "test_metrics.json").read_text())["test/R@1,IoU=0.3"]


@pytest.mark.timeout(600)
def test_the_head_learns_a_toy_timeline_and_predicts_windows(toy):
    untrained = toy["root"] / "untrained"
    assert main(["test", *_args(toy, f"run_dir={untrained}")]) == 0
    trained = toy["root"] / "trained"
    assert main(["fit", *_args(toy, f"run_dir={trained}", "trainer.max_epochs=15", "trainer.test_after_fit=true",
                 "trainer.log_every_n_steps=1")]) == 0
    before, after = _test_recall(untrained), _test_recall(trained)
    assert after >= before + 0.2, (before, after)
    rows = list(csv.DictReader((trained / "logs" / "csv" / "version_0" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["state_dict"] and all(k.startswith("head.") for k in checkpoint["state_dict"])
    out = toy["root"] / "windows.jsonl"
    assert main(["predict", *_args(toy, f"data.predict={toy['test']}", f"run_dir={toy['root'] / 'predict'}"),
                 "--ckpt", str(trained / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 24 and {r["uid"] for r in records} == {"q0", "q1"}
    assert all(1 <= len(r["windows"]) <= 5 and all(a <= b for a, b in r["windows"]) for r in records)
