"""``lvu eval``: benchmark questions answered by a video-LLM in the benchmark's prompt, each exactly once across
ranks, streamed to JSON lines, resumed after a kill, scored over every question, written as results.json and a
Markdown table beside the papers' numbers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import eval_args
from support.hosts import FRAME

from lvu.cli import main
from lvu.config import load_recipe
from lvu.errors import LvuError
from lvu.tasks.host_lm import HostLMTask, MediaBatch
from lvu.tasks.host_lm.conversation import Conversation, Turn
from lvu.train.evaluate import evaluate


def _answers(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]


def _mc_count(shards: Path) -> int:
    from lvu.data.loader import SampleSet
    from lvu.data.shards import resolve_shards

    count = []
    SampleSet(resolve_shards([str(shards)])).select(lambda a: count.append(len(a["mc"])) and False)
    return sum(count)


def test_eval_answers_every_question_once_and_writes_results(eval_host, synth_shards, tmp_path, capsys):
    folder = tmp_path / "lvbench"
    assert main(["eval", *eval_args(eval_host, synth_shards, folder, "eval=lvbench", "trainer.progress_bar=log",
                                    "trainer.progress_every_n_steps=2")]) == 0
    total = _mc_count(synth_shards)
    answers = _answers(folder)
    assert len(answers) == total and len({a["uid"] for a in answers}) == total
    first = answers[0]
    assert first["question"] and first["options"] and first["parse"] and first["answer"] in "ABCDEFGH"
    assert first["correct"] == (first["choice"] == first["answer"])
    results = json.loads((folder / "results.json").read_text())
    metrics = results["metrics"]
    assert metrics["questions"] == total and metrics["unanswered"] == 0
    correct = sum(a["correct"] for a in answers)
    assert metrics["accuracy"] == pytest.approx(correct / total)
    # A question counts in each of its LVBench tags.
    kir = [a for a in answers if "KIR" in a["categories"]]
    assert metrics["accuracy/KIR"] == pytest.approx(sum(a["correct"] for a in kir) / len(kir))
    assert results["benchmark"] == "lvbench" and results["mode"] == "generate" and results["frames"] == 3
    table = (folder / "results.md").read_text()
    assert "SEAL, 34B MLLM, budget 16 (SEAL)" in table and "| accuracy/KIR |" in table and "| 51.5 |" in table
    printed = capsys.readouterr()
    assert f"| questions | {total} |" in printed.out
    # Progress for log files (a Slurm job's .out): 10 videos, 3 per batch -> 4 batches, a line every 2 and the last.
    progress = [line for line in printed.err.splitlines() if line.startswith("lvu: predict batch")]
    assert [line.split(" | ")[0] for line in progress] == ["lvu: predict batch 2/4 (50%)",
                                                           "lvu: predict batch 4/4 (100%)"]


def test_unanswered_questions_count_as_wrong_and_a_finished_run_only_rescores(eval_host, synth_shards, tmp_path):
    folder = tmp_path / "mlvu"
    args = eval_args(eval_host, synth_shards, folder, "eval=mlvu")
    # A run cut short (one batch of 3 videos): every question is still in the denominator, the rest unanswered.
    partial = evaluate(args[0], [*args[1:], "trainer.limit_predict_batches=1"])
    answered_so_far = len(_answers(folder))
    total = _mc_count(synth_shards)
    assert partial.results.metrics["questions"] == total
    assert partial.results.metrics["unanswered"] == total - answered_so_far > 0
    assert partial.results.metrics["accuracy"] == pytest.approx(
        sum(a["correct"] for a in _answers(folder)) / total)
    whole = evaluate(args[0], args[1:])  # the rest, and nothing twice
    assert whole.answered_now and whole.results.metrics["unanswered"] == 0
    assert len(_answers(folder)) == total
    # Lose three answers, the last one cut mid-line: a rerun answers those three and touches nothing else.
    kept = (folder / "answers" / "answers-rank0.jsonl").read_text().splitlines()
    (folder / "answers" / "answers-rank0.jsonl").write_text("\n".join(kept[:-3]) + "\n" + kept[-3][:20])
    again = evaluate(args[0], args[1:])
    assert again.answered_now and again.results.metrics == whole.results.metrics
    lines = (folder / "answers" / "answers-rank0.jsonl").read_text().splitlines()
    assert len(lines) == total and all(json.loads(line) for line in lines)  # the cut line is gone
    assert evaluate(args[0], args[1:]).answered_now is False  # nothing left: scored only
    assert "mean" in whole.results.metrics and whole.results.headline == "mean"


def test_a_complete_last_line_without_its_newline_is_not_taken_as_written(tmp_path):
    from lvu.metrics.report import read_jsonl

    path = tmp_path / "a.jsonl"
    path.write_text('{"uid": "x/0"}\n{"uid": "x/1"}')  # killed between the record and its newline
    assert read_jsonl([path]) == [{"uid": "x/0"}]


def test_an_unreadable_video_is_recorded_as_failed_and_not_retried(eval_host, synth_shards, tmp_path, caplog):
    from lvu.data.shards import write_shard

    shards = tmp_path / "shards"
    shutil.copytree(synth_shards, shards)
    (shards / "manifest.json").unlink(missing_ok=True)
    mc = [{"question": "What is shown?", "options": ["a", "b"], "answer": "B", "categories": ["KIR"]},
          {"question": "Which colour?", "options": ["red", "blue"], "answer": "A", "categories": ["ER"]}]
    write_shard(shards / "zz-broken.tar", [("broken", {"mp4": b"not a video" * 40, "json": {"mc": mc}})])
    folder = tmp_path / "ev"
    args = eval_args(eval_host, shards, folder, "eval=lvbench")
    first = evaluate(args[0], args[1:])
    metrics = first.results.metrics
    assert metrics["failed"] == 2 and metrics["questions"] == _mc_count(synth_shards) + 2
    failed = [a for a in _answers(folder) if a["key"] == "broken"]
    assert [a["parse"] for a in failed] == ["failed", "failed"] and all(not a["correct"] for a in failed)
    assert failed[0]["error"].startswith("undecodable_video: cannot demux video")
    assert json.loads((folder / "answers" / "failed-rank0.jsonl").read_text())["key"] == "broken"
    # Not tried again: the rerun only scores (had it retried, a run of nothing but that video could not start).
    again = evaluate(args[0], args[1:])
    assert again.answered_now is False and again.results.metrics == metrics


def test_an_evaluation_folder_refuses_another_model_or_setting(eval_host, synth_shards, tmp_path):
    folder = tmp_path / "ev"
    args = eval_args(eval_host, synth_shards, folder, "eval=egoschema", "trainer.limit_predict_batches=1")
    evaluate(args[0], args[1:])
    with pytest.raises(LvuError, match=r"holds answers of another evaluation \(eval\.mode: generate -> likelihood"):
        evaluate(args[0], [*args[1:], "eval.mode=likelihood"])
    with pytest.raises(LvuError, match=r"data\.eval_frames: 3 -> 4"):
        evaluate(args[0], [*args[1:], "data.eval_frames=4"])
    evaluate(args[0], [*args[1:], "data.num_workers=1", "trainer.limit_predict_batches=null"])  # runtime only: fine


def test_likelihood_mode_picks_the_most_likely_option(eval_host, synth_shards, tmp_path):
    folder = tmp_path / "ll"
    args = eval_args(eval_host, synth_shards, folder, "eval=nextqa", "eval.mode=likelihood")
    outcome = evaluate(args[0], args[1:])
    answers = _answers(folder)
    assert outcome.results.metrics["questions"] == len(answers) and outcome.results.metrics["unparsable"] == 0
    for a in answers:
        assert a["parse"] == "likelihood" and a["prediction"] is None
        assert a["choice"] == "ABCDEFGH"[max(range(len(a["logprobs"])), key=a["logprobs"].__getitem__)]


def test_each_benchmark_asks_in_its_own_words():
    from lvu.data.benchmark_prompts import MC_PROMPTS, multiple_choice_prompt, subtitles_at

    options = ["a red car", "a blue bus", "a cat", "a dog"]
    assert multiple_choice_prompt("lvbench", "What passes?", options) == \
        "What passes?\n(A) a red car\n(B) a blue bus\n(C) a cat\n(D) a dog\nAnswer the question with the option letter"
    videomme = multiple_choice_prompt("videomme", "What passes?", options, "hello\nbye")
    assert videomme.startswith("This video's subtitles are listed below:\nhello\nbye\nSelect the best answer to the "
                               "following multiple-choice question based on the video and the subtitles. Respond")
    assert "based on the video. Respond" in multiple_choice_prompt("videomme", "What passes?", options)
    assert "Respond with only the letter (A, B, C, or D) of the correct option.\nWhat passes?\nA. a red car\n" \
        in videomme
    assert videomme.endswith("D. a dog\nThe best answer is:")
    assert multiple_choice_prompt("mlvu", "Q?", options[:2]).endswith("(B) a blue bus\nOnly give the best option.\n"
                                                                      "Best option: (")
    assert multiple_choice_prompt("mvbench", "Q?", options[:2]) == \
        "Question: Q?\nOptions:\n(A) a red car\n(B) a blue bus\nOnly give the best option."
    assert multiple_choice_prompt("egoschema", "Q?", options[:3]).endswith(
        "C. a cat\nAnswer with the option's letter from the given choices directly.")
    assert set(MC_PROMPTS) == {"videomme", "lvbench", "mlvu", "mvbench", "longvideobench", "egoschema", "nextqa",
                               "perceptiontest"}
    cues = [{"start_s": 0, "end_s": 2, "text": "hello"}, {"start_s": 2.5, "end_s": 4, "text": "bye"},
            {"start_s": 9, "end_s": 12, "text": "unseen"}]
    assert subtitles_at(cues, [1.0, 1.5, 3.0]) == "hello\nbye"


def _one_video(seed: int = 0) -> MediaBatch:
    frames = torch.randint(0, 256, (1, 3, FRAME, FRAME, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    return MediaBatch(keys=["v"], kinds=["video"], frames=frames, frame_mask=torch.ones(1, 3, dtype=torch.bool),
                      timestamps=torch.tensor([[0.5, 3.0, 5.5]]), durations=torch.tensor([6.0]),
                      conversations=[Conversation([Turn("user", "")])], captions=[None], pad=torch.tensor([False]))


def test_continuation_scores_equal_the_models_own_token_log_probabilities(eval_host):
    overrides = [f"host.path={eval_host}", "data.train=x", f"data.frame_size={FRAME}"]
    cfg = load_recipe("uniform/instruct", overrides).to_object()
    module = HostLMTask(cfg).eval()
    batch = _one_video()
    asked = module.ask(batch, 0, ["Which colour? A. red B. blue", "How many?\nA. one\nB. two\nC. three"])
    letter_scores = module.continuation_scores(asked, [["A", "B"], ["A", "B", "C"]])  # one token each: one forward
    text_scores = module.continuation_scores(asked, [["A", "B. blue"], ["A. one", "B", "C. three"]])  # a row each
    letters, texts = [s.logprobs for s in letter_scores], [s.logprobs for s in text_scores]
    assert letters[0].shape == (2,) and letters[1].shape == (3,)
    assert torch.allclose(letters[0][0], texts[0][0], atol=1e-5)  # "A" scored either way is the same number
    assert torch.allclose(letters[1][1], texts[1][1], atol=1e-5)
    # By hand: the prompt with the continuation appended, the model's log-probabilities of its tokens.
    tok = module.host.tokenizer
    inputs = module.llm_inputs(asked.batch, asked.visual, answers=False)
    prompt = inputs.ids[0][inputs.mask[0].bool()].tolist()
    cont = tok("B. blue", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + cont])
    embeds = module.host.build_inputs_embeds(ids, [asked.visual.per_sample[0]])
    with torch.no_grad():
        logits = module.host(embeds, torch.ones_like(ids), None, None).logits[0].float().log_softmax(-1)
    expected = sum(logits[len(prompt) - 1 + i, t] for i, t in enumerate(cont))
    assert torch.allclose(texts[0][1], expected, atol=1e-4)
    greedy = all(int(logits[len(prompt) - 1 + i].argmax()) == t for i, t in enumerate(cont))
    assert bool(text_scores[0].greedy[1]) == greedy
    # One-token continuations: greedy exactly when the letter is the most likely next token of the prompt.
    best = int(logits[len(prompt) - 1].argmax())
    letter_ids = [tok(c, add_special_tokens=False)["input_ids"][0] for c in ("A", "B")]
    assert letter_scores[0].greedy.tolist() == [i == best for i in letter_ids]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("preset", ["ddp", "deepspeed_zero3"])
def test_two_processes_answer_each_question_once_and_score_as_one(eval_host, synth_shards, tmp_path, preset):
    """Every question answered by exactly one rank (the loader's padding copies never written), and every answer
    equal to the 1-process one: each video is asked alone, whatever its rank and neighbours. Under ZeRO-3 the ranks
    generate in lockstep (a rank with fewer questions keeps stepping)."""
    one, two = tmp_path / "one", tmp_path / "two"
    # 3 questions a call: a video of 4 makes two calls, one of 3 makes one (ZeRO-3: the other rank keeps pace).
    assert main(["eval", *eval_args(eval_host, synth_shards, one, "eval=videomme", "eval.questions_per_call=3")]) == 0
    # Lightning starts rank 1 by re-running the command line: run lvu as one.
    subprocess.run([sys.executable, "-m", "lvu", "eval", *eval_args(eval_host, synth_shards, two, "eval=videomme",
                                                                    "eval.questions_per_call=3"),
                    f"trainer={preset}", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"],
                   check=True, capture_output=True, timeout=500)
    files = sorted(p.name for p in (two / "answers").iterdir())
    assert files == ["answers-rank0.jsonl", "answers-rank1.jsonl"]
    per_rank = [[json.loads(line)["uid"] for line in (two / "answers" / f).read_text().splitlines()] for f in files]
    assert per_rank[0] and per_rank[1] and not set(per_rank[0]) & set(per_rank[1])
    assert len(per_rank[0]) + len(per_rank[1]) == _mc_count(synth_shards)
    assert _answers(one) == _answers(two)  # every record, in benchmark order
    assert json.loads((one / "results.json").read_text())["metrics"] == \
        json.loads((two / "results.json").read_text())["metrics"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("how", "ranks"), [(signal.SIGKILL, 1), (signal.SIGUSR1, 1), (signal.SIGUSR1, 2)])
def test_an_evaluation_stopped_mid_run_resumes_to_the_same_score(eval_host, synth_shards, tmp_path, how, ranks):
    """SIGKILL: whatever was flushed survives (a cut last line is dropped). SIGUSR1 (a scheduler's notice, to every
    rank): every rank stops after the batch in flight is written, exit 75 (and a requeue under Slurm). Either way
    the same command finishes the rest, on 1 process even when 2 had started, and the answers and scores equal an
    uninterrupted run's."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    args = eval_args(eval_host, synth_shards, whole, "eval=perceptiontest", "data.eval_batch_size=1")
    assert main(["eval", *args]) == 0
    cut_args = [a if not a.startswith("run_dir=") else f"run_dir={stopped}" for a in args]
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    process = subprocess.Popen([sys.executable, "-m", "lvu", "eval", *cut_args, *(ddp if ranks == 2 else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, text=True)
    files = stopped / "answers"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if sum(f.read_text().count("\n") for f in files.glob("answers-rank*.jsonl")) >= 2:
            os.killpg(process.pid, how)
            break
        time.sleep(0.01)
    _, err = process.communicate()
    done_before = sum(f.read_text().count("\n") for f in files.glob("answers-rank*.jsonl"))
    assert 2 <= done_before < len(_answers(whole))
    if how == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 75 and "stopped by SIGUSR1 at step" in err
        assert "run the same command to resume" in err
    assert main(["eval", *cut_args]) == 0
    assert _answers(stopped) == _answers(whole)
    assert json.loads((stopped / "results.json").read_text())["metrics"] == \
        json.loads((whole / "results.json").read_text())["metrics"]
