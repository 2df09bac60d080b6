"""Readers of the long-video benchmarks' released annotation files, for ``lvu data pack --format BENCH``.

Every multiple-choice benchmark becomes samples whose annotation holds ``mc``: a list of
``{"uid", "question", "options", "answer" (a letter), "categories", ...}``, one sample per video (all its questions),
so one evaluation path serves them all; temporal grounding becomes ``segments`` (``{"uid", "query", "start_s",
"end_s"}``). Categories name the axes each benchmark reports by, prefixed where a benchmark has several
(``duration/long``, ``task/Counting Problem``). The layouts, their sources and licences: ``data/cards/eval/``.
"""

from __future__ import annotations

import csv
import json
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from lvu.data.pack_plan import PackItem, PackPlan, index_media, load_json_or_jsonl, sanitize_key
from lvu.errors import LvuError

LETTERS = string.ascii_uppercase

LVBENCH_CATEGORIES = {
    "key information retrieval": "KIR",
    "event understanding": "EU",
    "summarization": "Sum",
    "entity recognition": "ER",
    "reasoning": "Rea",
    "temporal grounding": "TG",
}
_LVBENCH_OPTION = re.compile(r"^\(([A-Z])\)\s*(.*)$")
_LETTERED = re.compile(r"^\(?([A-Z])[.)]\s*(.*)$", re.S)  # "A. text", "(A) text", "A) text"

# NExT-QA's question types (eval_mc.py): TP is counted as TN; the first letter is the reported group.
NEXTQA_TYPES = {"CW": "Why", "CH": "How", "TN": "Before/After", "TP": "Before/After", "TC": "When", "DC": "Count",
                "DL": "Location", "DO": "Other"}
NEXTQA_GROUPS = {"C": "Causal", "T": "Temporal", "D": "Descriptive"}

# MLVU's multiple-choice files (the dev set's json/ folder); 8 and 9 are its generation tasks.
MLVU_FILES = ("1_plotQA", "2_needle", "3_ego", "4_count", "5_order", "6_anomaly_reco", "7_topic_reasoning")

# MVBench: each task's video folder in the official release (video_chat2/mvbench.ipynb), then lmms-eval's.
MVBENCH_FOLDERS = {
    "action_sequence": ("star/Charades_v1_480", "star/Charades_segment"),
    "action_prediction": ("star/Charades_v1_480", "star/Charades_segment"),
    "action_antonym": ("ssv2_video", "ssv2_video_mp4"),
    "fine_grained_action": ("Moments_in_Time_Raw/videos",),
    "unexpected_action": ("FunQA_test/test",),
    "object_existence": ("clevrer/video_validation",),
    "object_interaction": ("star/Charades_v1_480", "star/Charades_segment"),
    "object_shuffle": ("perception/videos",),
    "moving_direction": ("clevrer/video_validation",),
    "action_localization": ("sta/sta_video", "sta/sta_video_segment"),
    "scene_transition": ("scene_qa/video",),
    "action_count": ("perception/videos",),
    "moving_count": ("clevrer/video_validation",),
    "moving_attribute": ("clevrer/video_validation",),
    "state_change": ("perception/videos",),
    "fine_grained_pose": ("nturgbd", "nturgbd_convert"),
    "character_order": ("perception/videos",),
    "egocentric_navigation": ("vlnqa",),
    "episodic_reasoning": ("tvqa/video_fps3_hq_segment",),  # the official copy is frame folders, not videos
    "counterfactual_inference": ("clevrer/video_validation",),
}


AnswerEncoding = Literal["letter", "index", "text"]


def _question(uid: str, question: str, options: list[str], answer: int | str, categories: list[str], *,
              encoding: AnswerEncoding, **extra: Any) -> dict[str, Any]:
    """One multiple-choice question. ``encoding`` is how the benchmark releases its answers: ``letter`` ("C", "(C)"),
    ``index`` (0-based) or ``text`` (the option itself; MLVU, MVBench). Each reader declares its own, and an answer
    that does not fit is refused: guessing would misread a counting question whose options are "3", "0", "2"."""
    index = None
    if encoding == "letter" and isinstance(answer, str):
        letter = answer.strip().strip("()").upper()
        index = LETTERS.index(letter) if len(letter) == 1 and letter.isalpha() else None
    elif encoding == "index" and (isinstance(answer, int) or str(answer).strip().isdigit()):
        index = int(answer)
    elif encoding == "text" and answer in options:
        index = options.index(answer)
    if index is None or not 0 <= index < len(options):
        raise LvuError(f"question {uid}: answer {answer!r} is not one of its {len(options)} options (this "
                       f"benchmark gives answers as {'an' if encoding == 'index' else 'a'} {encoding})")
    return {"uid": uid, "question": question.strip(), "options": options, "answer": LETTERS[index],
            "categories": categories, **{k: v for k, v in extra.items() if v is not None}}


