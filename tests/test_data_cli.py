"""`lvu data synth|pack|inspect|concat|index` end to end on synthetic and hand-made inputs."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import eval_args
from PIL import Image

from lvu.cli import main
from lvu.data.decoders import VideoDecoder, open_video
from lvu.data.sampling import SamplerConfig, SamplerName
from lvu.data.shards import Manifest, ShardReader, resolve_shards
from lvu.data.synth import ACT_ORDERS, SCENE_NAMES, read_timecode

SYNTH_ARGS = ["--videos", "5", "--seconds", "12", "20", "--fps", "8", "--size", "64x48", "--maxcount", "2"]


def _samples(folder: Path) -> list[dict]:
    shards = resolve_shards(str(folder))
    reader = ShardReader(shards)
    return [reader.read(s, i) for s in range(len(shards)) for i in range(shards[s].samples)]


def test_synth_is_reproducible_and_annotations_follow_the_drawing(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "a"), *SYNTH_ARGS, "--seed", "4", "--workers", "2"]) == 0
    assert "synthesised 5 sample(s), skipped 0" in capsys.readouterr().out
    assert main(["data", "synth", str(tmp_path / "b"), *SYNTH_ARGS, "--seed", "4"]) == 0
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert main(["data", "synth", str(tmp_path / "c"), *SYNTH_ARGS, "--seed", "5"]) == 0
    assert (tmp_path / "a" / "shard-000000.tar").read_bytes() != (tmp_path / "c" / "shard-000000.tar").read_bytes()
    assert Manifest.load(tmp_path / "a").total == 5

    label_maps = json.loads((tmp_path / "a" / "label_maps.json").read_text())
    assert label_maps["act_order"]["classes"] == ACT_ORDERS and label_maps["event_count"] == {"type": "regression"}
    for raw in _samples(tmp_path / "a"):
        ann = json.loads(raw["json"])
        truth = ann["synth"]
        places = [a["scene_type"] for a in truth["acts"]]
        assert ann["labels"]["first_scene"] == places[0]
        ranks = np.argsort(np.argsort([SCENE_NAMES.index(p) for p in places]))
        assert ann["labels"]["act_order"] == f"order-{''.join(map(str, ranks))}"
        assert ann["labels"]["event_count"] == len(truth["events"])
        assert ann["conversations"][0]["from"] == "human" and ann["conversations"][0]["value"].startswith("<video>\n")
        for q in ann["mc"]:
            assert len(q["options"]) == 4 and q["answer"] in "ABCD" and set(q["categories"]) <= {
                "KIR", "EU", "Sum", "ER", "Rea", "TG"}
        first = ann["mc"][0]
        assert first["options"]["ABCD".index(first["answer"])] == places[0]
        assert [s["start_s"] for s in ann["segments"][:3]] == [a["start_s"] for a in truth["acts"]]
        # The drawn video agrees with the annotation: duration, frame count and timecode.
        video = open_video(raw)
        assert video.info.duration_s == pytest.approx(ann["duration_s"])
        last = video.info.num_frames - 1
        assert read_timecode(video.read([last])[0]) == last


def test_synth_rejects_bad_arguments(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "x"), "--videos", "2", "--size", "63x48"]) == 1
    assert "even width" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "x"), "--videos", "2", "--seconds", "9", "3"]) == 1
    with pytest.raises(SystemExit):
        main(["data", "synth", str(tmp_path / "x"), "--videos", "2", "--size", "big"])


@pytest.fixture
def media(synth_shards, tmp_path) -> Path:
    """A folder with three real mp4s, a corrupt one and an image, named like real datasets name them."""
    folder = tmp_path / "media"
    folder.mkdir()
    for n, raw in enumerate(_samples(synth_shards)[:3]):
        (folder / f"vid{n}.mp4").write_bytes(raw["mp4"])
    (folder / "broken.mp4").write_bytes(b"this is not a video" * 50)
    Image.new("RGB", (20, 10), (255, 0, 0)).save(folder / "img0.jpg")
    return folder


def _skips(out: Path) -> dict[str, str]:
    return {r["item"]: r["reason"] for r in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}


def test_pack_llava_with_missing_corrupt_image_and_text_only_entries(media, tmp_path, capsys):
    entries = [
        {"id": "a", "video": "vid0.mp4", "conversations": [{"from": "human", "value": "<video>\nWhat?"},
                                                            {"from": "gpt", "value": "Shapes."}]},
        {"id": "b", "video": "missing.mp4", "conversations": []},
        {"id": "c", "video": "broken.mp4", "conversations": []},
        {"id": "d", "image": "img0.jpg", "conversations": [{"from": "human", "value": "<image>\nColour?"}]},
        {"id": "e", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "a", "video": "vid1.mp4", "conversations": []},
        {"id": "f", "video": "vid1.mp4", "caption": "Two shapes bounce."},
    ]
    (tmp_path / "llava.json").write_text(json.dumps(entries))
    out = tmp_path / "packed"
    assert main(["data", "pack", "--format", "llava", "--videos", str(media), "--annotations",
                 str(tmp_path / "llava.json"), "--out", str(out), "--workers", "2", "--maxcount", "2"]) == 0
    assert "packed 5 sample(s), skipped 2" in capsys.readouterr().out
    assert _skips(out) == {"b": "missing_video", "c": "undecodable_video"}
    samples = {raw["__key__"]: raw for raw in _samples(out)}
    assert sorted(samples) == ["a", "a_1", "d", "e", "f"]  # duplicate ids get a suffix, order is the file's
    assert json.loads(samples["f"]["json"])["caption"] == "Two shapes bounce."  # video-text pairs keep captions
    first = json.loads(samples["a"]["json"])
    assert first["conversations"][1]["value"] == "Shapes." and first["duration_s"] > 10 and first["fps"] == 8
    assert "jpg" in samples["d"] and set(samples["e"]) == {"__key__", "__shard__", "__index__", "__path__", "json"}


def test_pack_lvu_builds_label_maps_over_all_splits_and_regression_targets(media, tmp_path, capsys):
    ann = tmp_path / "lvu"
    for task, split, rows in [
        ("director", "train", ["0 nolan vid0 tt1", "2 kubrick vid1 tt2"]),
        ("director", "test", ["1 lynch vid2 tt3"]),
        ("like_ratio", "val", ["90 10 vid0 tt1"]),
        ("view_count", "train", ["1000000 vid1 tt2"]),
        ("genre", "train", ["3 science fiction vid9 tt9"]),
        ("way_speaking", "train", ["0 confident vid1 tt2", "1 loud vid0 tt1"]),  # the release's folder name
    ]:
        (ann / task).mkdir(parents=True, exist_ok=True)
        header = {"like_ratio": "like dislike youtube_id imdb_id", "view_count": "views youtube_id imdb_id"}.get(
            task, "class_id class_name youtube_id imdb_id")
        (ann / task / f"{split}.csv").write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "lvu_shards"
    pack = ["data", "pack", "--format", "lvu", "--videos", str(media), "--annotations", str(ann), "--out", str(out)]
    # Tasks and splits the release has but this folder lacks are an error that lists every one of them...
    assert main(pack) == 1
    error = capsys.readouterr().err
    assert "21 LVU annotation files missing: relationship/train.csv," in error and "--allow-missing-tasks" in error
    assert "way_speaking/val.csv" in error and "way_speaking/train.csv" not in error
    assert not out.exists()
    assert main([*pack, "--allow-missing-tasks"]) == 1  # genre ids 0-2 are missing: a broken label map is an error
    (ann / "genre" / "train.csv").unlink()
    (ann / "genre").rmdir()
    # ...or, when allowed, a warning that lists them, also kept in the manifest.
    assert main([*pack, "--allow-missing-tasks"]) == 0
    assert "warning: " in capsys.readouterr().err and "genre/train.csv" in (out / "manifest.json").read_text()
    maps = json.loads((out / "label_maps.json").read_text())
    assert maps["way_speaking"] == {"type": "classification", "classes": ["confident", "loud"]}
    assert maps["director"] == {"type": "classification", "classes": ["nolan", "lynch", "kubrick"]}
    assert maps["like_ratio"] == {"type": "regression"} and maps["view_count"] == {"type": "regression"}
    labels = {raw["__key__"]: json.loads(raw["json"]) for raw in _samples(out)}
    assert labels["vid0"]["labels"]["like_ratio"] == pytest.approx(90 / 100 * 10 - 9.138)
    assert labels["vid1"]["labels"]["view_count"] == pytest.approx(math.log(1e6) - 11.764)
    assert labels["vid2"]["splits"] == {"director": "test"} and labels["vid0"]["splits"]["like_ratio"] == "val"
    # A folder renamed to the name lvu once expected still packs as the release's task.
    (ann / "way_speaking").rename(ann / "speaking_style")
    assert main([*pack, "--allow-missing-tasks"]) == 0
    assert json.loads((out / "label_maps.json").read_text())["way_speaking"]["classes"] == ["confident", "loud"]


def test_pack_lvbench_and_grounding(media, tmp_path, eval_host):
    record = {"key": "vid1", "qa": [{"uid": 7, "question": "What is shown?\n(A) a dog\n(B) a square\n(C) rain\n"
                                     "(D) a car", "answer": "B", "question_type": ["entity recognition",
                                                                                    "key information retrieval"],
                                     "time_reference": "00:03-00:05"}]}
    (tmp_path / "lvbench.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["data", "pack", "--format", "lvbench", "--videos", str(media), "--annotations",
                 str(tmp_path / "lvbench.jsonl"), "--out", str(tmp_path / "lvb")]) == 0
    (question,) = json.loads(_samples(tmp_path / "lvb")[0]["json"])["mc"]
    assert question["question"] == "What is shown?" and question["options"] == ["a dog", "a square", "rain", "a car"]
    assert question["answer"] == "B" and question["categories"] == ["ER", "KIR"]
    assert main(["eval", *eval_args(eval_host, tmp_path / "lvb", tmp_path / "lvb-eval", "eval=lvbench")]) == 0
    results = json.loads((tmp_path / "lvb-eval" / "results.json").read_text())
    (answer,) = [json.loads(line) for line in (tmp_path / "lvb-eval" / "answers.jsonl").read_text().splitlines()]
    assert results["metrics"]["questions"] == 1 and {"accuracy/ER", "accuracy/KIR"} <= set(results["metrics"])
    assert answer["uid"] == "vid1/7" and answer["prompt"] == (
        "What is shown?\n(A) a dog\n(B) a square\n(C) rain\n(D) a car\nAnswer the question with the option letter")

    lines = [{"video": "vid2.mp4", "query": "a star", "start_s": 1.0, "end_s": 2.0},
             {"video": "vid2.mp4", "query": "a flash", "start": 4, "end": 5},
             {"video": "gone.mp4", "query": "x", "start_s": 0, "end_s": 1}]
    (tmp_path / "g.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    assert main(["data", "pack", "--format", "grounding", "--videos", str(media), "--annotations",
                 str(tmp_path / "g.jsonl"), "--out", str(tmp_path / "g")]) == 0
    (sample,) = _samples(tmp_path / "g")
    assert json.loads(sample["json"])["segments"][1] == {"query": "a flash", "start_s": 4.0, "end_s": 5.0}
    assert _skips(tmp_path / "g") == {"gone.mp4": "missing_video"}


def test_inspect_reports_counts_durations_kinds_and_unreadable(synth_shards, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(synth_shards, folder)
    from lvu.data.shards import write_shard

    write_shard(folder / "extra.tar", [("bad1", {"mp4": b"garbage" * 20, "json": {"caption": "x"}})])
    args = ["data", "inspect", str(folder), str(folder / "extra.tar"), "--json", "--grid", str(tmp_path / "sheet.png"),
            "--grid-rows", "3", "--grid-columns", "4"]
    assert main(args) == 1  # an unreadable sample: a job script's `lvu data inspect ... &&` stops here
    assert "1 of 11 samples are unreadable" in capsys.readouterr().err
    assert main([*args, "--allow-bad"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 11 and report["unreadable"] == 1 and report["readable"] == 10
    assert report["unreadable_samples"][0]["key"] == "bad1"
    assert report["unreadable_by_reason"] == {"undecodable_video": 1}
    durations = report["duration_s"]
    assert durations["count"] == 10 and 12 <= durations["min"] <= durations["max"] <= 24
    assert report["annotation_kinds"]["mc"] == 10 and report["annotation_kinds"]["caption"] == 11
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.size[1] == 3 * (96 + 2) and sheet.size[0] > 4 * 96
    assert main(["data", "inspect", str(synth_shards)]) == 0
    text = capsys.readouterr().out
    assert "samples       10 (readable 10, unreadable 0)" in text and "label tasks   act_order x10" in text


@pytest.mark.parametrize("join", ["mp4", "parts"])
def test_concat_builds_long_videos_with_timed_captions(synth_shards, tmp_path, join):
    """Each clip one scene of a long video with its time range in the caption; stored as one re-encoded mp4 (what
    any tool reads) or as the clips' own bytes; either way the loader sees the clips' frames at those times."""
    out = tmp_path / "long"
    assert main(["data", "concat", str(synth_shards), str(out), "--minutes", "0.5", "1.0", "--seed", "1",
                 "--join", join]) == 0
    longs = _samples(out)
    assert longs
    for raw in longs:
        ann = json.loads(raw["json"])
        assert 30 <= ann["duration_s"] <= 60
        parts = ann["parts"]
        members = [k for k in raw if k.startswith("part") or k == "mp4"]
        assert members == (["mp4"] if join == "mp4" else [f"part{i:03d}.mp4" for i in range(len(parts))])
        assert parts[0]["start_s"] == 0 and all(a["end_s"] == b["start_s"] for a, b in itertools.pairwise(parts))
        assert ann["caption"].splitlines()[1].startswith(f"{parts[1]['start_s']:.1f}s-{parts[1]['end_s']:.1f}s: ")
        # The loader decodes the composite on the same timeline: a frame sampled in part 1 shows part 1's frame.
        decoded = VideoDecoder(SamplerConfig(name=SamplerName.fps, fps=8, num_frames=100000))(raw,
                                                                                           np.random.default_rng(0))
        times = decoded["timestamps"]
        inside = np.flatnonzero((times >= parts[1]["start_s"]) & (times < parts[1]["end_s"]))
        local = times[inside[3]] - parts[1]["start_s"]
        assert read_timecode(decoded["frames"][inside[3]].numpy()) == round(local * 8)
        assert decoded["duration_s"] == pytest.approx(ann["duration_s"], abs=1e-3)
    assert main(["data", "concat", str(synth_shards), str(tmp_path / "x"), "--minutes", "60", "90"]) == 1


def test_index_writes_a_manifest_for_foreign_shards(synth_shards, tmp_path, capsys):
    folder = tmp_path / "foreign"
    folder.mkdir()
    for tar in synth_shards.glob("*.tar"):
        shutil.copy(tar, folder / f"x-{tar.name}")
    assert main(["data", "index", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 10
    assert Manifest.load(folder).total == 10


def test_long_video_groups_use_each_part_once_and_keep_a_long_enough_tail():
    from lvu.data.concat import plan_long_videos

    durations = np.full(20, 10.0)
    groups = plan_long_videos(durations, 25, 40, seed=0)
    used = [p for g in groups for p in g]
    assert len(used) == len(set(used))
    assert all(25 <= durations[g].sum() <= 40 for g in groups)
    assert sum(durations[g].sum() for g in groups) >= 200 - 30  # at most one short group left over


def test_bad_counts_are_one_line_errors(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "x"), "--videos", "0"]) == 1
    assert capsys.readouterr().err.strip() == "lvu: error: --videos must be positive, got 0"
    assert main(["data", "synth", str(tmp_path / "x"), "--videos", "2", "--maxcount", "0"]) == 1
    assert capsys.readouterr().err.strip() == "lvu: error: --maxcount must be positive, got 0"
