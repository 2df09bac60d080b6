"""Hand-made clip-embedding shards with labels a probe can learn (for the LV-MAE task tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lvu.data.shards import Manifest, ShardInfo, write_shard

CLASSES = ["zero", "one", "two"]
LABEL_MAPS = {
    "kind": {"type": "classification", "classes": CLASSES},
    "order": {"type": "classification", "classes": ["ab", "ba"]},
    "size": {"type": "regression"},
}


def make_features(folder: Path, count: int, *, dim: int = 8, seed: int = 0, lengths=(6, 20),
                  per_shard: int = 16) -> Path:
    """``kind`` shifts the mean of every clip (a mean pool can tell); ``order`` flips the sign of the second half
    (only order-aware models can tell); ``size`` is a scaled clip mean (regression)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        n = int(rng.integers(*lengths))
        kind, order = int(rng.integers(3)), int(rng.integers(2))
        x = rng.normal(size=(n, dim)).astype(np.float32) * 0.5
        x[:, kind] += 2.0
        half = np.where(np.arange(n) < n // 2, 1.0, -1.0)[:, None] * (1 if order == 0 else -1)
        x[:, dim - 1] += 2.0 * half[:, 0]
        size = float(x[:, 1].mean())
        samples.append((f"v{seed}_{i:04d}", {"npy": x.astype(np.float16), "json": {
            "labels": {"kind": CLASSES[kind], "order": ["ab", "ba"][order], "size": size},
            "clips": [[5.0 * c, 5.0 * c + 5.0] for c in range(n)], "duration_s": 5.0 * n}}))
    shards = []
    for s in range(0, count, per_shard):
        path = folder / f"shard-{s // per_shard:06d}.tar"
        write_shard(path, samples[s:s + per_shard])
        shards.append(ShardInfo(path, len(samples[s:s + per_shard])))
    Manifest(shards, kind="features", extra={"dim": dim}).save(folder)
    (folder / "label_maps.json").write_text(json.dumps(LABEL_MAPS))
    return folder
