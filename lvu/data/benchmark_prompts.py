"""Each benchmark's own question prompt, so that a score here is comparable with the published ones.

The wordings follow the benchmarks' evaluation code as lmms-eval and the official repositories ask them (see
``../shared/ANCHORS.md``, "Evaluation conventions"): Video-MME's "Respond with only the letter" with "The best answer
is:", LVBench's "(A) ..." lines, MLVU's "Best option: (", MVBench's "Only give the best option.", and for the rest
LLaVA's "Answer with the option's letter from the given choices directly." A video-LLM that was never trained on one
of these wordings still answers best to the one its authors evaluated it with; the prompt is not a recipe knob for
that reason: changing it changes what the number means.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

LETTERS = string.ascii_uppercase


def _dotted(options: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def _parenthesised(options: Sequence[str]) -> str:
    return "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))


def _videomme(question: str, options: Sequence[str], subtitles: str | None) -> str:
    letters = ", ".join(LETTERS[: len(options) - 1]) + f", or {LETTERS[len(options) - 1]}"
    head = f"This video's subtitles are listed below:\n{subtitles}\n" if subtitles is not None else ""
    basis = "the video and the subtitles" if subtitles is not None else "the video"
    return (f"{head}Select the best answer to the following multiple-choice question based on {basis}. Respond "
            f"with only the letter ({letters}) of the correct option.\n{question}\n{_dotted(options)}\n"
            f"The best answer is:")


def _lvbench(question: str, options: Sequence[str], subtitles: str | None) -> str:
    return f"{question}\n{_parenthesised(options)}\nAnswer the question with the option letter"


def _mlvu(question: str, options: Sequence[str], subtitles: str | None) -> str:
    return f"Question: {question}\nOptions:\n{_parenthesised(options)}\nOnly give the best option.\nBest option: ("


def _mvbench(question: str, options: Sequence[str], subtitles: str | None) -> str:
    # lmms-eval's wording, which ends the user turn here (VideoChat2's own script also opens the answer with
    # "Best option:(", a prefilled assistant turn that a chat template cannot take from a user prompt).
    return f"Question: {question}\nOptions:\n{_parenthesised(options)}\nOnly give the best option."


def _llava(question: str, options: Sequence[str], subtitles: str | None) -> str:
    head = f"Subtitles:\n{subtitles}\n" if subtitles is not None else ""
    return f"{head}{question}\n{_dotted(options)}\nAnswer with the option's letter from the given choices directly."


MC_PROMPTS: dict[str, Callable[[str, Sequence[str], str | None], str]] = {
    "videomme": _videomme,
    "lvbench": _lvbench,
    "mlvu": _mlvu,
    "mvbench": _mvbench,
    "longvideobench": _llava,
    "egoschema": _llava,
    "nextqa": _llava,
    "perceptiontest": _llava,
}


def multiple_choice_prompt(benchmark: str, question: str, options: Sequence[str],
                           subtitles: str | None = None) -> str:
    """The question as ``benchmark`` asks it, options lettered A, B, ...; ``subtitles`` (text, possibly empty) opens
    it for the "with subtitles" protocols."""
    if benchmark not in MC_PROMPTS:
        raise KeyError(f"{benchmark} has no multiple-choice prompt; known: {', '.join(MC_PROMPTS)}")
    return MC_PROMPTS[benchmark](question, options, subtitles)


def grounding_prompt(query: str) -> str:
    """Temporal grounding asked of a video-LLM (Ego4D-NLQ by generation, as TimeChat-style models are scored): one
    window in seconds, which :func:`lvu.metrics.grounding.parse_window` reads back."""
    return (f"Find the moment in the video that answers the query: \"{query.strip()}\". Give its start and end time "
            f"in seconds, as 'start - end'.")


def subtitles_at(cues: Sequence[dict[str, Any]], times: Sequence[float]) -> str:
    """The subtitle lines spoken at the sampled frames' ``times`` (each line once, in order): Video-MME's protocol
    gives the model the subtitles of the frames it sees, not the whole film's."""
    chosen = [cue for cue in cues if any(float(cue["start_s"]) <= t <= float(cue["end_s"]) for t in times)]
    return "\n".join(dict.fromkeys(str(cue["text"]).strip() for cue in chosen if str(cue["text"]).strip()))
