"""Reading option letters out of real model outputs, multiple-choice accuracy by tag, and temporal-grounding recall."""

from __future__ import annotations

import pytest
import torch

from lvu.metrics.choice import Choice, MultipleChoiceAccuracy, Parse, extract_choice
from lvu.metrics.grounding import TemporalGroundingRecall, temporal_iou

OPTIONS = ["a cat", "a dog", "a red car", "the ocean"]

# (model output, letter read, how) — outputs of the kinds video-LLMs give under the benchmarks' prompts.
MESSY = [
    ("B", "B", Parse.leading),
    ("B.", "B", Parse.leading),
    ("  c)  ", "C", Parse.leading),
    ("b) a dog", "B", Parse.leading),
    ("D: the ocean", "D", Parse.leading),
    ("C a red car", "C", Parse.leading),
    ("(B)", "B", Parse.parenthesised),
    ("(b) a dog", "B", Parse.parenthesised),
    ("The answer is (C).", "C", Parse.cue),
    ("The answer is B.", "B", Parse.cue),
    ("the answer is b", "B", Parse.cue),
    ("Answer: D", "D", Parse.cue),
    ("Best option: (A", "A", Parse.cue),  # MLVU's post-prompt, completed
    ("I would pick option C because of the car.", "C", Parse.cue),
    ("A dog is running in the park.", "B", Parse.option_text),  # the article "A" is not option A
    ("a dog", "B", Parse.option_text),
    ("It shows a red car driving.", "C", Parse.option_text),  # "a red car", not "a cat"
    ("the answer is a dog", "B", Parse.option_text),  # lower-case "a" after a cue is the article
    ("I think it is D here", "D", Parse.lone_letter),  # "I" is a pronoun, not an option
    ("", None, Parse.empty),
    ("   \n", None, Parse.empty),
    (None, None, Parse.empty),
    ("I don't know.", None, Parse.unparsable),
    ("(E)", None, Parse.unparsable),  # a letter beyond the four options
    ("Either B or C", None, Parse.unparsable),  # two letters: no single choice
    ("a cat and a dog", None, Parse.unparsable),  # two options' texts
    # Found by review: the last answer cue wins over letters quoted before it; quoted lists are not answers.
    ("Option (A) is incorrect because of the car. The answer is (C).", "C", Parse.cue),
    ("Options: (A) a cat (B) a dog (C) a red car. Answer: B", "B", Parse.cue),
    ("Answer: C. Explanation: (A) is wrong.", "C", Parse.cue),
    ("D. First (a) he opens the fridge", "D", Parse.leading),
    ("Looking at each option: A is wrong, B is right.", None, Parse.unparsable),  # two letters, no cue
    ("I think A is correct.", "A", Parse.lone_letter),  # "A is": the letter, not the article
    ("Options (A) and (B) are close; I pick (B)", None, Parse.unparsable),  # several quoted letters, no cue
    ("I'd go with the option a red car", "C", Parse.option_text),  # "option a": the article, not option A
]

# EgoSchema: "C" is the camera wearer, and options start with it.
EGO = ["C cooks pasta", "C is cleaning the kitchen", "C reads a book", "C talks on the phone", "C washes dishes"]


@pytest.mark.parametrize(("output", "letter", "how"), [
    ("C is cleaning the kitchen.", "B", Parse.option_text),
    ("Answer: C is cleaning the kitchen.", "B", Parse.option_text),
    ("C", "C", Parse.leading),
    ("The answer is (C)", "C", Parse.cue),
    ("C washes something", None, Parse.unparsable),
])
def test_a_letter_that_starts_the_options_as_a_word_is_that_word(output, letter, how):
    assert extract_choice(output, EGO) == Choice(letter, how)


@pytest.mark.parametrize(("output", "letter", "how"), MESSY)
def test_the_letter_is_read_from_messy_outputs(output, letter, how):
    assert extract_choice(output, OPTIONS) == Choice(letter, how)