def _strip_letters(options: list[str]) -> list[str]:
    """``["A. Apples.", ...]`` -> ``["Apples.", ...]`` when every option carries its own letter in order."""
    matches = [_LETTERED.match(o.strip()) for o in options]
    if all(m and m.group(1) == LETTERS[i] for i, m in enumerate(matches)):
        return [m.group(2).strip() for m in matches if m]
    return [o.strip() for o in options]


def _video_item(key: str, annotation: dict[str, Any], path: Path | None, looked_for: str) -> PackItem:
    item = PackItem(key=sanitize_key(key), annotation=annotation, label=key)
    if path is not None and path.is_file():
        item.media = path
    else:
        item.missing = f"no video {looked_for}"
    return item


def _mc_plan(source: str, questions: list[tuple[str, dict[str, Any]]], find: Callable[[str], Path | None],
             looked_for: Callable[[str], str], extra: Callable[[str], dict[str, Any]] | None = None) -> PackPlan:
    """One sample per video holding all its questions, in the order the annotation file first names the videos."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for video, question in questions:
        by_video.setdefault(video, []).append(question)
    items = []
    for video, mc in by_video.items():
        annotation = {"mc": mc, "source": source, "video_id": video, **(extra(video) if extra else {})}
        items.append(_video_item(video, annotation, find(video), looked_for(video)))
    return PackPlan(items)


def _by_stem(videos: Path) -> Callable[[str], Path | None]:
    media = index_media(videos)
    return lambda video: media.get(Path(video).stem)


# --------------------------------------------------------------------------------------------------------------------
# LVBench


def _lvbench_options(question: str) -> tuple[str, list[str]]:
    stem, options = [], []
    for line in question.split("\n"):
        match = _LVBENCH_OPTION.match(line.strip())
        if match:
            options.append(match.group(2).strip())
        elif not options:
            stem.append(line)
    return "\n".join(stem).strip(), options


def read_lvbench(annotations: Path, videos: Path, **_: Any) -> PackPlan:
    """LVBench's ``video_info.meta.jsonl``: ``{"key", "qa": [{"uid", "question" with "(A) ..." lines, "answer",
    "question_type" (a list: a question counts in each), "time_reference"}]}``; videos ``<key>.<ext>``."""
    questions = []
    for record in load_json_or_jsonl(annotations):
        key = str(record.get("key") or record.get("video_id") or "")
        if not key:
            raise LvuError(f"{annotations}: an entry has no 'key'")
        for n, qa in enumerate(record.get("qa", [])):
            stem, options = _lvbench_options(qa["question"])
            if "options" in qa:
                options = list(qa["options"])
            types = qa.get("question_type") or []
            types = [types] if isinstance(types, str) else types
            questions.append((key, _question(str(qa.get("uid", f"{key}_{n}")), stem, options, qa["answer"],
                                             [LVBENCH_CATEGORIES.get(t.lower().strip(), t) for t in types],
                                             encoding="letter", time_reference=qa.get("time_reference") or None)))
    return _mc_plan("lvbench", questions, _by_stem(videos), lambda v: f"named {v}.* under {videos}")


# --------------------------------------------------------------------------------------------------------------------
# Video-MME


def parse_srt(text: str) -> list[dict[str, Any]]:
    """SubRip cues -> ``[{"start_s", "end_s", "text"}]`` (Video-MME wraps each line in a ``<font>`` tag)."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
        lines = block.strip().split("\n")
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue
        times = re.findall(r"(\d+):(\d+):(\d+)[,.](\d+)", lines[timing])
        if len(times) != 2:
            continue
        start, end = (int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 10 ** len(ms) for h, m, s, ms in times)
        words = re.sub(r"<[^>]+>", "", " ".join(lines[timing + 1:])).strip()
        if words:
            cues.append({"start_s": round(start, 3), "end_s": round(end, 3), "text": words})
    return cues


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq  # optional (lvu[eval]): only the benchmarks released as parquet need it
    except ImportError:
        raise LvuError(f"{path} is a parquet file: reading it needs pyarrow (pip install 'lvu[eval]')") from None
    return pq.read_table(path).to_pylist()


