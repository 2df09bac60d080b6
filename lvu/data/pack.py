"""Pack public datasets into our shard layout (``lvu data pack``).

Formats (details and examples in data/README.md):

* ``llava``: LLaVA conversation JSON or JSONL (``{"id", "video"|"image", "conversations"}``, or ``"caption"`` instead
  of / besides ``"conversations"`` for video-text pairs); paths relative to ``--videos``. Text-only entries become
  json-only samples.
* ``lvu``: the LVU benchmark's per-task CSVs (``--annotations`` is the folder holding ``<task>/{train,val,test}.csv``;
  ``--videos`` holds ``<youtube_id>.<ext>``). One sample per video with ``labels`` and ``splits`` per task; the two
  regression targets are transformed as in the LVU paper's code; ``label_maps.json`` holds one class list per task,
  built over all splits.
* the evaluation benchmarks (``videomme``, ``mlvu``, ``longvideobench``, ``lvbench``, ``mvbench``, ``egoschema``,
  ``nextqa``, ``perceptiontest``, ``ego4d_nlq``): their released annotation files, read by lvu.data.benchmarks.
* ``grounding``: JSONL of ``{"video", "query", "start_s", "end_s"}`` (``start``/``end`` also accepted); one sample per
  video with all its ``segments``.

Every video is probed and its first frame decoded before it is written; missing or unreadable videos are skipped and
listed with the reason in ``OUT/skipped.jsonl``. Order is the annotation file's, so output is deterministic.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lvu.data.benchmarks import READERS as BENCHMARK_READERS
from lvu.data.decoders import IMAGE_EXTS, VIDEO_EXTS, decode_image
from lvu.data.pack_plan import PackItem, PackPlan, index_media, load_json_or_jsonl, sanitize_key, unique_keys
from lvu.data.shards import BadSample, write_shard
from lvu.data.video import VideoError, VideoFile
from lvu.data.writing import Skipped, WriteReport, write_dataset
from lvu.errors import LvuError

# LVU (Wu & Krahenbuhl 2021): task folders as the release (lvu_1.0/<task>/) and its scripts name them, and the
# regression target transforms of the official code.
LVU_CLASSIFICATION = ("relationship", "way_speaking", "scene", "director", "writer", "year", "genre")
# Other folder names read as a task: lvu itself once looked for "speaking_style", so folders renamed for it still pack.
LVU_FOLDER_ALIASES = {"way_speaking": ("speaking_style",)}
LVU_REGRESSION = ("like_ratio", "view_count")
LVU_TASKS = LVU_CLASSIFICATION + LVU_REGRESSION
LVU_SPLITS = ("train", "val", "test")



# --------------------------------------------------------------------------------------------------------------------
# Format readers


def read_llava(annotations: Path, videos: Path) -> PackPlan:
    items = []
    for n, record in enumerate(load_json_or_jsonl(annotations)):
        ident = str(record.get("id", n))
        if "conversations" not in record and not isinstance(record.get("caption"), str):
            raise LvuError(f"{annotations}: entry {ident} has neither 'conversations' nor a 'caption'")
        # Captioned entries (video-text pairs, e.g. LinVT stage 1's WebVid and ShareGPTVideo captions) keep their
        # caption; instruction entries their conversations; an entry may have both.
        annotation = {k: record[k] for k in ("conversations", "caption") if k in record}
        annotation.update(source="llava", id=ident)
        media_field = record.get("video") or record.get("image")
        item = PackItem(key=sanitize_key(ident), annotation=annotation, label=ident)
        if isinstance(media_field, list):
            item.missing = "multi-image samples are not supported"
        elif media_field:
            path = videos / media_field
            if path.is_file():
                item.media = path
            else:
                item.missing = f"{path} not found"
        items.append(item)
    return PackPlan(items)


def _lvu_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8") as f:
        lines = [line.split() for line in f.read().splitlines() if line.strip()]
    return lines[1:]  # header


def _lvu_folder(annotations: Path, task: str) -> Path:
    """The task's folder: its release name, or an alias of it that exists."""
    for name in (task, *LVU_FOLDER_ALIASES.get(task, ())):
        if (annotations / name).is_dir():
            return annotations / name
    return annotations / task


