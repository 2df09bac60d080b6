"""What ``lvu data pack``'s format readers produce: the samples to write, and the helpers every reader shares."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvu.data.decoders import IMAGE_EXTS, VIDEO_EXTS
from lvu.errors import LvuError


@dataclass
class PackItem:
    """One sample to write: where its media is and its annotation."""

    key: str
    annotation: dict[str, Any]
    media: Path | None = None  # video or image file; None for text-only samples
    label: str = ""  # what skipped.jsonl calls the item (its id in the annotation file)
    missing: str = ""  # set when the annotation names media that was not found


@dataclass
class PackPlan:
    items: list[PackItem]
    label_maps: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # printed, and kept in the dataset's manifest


def sanitize_key(raw: str) -> str:
    key = re.sub(r"[^A-Za-z0-9_\-]", "_", str(raw)).strip("_") or "sample"
    return key


def unique_keys(items: list[PackItem]) -> None:
    seen: dict[str, int] = {}
    for item in items:
        base = item.key
        n = seen.get(base, 0)
        seen[base] = n + 1
        if n:
            item.key = f"{base}_{n}"


def index_media(folder: Path) -> dict[str, Path]:
    """File stem -> path for every video/image under ``folder`` (first in sorted order wins)."""
    stems: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower().lstrip(".") in VIDEO_EXTS + IMAGE_EXTS:
            stems.setdefault(path.stem, path)
    return stems


def load_json_or_jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LvuError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        return records
