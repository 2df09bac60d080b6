"""``lvu data pack --format BENCH``: each benchmark's released annotation layout, written here in miniature (field
names, nesting, answer encodings and video folders as released), with real synthetic videos; then ``lvu eval`` of
the packed shards with the benchmark's preset (a tiny random video-LLM: the path, the prompt and the counts are
checked, not the accuracy)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import eval_args

from lvu.cli import main
from lvu.data.shards import iter_samples, resolve_shards


@pytest.fixture(scope="module")
def clip(synth_shards) -> bytes:
    """One real mp4 (a synthetic video), written under every name a benchmark expects."""
    return next(iter_samples(resolve_shards(str(synth_shards)), exts=("mp4",)))["mp4"]


def _put(clip: bytes, *paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(clip)


def _pack(fmt: str, videos: Path, annotations: Path, out: Path, *extra: str) -> list[dict]:
    assert main(["data", "pack", "--format", fmt, "--videos", str(videos), "--annotations", str(annotations),
                 "--out", str(out), *extra]) == 0
    return [json.loads(s["json"]) for s in iter_samples(resolve_shards(str(out)), exts=("json",))]


def _score(host: Path, shards: Path, preset: str, *extra: str) -> tuple[dict, list[dict]]:
    """``lvu eval`` of the packed shards: results.json and the answers, after checking the command's exit code."""
    folder = shards.parent / f"eval-{preset}"
    assert main(["eval", *eval_args(host, shards, folder, f"eval={preset}", *extra)]) == 0
    answers = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    return json.loads((folder / "results.json").read_text()), answers


def _skipped(out: Path) -> dict[str, str]:
    path = out / "skipped.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {r["item"]: r["reason"] for r in map(json.loads, lines)}


def test_the_cli_lists_exactly_the_formats_pack_reads():
    from lvu.cli.data import PACK_FORMATS
    from lvu.data.pack import FORMATS

    assert sorted(PACK_FORMATS) == sorted(FORMATS)


def test_videomme_parquet_with_subtitles(clip, tmp_path, eval_host):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
         "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
         "task_type": "Counting Problem", "question": "Which kind of decoration has the largest number?",
         "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
         "answer": "C"},
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
         "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-2",
         "task_type": "Object Recognition", "question": "What is on top?",
         "options": ["A. A star.", "B. A bell.", "C. A hat.", "D. Nothing."], "answer": "A"},
        {"video_id": "601", "duration": "long", "domain": "Sports", "sub_category": "Football",
         "url": "https://www.youtube.com/watch?v=missing0001", "videoID": "missing0001", "question_id": "601-1",
         "task_type": "Temporal Reasoning", "question": "When?", "options": ["A. 1", "B. 2", "C. 3", "D. 4"],
         "answer": "D"},
    ]
    (tmp_path / "videomme").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "videomme" / "test-00000-of-00001.parquet")
    _put(clip, tmp_path / "data" / "fFjv93ACGo8.mp4")
    (tmp_path / "subtitle").mkdir()
    (tmp_path / "subtitle" / "fFjv93ACGo8.srt").write_text(
        '1\n00:00:01,500 --> 00:00:03,000\n<font color="white" size=".72c">Here is the tree</font>\n\n'
        '2\n00:00:03,200 --> 00:00:04,000\n<font color="white" size=".72c">with candles</font>\n')
    (sample,) = _pack("videomme", tmp_path / "data", tmp_path / "videomme" / "test-00000-of-00001.parquet",
                      tmp_path / "out", "--subtitles", str(tmp_path / "subtitle"))
    first, second = sample["mc"]
    assert first == {"uid": "001-1", "question": "Which kind of decoration has the largest number?",
                     "options": ["Apples.", "Candles.", "Berries.", "The three kinds are of the same number."],
                     "answer": "C", "categories": ["duration/short", "domain/Knowledge", "task/Counting Problem"]}
    assert second["answer"] == "A" and sample["video_id"] == "fFjv93ACGo8" and sample["source"] == "videomme"
    assert sample["subtitles"] == [{"start_s": 1.5, "end_s": 3.0, "text": "Here is the tree"},
                                   {"start_s": 3.2, "end_s": 4.0, "text": "with candles"}]
    assert _skipped(tmp_path / "out") == {"missing0001": "missing_video"}
    results, answers = _score(eval_host, tmp_path / "out", "videomme_subs", "data.eval_frames=12")
    assert results["metrics"]["questions"] == 2 and results["subtitles"] is True
    assert {a["uid"] for a in answers} == {"fFjv93ACGo8/001-1", "fFjv93ACGo8/001-2"}
    assert answers[0]["prompt"].startswith("This video's subtitles are listed below:\n")
    assert "accuracy/duration/short" in results["metrics"] and "accuracy/task/Counting Problem" in results["metrics"]