def read_lvu(annotations: Path, videos: Path, *, allow_missing_tasks: bool = False) -> PackPlan:
    """Every task's three splits are expected: a missing one is an error (a task silently absent from the packed data
    would be a column silently absent from Table 8), or, with ``allow_missing_tasks``, a warning that lists them."""
    media = index_media(videos)
    per_video: dict[str, dict[str, Any]] = {}
    classes: dict[str, dict[int, str]] = {t: {} for t in LVU_CLASSIFICATION}
    found_any = False
    missing: list[str] = []
    for task in LVU_TASKS:
        folder = _lvu_folder(annotations, task)
        for split in LVU_SPLITS:
            path = folder / f"{split}.csv"
            if not path.is_file():
                missing.append(f"{task}/{split}.csv")
                continue
            found_any = True
            for n, row in enumerate(_lvu_rows(path), 2):
                try:
                    if task in LVU_CLASSIFICATION:
                        class_id, name, youtube_id = int(row[0]), "_".join(row[1:-2]), row[-2]
                        known = classes[task].setdefault(class_id, name)
                        if known != name:
                            raise LvuError(f"{path}:{n}: class id {class_id} is '{name}' here but '{known}' elsewhere")
                        value: Any = name
                    elif task == "like_ratio":
                        like, dislike, youtube_id = float(row[0]), float(row[1]), row[2]
                        value = like / (like + dislike) * 10 - 9.138
                    else:
                        views, youtube_id = float(row[0]), row[1]
                        value = math.log(views) - 11.764
                except (ValueError, IndexError, ZeroDivisionError):
                    raise LvuError(f"{path}:{n}: cannot parse LVU row {' '.join(row)!r}") from None
                entry = per_video.setdefault(youtube_id, {"labels": {}, "splits": {}})
                if entry["splits"].get(task, split) != split:
                    raise LvuError(f"{path}:{n}: video {youtube_id} is in two splits of task {task}")
                entry["labels"][task] = value
                entry["splits"][task] = split
                entry.setdefault("imdb_id", row[-1])
    if not found_any:
        raise LvuError(f"{annotations}: no LVU CSVs found (expected <task>/{{train,val,test}}.csv, tasks: "
                       f"{', '.join(LVU_TASKS)})")
    warnings = []
    if missing:
        listed = f"{annotations}: {len(missing)} LVU annotation files missing: {', '.join(missing)}"
        if not allow_missing_tasks:
            raise LvuError(f"{listed} (the release has <task>/{{train,val,test}}.csv for all nine tasks); pass "
                           "--allow-missing-tasks to pack the others")
        warnings.append(listed)
    items = []
    for youtube_id in sorted(per_video):
        annotation = {**per_video[youtube_id], "youtube_id": youtube_id, "source": "lvu"}
        item = PackItem(key=sanitize_key(youtube_id), annotation=annotation, label=youtube_id)
        if youtube_id in media:
            item.media = media[youtube_id]
        else:
            item.missing = f"no video named {youtube_id}.* under {videos}"
        items.append(item)
    label_maps: dict[str, Any] = {}
    for task in LVU_CLASSIFICATION:
        if classes[task]:
            ids = sorted(classes[task])
            if ids != list(range(len(ids))):
                raise LvuError(f"LVU task {task}: class ids are not 0..{len(ids) - 1} across splits: {ids}")
            label_maps[task] = {"type": "classification", "classes": [classes[task][i] for i in ids]}
    for task in LVU_REGRESSION:
        if any(task in e["labels"] for e in per_video.values()):
            label_maps[task] = {"type": "regression"}
    return PackPlan(items, label_maps, warnings)


def read_grounding(annotations: Path, videos: Path) -> PackPlan:
    media = index_media(videos)
    by_video: dict[str, list[dict[str, Any]]] = {}
    for n, record in enumerate(load_json_or_jsonl(annotations), 1):
        try:
            video = str(record["video"])
            start = float(record.get("start_s", record.get("start")))
            end = float(record.get("end_s", record.get("end")))
            query = str(record["query"])
        except (KeyError, TypeError, ValueError):
            raise LvuError(f"{annotations}: record {n} needs video, query, start_s and end_s") from None
        if end < start:
            raise LvuError(f"{annotations}: record {n} ends ({end}) before it starts ({start})")
        by_video.setdefault(video, []).append({"query": query, "start_s": start, "end_s": end})
    items = []
    for video, segments in by_video.items():
        item = PackItem(key=sanitize_key(Path(video).stem), label=video,
                        annotation={"segments": segments, "source": "grounding", "video_id": video})
        path = videos / video
        if path.is_file():
            item.media = path
        elif Path(video).stem in media:
            item.media = media[Path(video).stem]
        else:
            item.missing = f"{path} not found"
        items.append(item)
    return PackPlan(items)


