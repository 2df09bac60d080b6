"""Procedural long videos with annotations derived from what is drawn (``lvu data synth``).

Each video is three *acts*, each in a different place (a scene type: beach, forest, ...). An act has one to three
*scenes* (hard cuts) with one or two coloured shapes moving and bouncing, and the video has a few brief *events*
(the screen flashes white, or a yellow star appears). Every annotation is computed from that ground truth:

* ``caption``: per-scene sentences with time ranges, then the events;
* ``conversations``: LLaVA-format QA about the start, the events, and a detailed description;
* ``mc``: four-option questions tagged with LVBench-style categories (KIR, EU, Sum, ER, Rea, TG);
* ``labels``: ``act_order`` (6 classes: the order of the three places, *not* which places — a bag of clips cannot
  tell), ``first_scene`` (6 classes), ``dominant_shape`` (3 classes: a bag of clips can tell) and ``event_count``
  (regression);
* ``segments``: grounding queries for the acts and events with start/end seconds;
* ``synth``: the full ground truth (acts, scenes, objects, events) for tests.

A 16-bit binary *timecode* of the frame number is drawn in the bottom rows, so tests can read back which frame was
decoded. Same seed, same bytes: all randomness comes from ``numpy.random.default_rng([seed, video_index])``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lvu.data.video import encode_mp4
from lvu.data.writing import WriteReport, write_dataset
from lvu.errors import LvuError

SCENE_TYPES: dict[str, tuple[tuple[int, int, int], str]] = {
    "beach": ((232, 204, 130), "hstripes"),
    "forest": ((34, 110, 46), "vstripes"),
    "ocean": ((28, 78, 170), "waves"),
    "city": ((118, 118, 128), "grid"),
    "desert": ((204, 132, 58), "dots"),
    "night": ((26, 20, 58), "sparkles"),
}
SCENE_NAMES = list(SCENE_TYPES)
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "white": (245, 245, 245),
    "black": (12, 12, 12),
    "magenta": (220, 40, 210),
    "cyan": (40, 220, 230),
}
EVENT_KINDS = {"flash": "the screen flashes white", "star": "a yellow star appears"}
ACT_ORDERS = [f"order-{''.join(map(str, p))}" for p in itertools.permutations(range(3))]
TIMECODE_BITS = 16
TIMECODE_ROWS = 6
CATEGORIES = ("KIR", "EU", "Sum", "ER", "Rea", "TG")

LABEL_MAPS: dict[str, dict[str, Any]] = {
    "act_order": {"type": "classification", "classes": ACT_ORDERS},
    "first_scene": {"type": "classification", "classes": SCENE_NAMES},
    "dominant_shape": {"type": "classification", "classes": list(SHAPES)},
    "event_count": {"type": "regression"},
}


@dataclass(frozen=True)
class SynthConfig:
    """Shape of the generated videos."""

    min_seconds: float = 20.0
    max_seconds: float = 60.0
    fps: float = 8.0
    width: int = 128
    height: int = 96
    max_events: int = 4
    clip_seconds: float | None = None
    """None: each scene's objects move through it (the default). A number: the video is cut into clips of this
    length on the grid from 0 s (the one ``lvu data embed`` cuts, 5 s by default) and every clip inside an act shows
    a new arrangement of the act's objects (one to three of the act's three shape/colour pairs, at new sizes,
    positions and speeds) over the act's background, so a clip is predictable from its act but not a copy of its
    neighbour. Acts and events are drawn as without it."""

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"--seconds: need 0 < MIN <= MAX, got {self.min_seconds} {self.max_seconds}")
        if self.width % 2 or self.height % 2 or self.width < 2 * TIMECODE_BITS or self.height < 24:
            raise ValueError(f"--size: need even width >= {2 * TIMECODE_BITS} and even height >= 24, "
                             f"got {self.width}x{self.height}")
        if self.fps <= 0:
            raise ValueError("--fps must be positive")
        if self.min_seconds * self.fps < 3:
            raise ValueError("videos this short at this fps hold fewer than 3 frames (one per act)")
        if self.clip_seconds is not None and self.clip_seconds * self.fps < 1:
            raise ValueError("--clip-seconds must span at least one frame")


# --------------------------------------------------------------------------------------------------------------------
# Ground truth


def _plan(rng: np.random.Generator, cfg: SynthConfig) -> dict[str, Any]:
    frames = max(3, round(rng.uniform(cfg.min_seconds, cfg.max_seconds) * cfg.fps))
    duration = frames / cfg.fps
    acts_types = [SCENE_NAMES[i] for i in rng.choice(len(SCENE_NAMES), 3, replace=False)]
    # Act lengths: each at least 20% of the video, cut at frame boundaries.
    shares = 0.2 + 0.4 * rng.dirichlet([2.0, 2.0, 2.0])
    cuts = np.round(np.cumsum(shares / shares.sum())[:-1] * frames).astype(int).tolist()
    act_bounds = list(zip([0, *cuts], [*cuts, frames], strict=True))
    acts, scenes = [], []
    for place, (a0, a1) in zip(acts_types, act_bounds, strict=True):
        acts.append({"scene_type": place, "start_frame": a0, "end_frame": a1})
        n_scenes = int(min(rng.integers(1, 4), max(1, (a1 - a0) // 2)))
        inner = sorted(rng.choice(np.arange(a0 + 1, a1), n_scenes - 1, replace=False).tolist()) if n_scenes > 1 else []
        for s0, s1 in zip([a0, *inner], [*inner, a1], strict=True):
            objects = []
            for _ in range(int(rng.integers(1, 3))):
                size = int(rng.integers(cfg.height // 8, cfg.height // 4))
                objects.append({
                    "shape": SHAPES[int(rng.integers(len(SHAPES)))],
                    "colour": list(COLOURS)[int(rng.integers(len(COLOURS)))],
                    "size": size,
                    "x": float(rng.uniform(size, cfg.width - size)),
                    "y": float(rng.uniform(size, cfg.height - TIMECODE_ROWS - size)),
                    "vx": float(rng.uniform(-1, 1) * cfg.width / (2 * cfg.fps)),
                    "vy": float(rng.uniform(-1, 1) * cfg.height / (2 * cfg.fps)),
                })
            scenes.append({"scene_type": place, "start_frame": s0, "end_frame": s1, "objects": objects})
    events = []
    for _ in range(int(rng.integers(0, cfg.max_events + 1))):
        length = max(1, round(rng.uniform(0.5, 1.0) * cfg.fps))
        start = int(rng.integers(0, max(1, frames - length)))
        if any(start < e["end_frame"] + 1 and e["start_frame"] < start + length + 1 for e in events):
            continue  # keep events apart so they can be counted
        events.append({"kind": list(EVENT_KINDS)[int(rng.integers(2))], "start_frame": start,
                       "end_frame": start + length,
                       "x": float(rng.uniform(0.2, 0.8) * cfg.width), "y": float(rng.uniform(0.2, 0.7) * cfg.height)})
    events.sort(key=lambda e: e["start_frame"])
    if cfg.clip_seconds is not None:
        scenes = _clip_scenes(rng, cfg, acts)
    for item in (*acts, *scenes, *events):
        item["start_s"] = round(item["start_frame"] / cfg.fps, 3)
        item["end_s"] = round(item["end_frame"] / cfg.fps, 3)
    return {"frames": frames, "duration_s": duration, "acts": acts, "scenes": scenes, "events": events}


def _object(rng: np.random.Generator, cfg: SynthConfig, shape: str, colour: str) -> dict[str, Any]:
    size = int(rng.integers(cfg.height // 8, cfg.height // 4))
    return {
        "shape": shape,
        "colour": colour,
        "size": size,
        "x": float(rng.uniform(size, cfg.width - size)),
        "y": float(rng.uniform(size, cfg.height - TIMECODE_ROWS - size)),
        "vx": float(rng.uniform(-1, 1) * cfg.width / (2 * cfg.fps)),
        "vy": float(rng.uniform(-1, 1) * cfg.height / (2 * cfg.fps)),
    }


def _clip_scenes(rng: np.random.Generator, cfg: SynthConfig, acts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SynthConfig.clip_seconds: one scene per clip of each act, each a new arrangement of the act's objects."""
    step = max(1, round(cfg.clip_seconds * cfg.fps))
    scenes = []
    for act in acts:
        a0, a1 = act["start_frame"], act["end_frame"]
        pool = [(SHAPES[int(rng.integers(len(SHAPES)))], list(COLOURS)[int(rng.integers(len(COLOURS)))])
                for _ in range(3)]
        cuts = list(range((a0 // step + 1) * step, a1, step))
        for s0, s1 in zip([a0, *cuts], [*cuts, a1], strict=True):
            chosen = sorted(rng.choice(len(pool), int(rng.integers(1, len(pool) + 1)), replace=False).tolist())
            scenes.append({"scene_type": act["scene_type"], "start_frame": s0, "end_frame": s1,
                           "objects": [_object(rng, cfg, *pool[i]) for i in chosen]})
    return scenes


# --------------------------------------------------------------------------------------------------------------------
# Rendering


def _background(kind: str, w: int, h: int) -> np.ndarray:
    colour, pattern = SCENE_TYPES[kind]
    base = np.empty((h, w, 3), np.float32)
    base[:] = colour
    yy, xx = np.mgrid[0:h, 0:w]
    if pattern == "hstripes":
        mask = (yy // 6) % 2 == 0
    elif pattern == "vstripes":
        mask = (xx // 6) % 2 == 0
    elif pattern == "waves":
        mask = np.sin(xx / 5.0 + 3 * np.sin(yy / 9.0)) > 0.3
    elif pattern == "grid":
        mask = (xx % 12 < 2) | (yy % 12 < 2)
    elif pattern == "dots":
        mask = ((xx % 10 - 5) ** 2 + (yy % 10 - 5) ** 2) < 5
    else:
        mask = ((xx * 7 + yy * 13) % 29 == 0)
    base[mask] = base[mask] * 0.6 + 255 * 0.25
    return base.astype(np.uint8)


def _shape_mask(shape: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[-size:size + 1, -size:size + 1]
    if shape == "circle":
        return xx**2 + yy**2 <= size**2
    if shape == "square":
        return (np.abs(xx) <= size * 0.8) & (np.abs(yy) <= size * 0.8)
    if shape == "triangle":
        return (yy <= size * 0.8) & (yy >= -size) & (np.abs(xx) <= (yy + size) * 0.55)
    # star: a plus and a cross over each other
    return ((np.abs(xx) <= size * 0.25) | (np.abs(yy) <= size * 0.25) | (np.abs(np.abs(xx) - np.abs(yy)) <= size * 0.2)
            ) & (xx**2 + yy**2 <= size**2)


def _paste(frame: np.ndarray, mask: np.ndarray, cx: float, cy: float, colour) -> None:
    h, w = frame.shape[:2]
    r = mask.shape[0] // 2
    x0, y0 = round(cx) - r, round(cy) - r
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + mask.shape[1]), min(h, y0 + mask.shape[0])
    if fx0 >= fx1 or fy0 >= fy1:
        return
    sub = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    frame[fy0:fy1, fx0:fx1][sub] = colour


def _bounce(position: float, velocity: float, t: float, low: float, high: float) -> float:
    span = high - low
    if span <= 0:
        return low
    p = (position - low + velocity * t) % (2 * span)
    return low + (p if p <= span else 2 * span - p)


def draw_timecode(frame: np.ndarray, index: int) -> None:
    """Write ``index`` as 16 black/white blocks along the bottom rows (least significant bit on the left)."""
    h, w = frame.shape[:2]
    block = w // TIMECODE_BITS
    for bit in range(TIMECODE_BITS):
        frame[h - TIMECODE_ROWS:, bit * block:(bit + 1) * block] = 255 if (index >> bit) & 1 else 0


def read_timecode(frame: np.ndarray) -> int:
    """The frame number drawn by :func:`draw_timecode` (robust to compression: block centres are averaged)."""
    h, w = frame.shape[:2]
    block = w // TIMECODE_BITS
    rows = frame[h - TIMECODE_ROWS + 1:h - 1].astype(np.float32).mean(axis=2)
    value = 0
    for bit in range(TIMECODE_BITS):
        centre = rows[:, bit * block + block // 4: (bit + 1) * block - block // 4]
        if centre.mean() > 127:
            value |= 1 << bit
    return value


def render(truth: dict[str, Any], cfg: SynthConfig):
    """Yield the video's RGB frames."""
    w, h = cfg.width, cfg.height
    backgrounds = {kind: _background(kind, w, h) for kind in {s["scene_type"] for s in truth["scenes"]}}
    masks: dict[tuple[str, int], np.ndarray] = {}
    scene_of = np.zeros(truth["frames"], dtype=np.int64)
    for i, scene in enumerate(truth["scenes"]):
        scene_of[scene["start_frame"]:scene["end_frame"]] = i
    for index in range(truth["frames"]):
        scene = truth["scenes"][scene_of[index]]
        frame = backgrounds[scene["scene_type"]].copy()
        t = (index - scene["start_frame"]) / cfg.fps
        for obj in scene["objects"]:
            key = (obj["shape"], obj["size"])
            mask = masks.setdefault(key, _shape_mask(*key))
            x = _bounce(obj["x"], obj["vx"], t, obj["size"], w - obj["size"])
            y = _bounce(obj["y"], obj["vy"], t, obj["size"], h - TIMECODE_ROWS - obj["size"])
            _paste(frame, mask, x, y, COLOURS[obj["colour"]])
        for event in truth["events"]:
            if event["start_frame"] <= index < event["end_frame"]:
                if event["kind"] == "flash":
                    frame = (frame.astype(np.float32) * 0.3 + 255 * 0.7).astype(np.uint8)
                else:
                    size = h // 5
                    mask = masks.setdefault(("star", size), _shape_mask("star", size))
                    _paste(frame, mask, event["x"], event["y"], (250, 225, 20))
        draw_timecode(frame, index)
        yield frame


# --------------------------------------------------------------------------------------------------------------------
# Annotations


def _describe_objects(objects: list[dict[str, Any]]) -> str:
    parts = [f"a {o['colour']} {o['shape']}" for o in objects]
    return parts[0] if len(parts) == 1 else " and ".join(parts)


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def _mc(rng: np.random.Generator, question: str, answer: str, distractors: list[str],
        categories: list[str]) -> dict[str, Any]:
    pool = [d for d in dict.fromkeys(distractors) if d != answer]
    chosen = [pool[i] for i in rng.choice(len(pool), min(3, len(pool)), replace=False)]
    options = [answer, *chosen]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    return {"question": question, "options": options, "answer": _letters(len(options))[options.index(answer)],
            "categories": categories}


def annotate(truth: dict[str, Any], cfg: SynthConfig, rng: np.random.Generator) -> dict[str, Any]:
    acts, scenes, events = truth["acts"], truth["scenes"], truth["events"]
    places = [a["scene_type"] for a in acts]
    ranks = np.argsort(np.argsort([SCENE_NAMES.index(p) for p in places]))
    act_order = f"order-{''.join(map(str, ranks))}"
    screen_time = dict.fromkeys(SHAPES, 0)
    for scene in scenes:
        for obj in scene["objects"]:
            screen_time[obj["shape"]] += scene["end_frame"] - scene["start_frame"]
    dominant = max(SHAPES, key=lambda s: (screen_time[s], -SHAPES.index(s)))

    sentences = [f"{s['start_s']:.1f}-{s['end_s']:.1f}s: {_describe_objects(s['objects'])} "
                 f"{'moves' if len(s['objects']) == 1 else 'move'} across a {s['scene_type']}." for s in scenes]
    sentences += [f"At {e['start_s']:.1f}s {EVENT_KINDS[e['kind']]}." for e in events]
    caption = " ".join(sentences)
    n_events = len(events)
    qa = [
        ("Where does the video begin?", f"It begins in a {places[0]} scene."),
        ("In which order do the places appear?", f"First a {places[0]}, then a {places[1]}, then a {places[2]}."),
        ("How many brief events (a flash or a star) happen?",
         f"{n_events} time{'s' if n_events != 1 else ''}." if n_events else "None."),
        ("Describe the video in detail.", caption),
    ]
    picked = sorted(rng.choice(len(qa), 2, replace=False).tolist())
    conversations = []
    for n, i in enumerate([*picked, 3] if 3 not in picked else picked):
        question, answer = qa[i]
        conversations.append({"from": "human", "value": f"<video>\n{question}" if n == 0 else question})
        conversations.append({"from": "gpt", "value": answer})

    others = [p for p in SCENE_NAMES if p not in places]
    mc = [
        _mc(rng, "Which place is shown first?", places[0], places[1:] + others, ["KIR", "TG"]),
        _mc(rng, "Which sequence of places matches the video?", " -> ".join(places),
            [" -> ".join(p) for p in itertools.permutations(places)], ["Sum", "Rea"]),
    ]
    scene = scenes[int(rng.integers(len(scenes)))]
    obj = scene["objects"][0]
    mc.append(_mc(rng, f"What colour is the {obj['shape']} in the {scene['scene_type']} scene around "
                       f"{(scene['start_s'] + scene['end_s']) / 2:.0f}s?", obj["colour"], list(COLOURS), ["ER"]))
    if events:
        event = events[0]
        mc.append(_mc(rng, f"What happens at about {event['start_s']:.0f}s?", EVENT_KINDS[event["kind"]],
                      [*EVENT_KINDS.values(), "the video fades to black", "a second shape splits off"],
                      ["EU", "TG"]))

    segments = [{"query": f"the video shows a {a['scene_type']}", "start_s": a["start_s"], "end_s": a["end_s"]}
                for a in acts]
    segments += [{"query": EVENT_KINDS[e["kind"]], "start_s": e["start_s"], "end_s": e["end_s"]} for e in events]
    return {
        "caption": caption,
        "conversations": conversations,
        "mc": mc,
        "labels": {"act_order": act_order, "first_scene": places[0], "dominant_shape": dominant,
                   "event_count": n_events},
        "segments": segments,
        "duration_s": truth["duration_s"],
        "fps": cfg.fps,
        "width": cfg.width,
        "height": cfg.height,
        "source": "synthetic",
        "synth": {"acts": acts, "scenes": scenes, "events": events, "timecode_bits": TIMECODE_BITS,
                  "timecode_rows": TIMECODE_ROWS},
    }


def make_video(index: int, *, seed: int, cfg: SynthConfig) -> tuple[str, dict[str, Any]]:
    """Sample ``index`` of the set with this seed: ``(key, {"mp4": bytes, "json": annotation})``."""
    rng = np.random.default_rng([seed, index])
    truth = _plan(rng, cfg)
    annotation = annotate(truth, cfg, rng)
    return f"synth_{seed}_{index:06d}", {"mp4": encode_mp4(render(truth, cfg), cfg.fps), "json": annotation}


def synthesize(out: Path, videos: int, *, seed: int = 0, cfg: SynthConfig | None = None, maxcount: int = 100,
               workers: int = 1, quiet: bool = False) -> WriteReport:
    """Write ``videos`` synthetic videos as shards into ``out`` (plus manifest.json and label_maps.json)."""
    cfg = cfg or SynthConfig()
    if videos <= 0:
        raise LvuError(f"--videos must be positive, got {videos}")
    report = write_dataset(
        out, videos, partial(make_video, seed=seed, cfg=cfg), maxcount=maxcount, workers=workers, kind="video",
        extra={"generator": "lvu data synth", "seed": seed, "config": cfg.__dict__}, description="synthesising",
        quiet=quiet,
    )
    (out / "label_maps.json").write_text(json.dumps(LABEL_MAPS, indent=1) + "\n")
    return report