def test_videomme_official_json(clip, tmp_path, eval_host):
    videos = [{"video_id": "001", "duration_category": "medium", "video_category": "Film & Television",
               "video_subcategory": "Animation", "url": "https://www.youtube.com/watch?v=abcdefghijk",
               "questions": [{"question_id": "001-1", "task_type": "Action Recognition", "question": "Who runs?",
                              "choices": ["A. a cat", "B. a dog", "C. a fox", "D. nobody"], "answer": "B"}]}]
    (tmp_path / "videomme.json").write_text(json.dumps(videos))
    _put(clip, tmp_path / "data" / "abcdefghijk.mp4")
    (sample,) = _pack("videomme", tmp_path / "data", tmp_path / "videomme.json", tmp_path / "out")
    (question,) = sample["mc"]
    assert question["options"] == ["a cat", "a dog", "a fox", "nobody"] and question["answer"] == "B"
    assert question["categories"] == ["duration/medium", "domain/Film & Television", "task/Action Recognition"]
    results, _ = _score(eval_host, tmp_path / "out", "videomme")
    assert results["metrics"]["questions"] == 1 and "accuracy/domain/Film & Television" in results["metrics"]


def test_mlvu_json_folder_with_text_answers(clip, tmp_path, eval_host):
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "5_order.json").write_text(json.dumps([
        {"video": "order_126.mp4", "duration": 665.34, "question": "Arrange the following events ...",
         "candidates": ["2->1->3->4", "3->2->1->4", "4->3->2->1", "1->2->3->4"], "answer": "1->2->3->4",
         "question_type": "order"}]))
    (tmp_path / "json" / "2_needle.json").write_text(json.dumps([
        {"video": "needle_3.mp4", "duration": 300.0, "question": "What does the man hold?",
         "candidates": ["a cup", "a pen", "a phone", "a book"], "answer": "a pen", "question_type": "findNeedle"}]))
    _put(clip, tmp_path / "video" / "5_order" / "order_126.mp4", tmp_path / "video" / "2_needle" / "needle_3.mp4")
    samples = _pack("mlvu", tmp_path / "video", tmp_path / "json", tmp_path / "out")
    by_video = {s["video_id"]: s["mc"][0] for s in samples}
    assert by_video["needle_3.mp4"]["answer"] == "B" and by_video["needle_3.mp4"]["categories"] == ["findNeedle"]
    assert by_video["order_126.mp4"]["answer"] == "D" and by_video["order_126.mp4"]["categories"] == ["order"]
    results, answers = _score(eval_host, tmp_path / "out", "mlvu")
    assert results["metrics"]["questions"] == 2 and results["headline"] == "mean"
    assert results["metrics"]["mean"] == pytest.approx((results["metrics"]["accuracy/order"] +
                                                        results["metrics"]["accuracy/findNeedle"]) / 2)
    assert all(a["prompt"].endswith("Only give the best option.\nBest option: (") for a in answers)