def read_videomme(annotations: Path, videos: Path, *, subtitles: Path | None = None, **_: Any) -> PackPlan:
    """Video-MME: the Hugging Face parquet (``videomme/test-00000-of-00001.parquet``, one row per question:
    ``videoID``, ``duration``, ``domain``, ``sub_category``, ``task_type``, ``question_id``, ``question``,
    ``options`` ["A. ...", ...], ``answer``) or the official JSON (a list of videos with ``questions``). Videos
    ``<videoID>.mp4``; with ``subtitles`` (the ``subtitle/`` folder), each video's ``<videoID>.srt`` cues."""
    if annotations.suffix == ".parquet":
        rows = _read_parquet(annotations)
    else:
        rows = [{**video, **q, "duration": video.get("duration_category", video.get("duration")),
                 "domain": video.get("video_category", video.get("domain")),
                 "videoID": video.get("videoID") or video.get("url", "").rsplit("=", 1)[-1] or video.get("video_id"),
                 "options": q.get("options", q.get("choices"))}
                for video in load_json_or_jsonl(annotations) for q in video.get("questions", [])]
    questions = []
    for row in rows:
        categories = [f"duration/{row['duration']}", f"domain/{row['domain']}", f"task/{row['task_type']}"]
        questions.append((str(row["videoID"]), _question(str(row["question_id"]), row["question"],
                                                         _strip_letters(list(row["options"])), row["answer"],
                                                         categories, encoding="letter")))

    def extra(video: str) -> dict[str, Any]:
        if subtitles is None:
            return {}
        srt = subtitles / f"{video}.srt"
        return {"subtitles": parse_srt(srt.read_text(encoding="utf-8", errors="replace")) if srt.is_file() else []}

    return _mc_plan("videomme", questions, _by_stem(videos), lambda v: f"named {v}.* under {videos}", extra)


# --------------------------------------------------------------------------------------------------------------------
# MLVU, LongVideoBench, MVBench


def read_mlvu(annotations: Path, videos: Path, **_: Any) -> PackPlan:
    """MLVU dev, multiple choice: the ``json/`` folder with ``1_plotQA.json`` ... ``7_topic_reasoning.json`` (lists
    of ``{"video", "duration", "question", "candidates", "answer" (the option's text), "question_type"}``); videos
    under ``<videos>/<file stem>/<video>`` (the release's ``video/`` folder)."""
    questions, found = [], {}
    files = [annotations / f"{stem}.json" for stem in MLVU_FILES] if annotations.is_dir() else [annotations]
    present = [f for f in files if f.is_file()]
    if not present:
        raise LvuError(f"{annotations}: none of MLVU's multiple-choice files ({', '.join(MLVU_FILES)}).json")
    for path in present:
        for n, record in enumerate(load_json_or_jsonl(path)):
            video = str(record["video"])
            found.setdefault(video, videos / path.stem / video)
            task = str(record.get("question_type") or path.stem.split("_", 1)[-1])
            questions.append((video, _question(f"{path.stem}_{n}", record["question"], list(record["candidates"]),
                                               record["answer"], [task], encoding="text")))
    anywhere = _by_stem(videos)  # videos not in their task's folder: by name anywhere under --videos
    return _mc_plan("mlvu", questions, lambda v: found[v] if found[v].is_file() else anywhere(v),
                    lambda v: f"{found[v]}")


def read_longvideobench(annotations: Path, videos: Path, *, subtitles: Path | None = None, **_: Any) -> PackPlan:
    """LongVideoBench: ``lvb_val.json`` (a list of ``{"id", "video_path", "question", "candidates",
    "correct_choice" (an index), "duration_group", "question_category", "subtitle_path", ...}``); videos at
    ``<videos>/<video_path>``; with ``subtitles``, each video's subtitle JSON."""
    questions, paths, subtitle_files = [], {}, {}
    for record in load_json_or_jsonl(annotations):
        video = str(record["video_path"])
        paths[video] = videos / video
        if record.get("subtitle_path"):
            subtitle_files[video] = record["subtitle_path"]
        categories = [f"duration/{record['duration_group']}", f"category/{record['question_category']}"]
        options = [c for c in record["candidates"] if c != "N/A"]
        questions.append((video, _question(str(record["id"]), record["question"], options, record["correct_choice"],
                                           categories, encoding="index")))

    def extra(video: str) -> dict[str, Any]:
        if subtitles is None or video not in subtitle_files:
            return {}
        path = subtitles / subtitle_files[video]
        if not path.is_file():
            return {"subtitles": []}
        cues = []
        for cue in json.loads(path.read_text(encoding="utf-8")):
            if "timestamp" in cue:
                start, end = cue["timestamp"]
                cues.append({"start_s": float(start), "end_s": float(end), "text": cue["text"]})
            else:
                start, end = (sum(float(p) * 60 ** i for i, p in enumerate(reversed(t.split(":"))))
                              for t in (cue["start"], cue["end"]))
                cues.append({"start_s": round(start, 3), "end_s": round(end, 3), "text": cue["line"]})
        return {"subtitles": cues}

    return _mc_plan("longvideobench", questions, paths.get, lambda v: str(paths[v]), extra)