READERS: dict[str, Callable[..., PackPlan]] = {
    "llava": read_llava,
    "lvu": read_lvu,
    "grounding": read_grounding,
    **BENCHMARK_READERS,
}
FORMATS = tuple(READERS)


# --------------------------------------------------------------------------------------------------------------------
# Writing

_ITEMS: list[PackItem] = []  # set before the worker pool forks (cheaper than pickling the list per item)


def _make_item(index: int) -> tuple[str, dict[str, Any]] | Skipped:
    item = _ITEMS[index]
    if item.missing:
        return Skipped(item.label, "missing_video", item.missing)
    annotation = dict(item.annotation)
    if item.media is None:
        return item.key, {"json": annotation}
    try:
        data = item.media.read_bytes()
    except OSError as exc:
        return Skipped(item.label, "unreadable_file", str(exc))
    ext = item.media.suffix.lower().lstrip(".")
    try:
        if ext in IMAGE_EXTS:
            image = decode_image(data)
            annotation.update(width=int(image.shape[1]), height=int(image.shape[0]))
        else:
            video = VideoFile(data)
            info = video.info
            video.read([0])
            annotation.update(duration_s=round(info.duration_s, 3), fps=round(info.fps, 3), width=info.width,
                              height=info.height)
    except (VideoError, BadSample) as exc:
        return Skipped(item.label, exc.reason, str(exc))
    return item.key, {ext: data, "json": annotation}


def pack(fmt: str, videos: Path, annotations: Path, out: Path, *, maxcount: int = 100, workers: int = 1,
         quiet: bool = False, allow_missing_tasks: bool = False, subtitles: Path | None = None) -> WriteReport:
    """Read ``annotations`` in format ``fmt``, then write shards (and label_maps.json for LVU) into ``out``.
    ``allow_missing_tasks`` (LVU only) packs a release with task files missing, listing them as a warning;
    ``subtitles`` (Video-MME, LongVideoBench) is the benchmark's subtitle folder."""
    global _ITEMS
    if fmt not in READERS:
        raise LvuError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if not annotations.exists():
        raise LvuError(f"annotations {annotations} not found")
    if not videos.is_dir():
        raise LvuError(f"videos folder {videos} not found")
    options: dict[str, Any] = {"allow_missing_tasks": allow_missing_tasks} if fmt == "lvu" else {}
    if subtitles is not None:
        if fmt not in ("videomme", "longvideobench"):
            raise LvuError(f"--subtitles: format {fmt} has no subtitles (videomme and longvideobench have)")
        if not subtitles.is_dir():
            raise LvuError(f"subtitles folder {subtitles} not found")
        options["subtitles"] = subtitles
    plan = READERS[fmt](annotations, videos, **options)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if not plan.items:
        raise LvuError(f"{annotations}: no entries to pack")
    unique_keys(plan.items)
    _ITEMS = plan.items
    try:
        report = write_dataset(out, len(plan.items), _make_item, maxcount=maxcount, workers=workers,
                               kind="video", extra={"packed_from": fmt, **({"warnings": plan.warnings} if plan.warnings
                                                                                  else {})},
                               description=f"packing {fmt}", quiet=quiet)
    finally:
        _ITEMS = []
    if plan.label_maps:
        (out / "label_maps.json").write_text(json.dumps(plan.label_maps, indent=1) + "\n")
    return report


def query_shard(media: Path, question: str, out: Path) -> Path:
    """A one-sample shard in ``out`` asking ``question`` about one video or image file (``lvu predict --video``)."""
    ext = media.suffix.lower().lstrip(".")
    if ext not in (*VIDEO_EXTS, *IMAGE_EXTS):
        raise LvuError(f"{media}: not a video or image file lvu reads ({', '.join((*VIDEO_EXTS, *IMAGE_EXTS))})")
    if not media.is_file():
        raise LvuError(f"{media} not found")
    mark = "<image>" if ext in IMAGE_EXTS else "<video>"
    sample = {ext: media.read_bytes(),
              "json": {"conversations": [{"from": "human", "value": f"{mark}\n{question}"}], "source": str(media)}}
    write_shard(out / "shard-000000.tar", [("query", sample)])
    return out