def test_longvideobench_val_with_index_answers_and_subtitles(clip, tmp_path, eval_host):
    record = {"video_id": "soNQYQXrx_A", "question": "What happens to his clothes?",
              "question_wo_referring_query": "What happens to this man's clothes?",
              "candidates": ["He puts on a jacket.", "He takes off his hat.", "He is shirtless."],
              "correct_choice": 2, "position": [4030, 7571], "topic_category": "Recreational: MR-Movie-Recaps",
              "question_category": "TAA", "level": "L2-Relation", "id": "soNQYQXrx_A_1",
              "video_path": "soNQYQXrx_A.mp4", "subtitle_path": "soNQYQXrx_A_en.json", "duration_group": 600,
              "starting_timestamp_for_subtitles": 0, "duration": 563.37, "view_count": 93803}
    (tmp_path / "lvb_val.json").write_text(json.dumps([record]))
    _put(clip, tmp_path / "videos" / "soNQYQXrx_A.mp4")
    (tmp_path / "subtitles").mkdir()
    (tmp_path / "subtitles" / "soNQYQXrx_A_en.json").write_text(json.dumps([
        {"start": "00:00:01.500", "end": "00:00:02.250", "line": "driven out of the world"},
        {"timestamp": [3.0, 4.5], "text": "and back"}]))
    (sample,) = _pack("longvideobench", tmp_path / "videos", tmp_path / "lvb_val.json", tmp_path / "out",
                      "--subtitles", str(tmp_path / "subtitles"))
    (question,) = sample["mc"]
    assert question["answer"] == "C" and question["uid"] == "soNQYQXrx_A_1"
    assert question["categories"] == ["duration/600", "category/TAA"]
    assert sample["subtitles"] == [{"start_s": 1.5, "end_s": 2.25, "text": "driven out of the world"},
                                   {"start_s": 3.0, "end_s": 4.5, "text": "and back"}]
    results, _ = _score(eval_host, tmp_path / "out", "longvideobench")
    assert results["metrics"]["questions"] == 1 and "accuracy/category/TAA" in results["metrics"]


def test_mvbench_task_files_find_each_tasks_release_folder(clip, tmp_path, eval_host):
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "action_antonym.json").write_text(json.dumps([
        {"video": "166583.webm", "question": "What is the action performed by the person in the video?",
         "candidates": ["Not sure", "Scattering something down", "Piling something up"],
         "answer": "Piling something up"}]))
    (tmp_path / "json" / "action_sequence.json").write_text(json.dumps([
        {"video": "ZS9XR.mp4", "question": "What happened after the person took the cup?",
         "candidates": ["Put down the cup.", "Opened the door."], "answer": "Opened the door.", "start": 11.1,
         "end": 19.6},
        {"video": "ZS9XR.mp4", "question": "What happened before the person sat down?",
         "candidates": ["Took a book.", "Closed the window."], "answer": "Took a book.", "start": 1.0, "end": 4.0}]))
    _put(clip, tmp_path / "video" / "ssv2_video" / "166583.webm", tmp_path / "video" / "star" / "Charades_v1_480" /
         "ZS9XR.mp4")
    packed = {s["video_id"]: s for s in _pack("mvbench", tmp_path / "video", tmp_path / "json", tmp_path / "out")}
    samples = {video: sample["mc"][0] for video, sample in packed.items()}
    assert samples["action_antonym/166583.webm"]["answer"] == "C"
    assert samples["action_antonym/166583.webm"]["categories"] == ["action_antonym"]
    bounded = samples["action_sequence/ZS9XR.mp4@11.1-19.6"]
    assert bounded["answer"] == "B" and bounded["clip"] == [11.1, 19.6]
    # One sample per window, its frames from that window only (evaluation).
    assert packed["action_sequence/ZS9XR.mp4@11.1-19.6"]["clip"] == [11.1, 19.6]
    assert packed["action_sequence/ZS9XR.mp4@1-4"]["clip"] == [1.0, 4.0]
    assert "clip" not in packed["action_antonym/166583.webm"]
    results, answers = _score(eval_host, tmp_path / "out", "mvbench")
    assert results["metrics"]["questions"] == 3 and "accuracy/action_sequence" in results["metrics"]
    late, early = (next(a for a in answers if a["question"].startswith(q)) for q in ("What happened after",
                                                                                   "What happened before"))
    whole = next(a for a in answers if a["uid"].startswith("action_antonym"))
    assert all(11.1 <= t <= 19.6 for t in late["frame_times"]) and all(1.0 <= t <= 4.0 for t in early["frame_times"])
    assert whole["frame_times"][0] < 1.0 < whole["frame_times"][-1]
    # lmms-eval's copies of the bounded tasks are already cut to the window: no window is applied to them again.
    _put(clip, tmp_path / "cut" / "star" / "Charades_segment" / "ZS9XR.mp4")
    (recut,) = [s for s in _pack("mvbench", tmp_path / "cut", tmp_path / "json", tmp_path / "out-cut")
                if s["video_id"].startswith("action_sequence/ZS9XR.mp4")][:1]
    assert "clip" not in recut and "clip" not in recut["mc"][0]
    assert all(a["prompt"].endswith("\nOnly give the best option.") for a in answers)


