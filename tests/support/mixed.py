"""Instruction shards that mix videos, images and text-only samples (LLaVA conversations in every json)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lvu.data.shards import ShardReader, resolve_shards, write_shard


def _png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _talk(question: str, answer: str) -> dict:
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def sample(kind: str, index: int, videos: Path | None = None) -> tuple[str, dict]:
    """One ``kind`` sample (video: the index-th of the ``videos`` shards, with its own conversation)."""
    if kind == "video":
        reader = ShardReader(resolve_shards(str(videos)))
        raw = reader.read(0, index % reader.shards[0].samples)
        reader.close()
        return f"video{index:03d}", {"mp4": raw["mp4"], "json": raw["json"]}
    if kind == "image":
        talk = _talk("<image>\nwhat colour is it?", "noise")
        return f"image{index:03d}", {"png": _png(index), "json": {**talk, "caption": "coloured noise"}}
    return f"text{index:03d}", {"json": _talk("what is two plus two?", "four")}


def write_mixed(out: Path, shard_kinds: list[list[str]], videos: Path) -> Path:
    """One shard per entry of ``shard_kinds``, holding samples of those kinds in that order."""
    index = 0
    for number, kinds in enumerate(shard_kinds):
        samples = []
        for kind in kinds:
            samples.append(sample(kind, index, videos))
            index += 1
        write_shard(out / f"shard-{number:06d}.tar", samples)
    return out