def read_mvbench(annotations: Path, videos: Path, **_: Any) -> PackPlan:
    """MVBench: the ``json/`` folder of its 20 task files (lists of ``{"video", "question", "candidates", "answer"
    (the option's text)}``, some with ``start``/``end`` seconds); each task's videos in its release folder under
    ``videos`` (the official names, or lmms-eval's). A task's questions carry the task as their category; bounded
    questions keep their window as ``clip`` [start_s, end_s]."""
    files = sorted(annotations.glob("*.json")) if annotations.is_dir() else [annotations]
    if not files:
        raise LvuError(f"{annotations}: no MVBench task files (*.json)")
    questions, paths = [], {}
    for path in files:
        task = path.stem
        for n, record in enumerate(load_json_or_jsonl(path)):
            name = str(record["video"])
            candidates = [videos / folder / name for folder in MVBENCH_FOLDERS.get(task, ())] + [videos / name]
            found = next((c for c in candidates if c.is_file()), candidates[0])
            clip = [float(record["start"]), float(record["end"])] if "start" in record and "end" in record else None
            if clip and any(part.endswith("_segment") for part in found.parts):
                clip = None  # lmms-eval's copies are already cut to the window: applying it again would miss
            # The same file in two tasks, or with two windows, is two samples: a sample's frames come from one window.
            video = f"{task}/{name}" + (f"@{clip[0]:g}-{clip[1]:g}" if clip else "")
            paths[video] = found
            questions.append((video, _question(f"{task}_{n}", record["question"], list(record["candidates"]),
                                               record["answer"], [task], encoding="text", clip=clip)))
    clips = {video: question["clip"] for video, question in questions if question.get("clip")}

    def window(video: str) -> dict[str, Any]:
        """The sample's frames come from its questions' window (one per sample, see the key above)."""
        return {"clip": clips[video]} if video in clips else {}

    return _mc_plan("mvbench", questions, paths.get, lambda v: str(paths[v]), window)


# --------------------------------------------------------------------------------------------------------------------
# EgoSchema, NExT-QA, PerceptionTest


def read_egoschema(annotations: Path, videos: Path, **_: Any) -> PackPlan:
    """EgoSchema's public subset: the folder holding ``questions.json`` (``q_uid``, ``question``, ``"option 0"`` ...
    ``"option 4"``) and ``subset_answers.json`` (``{q_uid: index}``); only answered questions are packed. Videos
    ``<q_uid>.mp4`` (one video per question)."""
    folder = annotations if annotations.is_dir() else annotations.parent
    answers_file = folder / "subset_answers.json"
    if not answers_file.is_file():
        raise LvuError(f"{folder}: no subset_answers.json (EgoSchema's public answers)")
    answers = json.loads(answers_file.read_text())
    questions = []
    for record in load_json_or_jsonl(folder / "questions.json"):
        uid = str(record["q_uid"])
        if uid in answers:
            options = [str(record[f"option {i}"]) for i in range(5)]
            questions.append((uid, _question(uid, record["question"], options, answers[uid], [], encoding="index")))
    return _mc_plan("egoschema", questions, _by_stem(videos), lambda v: f"named {v}.* under {videos}")