def test_egoschema_packs_only_the_answered_subset(clip, tmp_path, eval_host):
    questions = [{"q_uid": uid, "google_drive_id": "x", "question": f"What is C doing in video {n}?",
                  **{f"option {i}": f"C does thing {i}" for i in range(5)}}
                 for n, uid in enumerate(["001934bb-81bd-4cd8-a574-0472ef3f6678", "0074f737-11cb-497d-8d07"])]
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    (tmp_path / "subset_answers.json").write_text(json.dumps({"0074f737-11cb-497d-8d07": 3}))
    _put(clip, tmp_path / "videos" / "0074f737-11cb-497d-8d07.mp4",
         tmp_path / "videos" / "001934bb-81bd-4cd8-a574-0472ef3f6678.mp4")
    (sample,) = _pack("egoschema", tmp_path / "videos", tmp_path, tmp_path / "out")
    (question,) = sample["mc"]
    assert question["answer"] == "D" and question["options"][3] == "C does thing 3" and question["categories"] == []
    results, answers = _score(eval_host, tmp_path / "out", "egoschema", "eval.mode=likelihood")
    assert results["metrics"]["questions"] == 1 and len(answers[0]["logprobs"]) == 5


def test_nextqa_csv_with_the_vidor_map(clip, tmp_path, eval_host):
    header = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3",
              "a4"]
    rows = [["4010069381", "369", "640", "480", "how do the two man play the instrument", "2", "6", "CH",
             "roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand"],
            ["4010069381", "369", "640", "480", "what did the man do after he stood up", "0", "7", "TP",
             "walk away", "sit", "jump", "sing", "wave"]]
    with (tmp_path / "val.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    (tmp_path / "map_vid_vidorID.json").write_text(json.dumps({"4010069381": "1020/4010069381"}))
    _put(clip, tmp_path / "NExTVideo" / "1020" / "4010069381.mp4")
    (sample,) = _pack("nextqa", tmp_path / "NExTVideo", tmp_path / "val.csv", tmp_path / "out")
    how, after = sample["mc"]
    assert how["uid"] == "4010069381_6" and how["answer"] == "C"
    assert how["categories"] == ["type/CH", "group/Causal"]
    assert after["categories"] == ["type/TN", "group/Temporal"]  # TP is counted as TN (eval_mc.py)
    results, _ = _score(eval_host, tmp_path / "out", "nextqa")
    assert results["metrics"]["questions"] == 2 and "accuracy/group/Causal" in results["metrics"]


def test_perceptiontest_mc_questions(clip, tmp_path, eval_host):
    data = {"video_10909": {"metadata": {"split": "valid", "video_id": "video_10909", "frame_rate": 30,
                                         "num_frames": 900, "resolution": [1080, 1920]},
                            "mc_question": [{"id": 0, "question": "Is the camera moving or static?",
                                             "options": ["I don't know", "moving", "static or shaking"],
                                             "answer_id": 2, "area": "physics", "reasoning": "descriptive",
                                             "tag": ["motion"]}]}}
    (tmp_path / "mc_question_valid.json").write_text(json.dumps(data))
    _put(clip, tmp_path / "videos" / "video_10909.mp4")
    (sample,) = _pack("perceptiontest", tmp_path / "videos", tmp_path / "mc_question_valid.json", tmp_path / "out")
    (question,) = sample["mc"]
    assert question["answer"] == "C" and question["categories"] == ["area/physics", "reasoning/descriptive"]
    assert question["tags"] == ["motion"]
    results, _ = _score(eval_host, tmp_path / "out", "perceptiontest")
    assert results["metrics"]["questions"] == 1 and "accuracy/area/physics" in results["metrics"]


def test_ego4d_nlq_clips_and_whole_videos(clip, tmp_path, capsys, eval_host):
    data = {"version": "v1", "date": "220204", "description": "NLQ val", "videos": [
        {"video_uid": "d250521e", "clips": [
            {"clip_uid": "fae92e70", "video_start_sec": 0.0210286, "video_end_sec": 480.0210286, "annotations": [
                {"annotation_uid": "f3083484", "language_queries": [
                    {"clip_start_sec": 1.0, "clip_end_sec": 4.5, "query": "How many pans can I see on the shelf?"},
                    {"clip_start_sec": 2.0, "clip_end_sec": 3.0}]}]}]},
        {"video_uid": "whole0001", "clips": [
            {"clip_uid": "clipnofile", "video_start_sec": 10.0, "video_end_sec": 490.0, "annotations": [
                {"annotation_uid": "a2", "language_queries": [
                    {"clip_start_sec": 2.0, "clip_end_sec": 3.0, "query": "Where did I put the keys?"}]}]}]}]}
    (tmp_path / "nlq_val.json").write_text(json.dumps(data))
    _put(clip, tmp_path / "videos" / "fae92e70.mp4", tmp_path / "videos" / "whole0001.mp4")
    samples = {s["clip_uid"]: s for s in _pack("ego4d_nlq", tmp_path / "videos", tmp_path / "nlq_val.json",
                                                tmp_path / "out")}
    assert samples["fae92e70"]["segments"] == [{"uid": "f3083484_0", "query": "How many pans can I see on the shelf?",
                                                "start_s": 1.0, "end_s": 4.5}]
    # No clip file: the whole video, the window moved by where the clip starts in it.
    assert samples["clipnofile"]["segments"][0]["start_s"] == 12.0 and samples["clipnofile"]["clip_offset_s"] == 10.0
    assert "1 language queries have no text" in capsys.readouterr().err
    results, answers = _score(eval_host, tmp_path / "out", "ego4d_nlq")
    assert results["metrics"]["queries"] == 2 and results["headline"] == "R@1,IoU=0.3"
    # One window per query from a video-LLM: no R@5 of ours beside the papers' ranked windows.
    assert {"R@1,IoU=0.3", "R@1,IoU=0.5"} <= set(results["metrics"]) and "R@5,IoU=0.3" not in results["metrics"]
    assert {a["uid"] for a in answers} == {"fae92e70/f3083484_0", "clipnofile/a2_0"}
    assert all("Give its start and end time in seconds" in a["prompt"] and a["target"] for a in answers)
    hits = sum(bool(a["windows"]) for a in answers)  # a random model rarely writes two numbers: misses, counted
    assert results["metrics"]["no_window"] == 2 - hits


def test_counting_answers_are_option_texts_and_answers_naming_no_option_are_refused(clip, tmp_path, capsys):
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "action_count.json").write_text(json.dumps([
        {"video": "a.mp4", "question": "How many?", "candidates": ["3", "0", "2"], "answer": "2"}]))
    _put(clip, tmp_path / "video" / "perception" / "videos" / "a.mp4")
    (sample,) = _pack("mvbench", tmp_path / "video", tmp_path / "json", tmp_path / "out")
    assert sample["mc"][0]["answer"] == "C"  # the option "2", not index 2 (which would also be C) ...
    (tmp_path / "json" / "action_count.json").write_text(json.dumps([
        {"video": "a.mp4", "question": "How many?", "candidates": ["2", "0", "1"], "answer": "1"}]))
    (sample,) = _pack("mvbench", tmp_path / "video", tmp_path / "json", tmp_path / "out2")
    assert sample["mc"][0]["answer"] == "C"  # ... here index 1 would be B
    for bad, n in ((["1", "2"], "7"), (["3", "0", "2"], "1")):  # "1" is no option here, and not an index either
        (tmp_path / "json" / "action_count.json").write_text(json.dumps([
            {"video": "a.mp4", "question": "How many?", "candidates": bad, "answer": n}]))
        assert main(["data", "pack", "--format", "mvbench", "--videos", str(tmp_path / "video"), "--annotations",
                     str(tmp_path / "json"), "--out", str(tmp_path / f"out_{n}")]) == 1
        assert f"answer '{n}' is not one of its {len(bad)} options (this benchmark gives answers as a text)" in \
            capsys.readouterr().err