def test_accuracy_counts_every_question_once_per_tag_and_reports_what_could_not_be_read():
    metric = MultipleChoiceAccuracy(categories=["KIR", "TG", "Sum"])
    outputs = ["(A)", "B", "", "no idea", "The answer is C", "D", "(A)"]
    answers = ["A", "C", "A", "B", "C", "D", "A"]
    tags = [["KIR", "TG"], ["KIR"], ["TG"], ["Sum"], ["Sum", "Sum"], [], ["KIR"]]
    keep = [True, True, True, True, True, True, False]  # the last is a padding copy of the first
    metric.update([extract_choice(o, OPTIONS) for o in outputs], answers, tags, keep)
    result = metric.compute()
    # 3 right of 6 questions: the empty and the unparsable answers count as wrong, the padding copy not at all.
    assert result["questions"] == 6 and result["accuracy"].item() == pytest.approx(3 / 6)
    assert result["empty"] == 1 and result["unparsable"] == 1
    assert result["accuracy/KIR"].item() == pytest.approx(1 / 2)  # (A) right, B wrong
    assert result["accuracy/TG"].item() == pytest.approx(1 / 2)  # (A) right, empty wrong
    assert result["accuracy/Sum"].item() == pytest.approx(1 / 2)  # unparsable wrong, C right (tag listed twice)
    with pytest.raises(ValueError, match="category 'EU' is not one of"):
        metric.update([Choice("A", Parse.leading)], ["A"], [["EU"]])
    assert metric.compute()["questions"] == 6  # the refused question changed nothing


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    choices = MultipleChoiceAccuracy(categories=["x", "y"])
    grounding = TemporalGroundingRecall()
    # Rank 0 holds questions 0-2, rank 1 questions 3-4: the synced result must equal one process's over all five.
    outputs, answers, tags = _split_questions()[rank]
    choices.update([extract_choice(o, OPTIONS) for o in outputs], answers, tags)
    predictions, targets = _split_windows()[rank]
    grounding.update(predictions, targets)
    result = {**choices.compute(), **grounding.compute()}
    if rank == 0:
        torch.save({k: v.clone() for k, v in result.items()}, out)
    dist.destroy_process_group()


def _split_questions():
    return [(["A", "(b)", "zzz"], ["A", "C", "D"], [["x"], ["x", "y"], ["y"]]),
            (["the answer is D", ""], ["D", "B"], [["y"], ["x"]])]


def _split_windows():
    return [([torch.tensor([[0.0, 10.0], [50.0, 60.0]])], torch.tensor([[2.0, 10.0]])),
            ([torch.zeros(0, 2), torch.tensor([[0.0, 1.0], [30.0, 41.0]])], torch.tensor([[5.0, 6.0], [30.0, 40.0]]))]


def test_both_metrics_sync_across_two_processes_to_the_one_process_result(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    synced = torch.load(out, weights_only=True)

    single_choices, single_grounding = MultipleChoiceAccuracy(categories=["x", "y"]), TemporalGroundingRecall()
    for (outputs, answers, tags), (predictions, targets) in zip(_split_questions(), _split_windows(), strict=True):
        single_choices.update([extract_choice(o, OPTIONS) for o in outputs], answers, tags)
        single_grounding.update(predictions, targets)
    single = {**single_choices.compute(), **single_grounding.compute()}
    assert synced.keys() == single.keys()
    assert all(torch.equal(synced[k], single[k]) for k in single)
    assert synced["questions"] == 5 and synced["accuracy"].item() == pytest.approx(2 / 5)


def test_temporal_iou_by_hand():
    windows = torch.tensor([[0.0, 10.0], [5.0, 15.0], [20.0, 30.0], [8.0, 4.0]])
    target = torch.tensor([5.0, 10.0])
    # [0,10] vs [5,10]: 5/10; [5,15]: 5/10; disjoint: 0; an inverted window is empty: 0.
    assert temporal_iou(windows, target).tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])


def test_recall_at_k_counts_every_query_including_those_without_a_prediction():
    metric = TemporalGroundingRecall(ks=(1, 5), thresholds=(0.3, 0.5))
    targets = torch.tensor([[10.0, 20.0], [0.0, 4.0], [30.0, 40.0], [50.0, 60.0]])
    predictions = [
        torch.tensor([[10.0, 20.0]]),  # exact: a hit everywhere
        torch.tensor([[0.0, 10.0], [0.0, 4.5]]),  # top-1 IoU 0.4 (hit at 0.3 only); top-2 IoU 0.89
        torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0], [4.0, 5.0], [30.0, 40.0]]),  # right one is 6th
        torch.zeros(0, 2),  # no prediction: a miss, still counted
    ]
    metric.update(predictions, targets)
    result = {k: v.item() for k, v in metric.compute().items()}
    assert result == pytest.approx({"R@1,IoU=0.3": 2 / 4, "R@1,IoU=0.5": 1 / 4,
                                    "R@5,IoU=0.3": 2 / 4, "R@5,IoU=0.5": 2 / 4})
    exact = TemporalGroundingRecall(ks=(1,), thresholds=(0.5,))  # IoU exactly 0.5 is not above 0.5 (Ego4D's rule)
    exact.update([torch.tensor([[0.0, 10.0]])], torch.tensor([[5.0, 10.0]]))
    assert exact.compute()["R@1,IoU=0.5"].item() == 0.0
    with pytest.raises(ValueError, match="1 predictions for 2 queries"):
        metric.update(predictions[:1], targets[:2])