def read_nextqa(annotations: Path, videos: Path, **_: Any) -> PackPlan:
    """NExT-QA multiple choice: ``val.csv`` or ``test.csv`` (``video, frame_count, width, height, question, answer,
    qid, type, a0`` ... ``a4``); videos at ``<videos>/<map_vid_vidorID.json[video]>.mp4`` when that map sits beside
    the CSV, else ``<video>.*`` anywhere under ``videos``. Categories: the question type and its group."""
    mapping_file = annotations.parent / "map_vid_vidorID.json"
    mapping = json.loads(mapping_file.read_text()) if mapping_file.is_file() else {}
    stems = _by_stem(videos)
    questions = []
    with annotations.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            video, kind = row["video"], "TN" if row["type"] == "TP" else row["type"]
            categories = [f"type/{kind}", f"group/{NEXTQA_GROUPS.get(kind[:1], kind[:1])}"]
            options = [row[f"a{i}"] for i in range(5)]
            questions.append((video, _question(f"{video}_{row['qid']}", row["question"], options, row["answer"],
                                               categories, encoding="index")))

    def find(video: str) -> Path | None:
        mapped = videos / f"{mapping[video]}.mp4" if video in mapping else None
        return mapped if mapped is not None and mapped.is_file() else stems(video)

    return _mc_plan("nextqa", questions, find, lambda v: f"{mapping.get(v, v)}.mp4 under {videos}")


def read_perceptiontest(annotations: Path, videos: Path, **_: Any) -> PackPlan:
    """Perception Test multiple-choice QA: ``mc_question_valid.json`` (or ``all_valid.json``), a dict by video id of
    ``{"metadata", "mc_question": [{"id", "question", "options" (3), "answer_id", "area", "reasoning", "tag"}]}``;
    videos ``<video_id>.mp4``. Categories: the question's area and reasoning."""
    data = json.loads(annotations.read_text(encoding="utf-8"))
    questions = []
    for video, record in data.items():
        for qa in record.get("mc_question", []):
            if "answer_id" not in qa:
                continue  # the test split's answers are withheld
            categories = [f"area/{qa['area']}", f"reasoning/{qa['reasoning']}"]
            questions.append((video, _question(f"{video}_{qa['id']}", qa["question"], list(qa["options"]),
                                               qa["answer_id"], categories, encoding="index", tags=qa.get("tag"))))
    return _mc_plan("perceptiontest", questions, _by_stem(videos), lambda v: f"named {v}.* under {videos}")


# --------------------------------------------------------------------------------------------------------------------
# Ego4D-NLQ


def read_ego4d_nlq(annotations: Path, videos: Path, **_: Any) -> PackPlan:
    """Ego4D-NLQ: ``nlq_val.json`` (``videos[].clips[].annotations[].language_queries[]`` with ``query``,
    ``clip_start_sec``, ``clip_end_sec``); one sample per clip, its video ``<clip_uid>.mp4`` (canonical clips), or
    the whole ``<video_uid>.mp4`` with the windows moved by the clip's ``video_start_sec``. Queries without text
    are left out, as the official baselines do, and counted in a warning."""
    data = json.loads(annotations.read_text(encoding="utf-8"))
    stems = _by_stem(videos)
    items, untexted = [], 0
    for video in data.get("videos", []):
        for clip in video.get("clips", []):
            clip_uid, video_uid = str(clip["clip_uid"]), str(video["video_uid"])
            path, offset = stems(clip_uid), 0.0
            if path is None and stems(video_uid) is not None:
                path, offset = stems(video_uid), float(clip.get("video_start_sec", 0.0))
            segments = []
            for annotation in clip.get("annotations", []):
                for n, query in enumerate(annotation.get("language_queries", [])):
                    if not query.get("query"):
                        untexted += 1
                        continue
                    segments.append({"uid": f"{annotation['annotation_uid']}_{n}", "query": query["query"],
                                     "start_s": round(float(query["clip_start_sec"]) + offset, 3),
                                     "end_s": round(float(query["clip_end_sec"]) + offset, 3)})
            if segments:
                items.append(_video_item(clip_uid, {"segments": segments, "source": "ego4d_nlq", "video_id": video_uid,
                                                    "clip_uid": clip_uid, "clip_offset_s": offset},
                                         path, f"named {clip_uid}.* or {video_uid}.* under {videos}"))
    warnings = [f"{untexted} language queries have no text and are left out"] if untexted else []
    return PackPlan(items, warnings=warnings)


READERS: dict[str, Callable[..., PackPlan]] = {
    "videomme": read_videomme,
    "mlvu": read_mlvu,
    "longvideobench": read_longvideobench,
    "lvbench": read_lvbench,
    "mvbench": read_mvbench,
    "egoschema": read_egoschema,
    "nextqa": read_nextqa,
    "perceptiontest": read_perceptiontest,
    "ego4d_nlq": read_ego4d_nlq,
}
