"""The lmms-eval plugin (lvu/lmms.py): lmms-eval finds the ``lvu`` model through its entry point and scores an lvu
model on local tasks, answering exactly as ``lvu eval`` does.

lmms-eval pins PyAV below 16 (ours is newer), so this runs in its own environment, ``.venv-lmms`` (``make
lmms-venv``; ``make test`` builds it), through that environment's Python. Both sides of every comparison run there:
PyAV versions resize frames differently, so answers are only comparable within one environment. Without that
environment the test skips, except under ``LVU_REQUIRE_LMMS=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import eval_args
from support.hosts import FRAME

from lvu.cli import main
from lvu.data.shards import iter_samples, resolve_shards
from lvu.metrics.choice import extract_choice

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).parent / "support" / "lmms_run.py"
LETTERS = "ABCDEFGH"

TASK_UTILS = '''
import ast

from lvu.data.benchmark_prompts import multiple_choice_prompt
from lvu.metrics.choice import extract_choice


def doc_to_visual(doc, lmms_eval_specific_kwargs=None):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return multiple_choice_prompt("lvbench", doc["question"], doc["options"])


def doc_to_target(doc, lmms_eval_specific_kwargs=None):
    return "ABCDEFGH".index(doc["answer"])


def doc_to_choice(doc, lmms_eval_specific_kwargs=None):
    return list("ABCDEFGH"[:len(doc["options"])])


def score_text(doc, results):
    return {"acc": float(extract_choice(results[0], doc["options"]).letter == doc["answer"])}


def score_choices(doc, results):
    # lmms-eval 0.7.3 hands multiple-choice results over as the str() of each (loss, greedy) pair.
    pairs = [ast.literal_eval(r) if isinstance(r, str) else r for r in results]
    losses = [float(p[0]) for p in pairs]
    return {"acc": float(losses.index(min(losses)) == "ABCDEFGH".index(doc["answer"]))}
'''

TASK_YAML = '''task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: {output_type}
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
{extra}
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
'''


@pytest.fixture(scope="module")
def lmms_python() -> Path:
    python = Path(os.environ.get("LVU_LMMS_PYTHON", REPO / ".venv-lmms" / "bin" / "python"))
    if not python.is_file():
        reason = f"no lmms-eval environment at {python} (make lmms-venv builds it)"
        if os.environ.get("LVU_REQUIRE_LMMS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def _offline(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
            "TOKENIZERS_PARALLELISM": "false"}


def _one_question_per_video(synth_shards: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    """Four synthetic videos with one question each, packed from LVBench's layout (a video's questions would be
    batched by lvu eval, the plugin asks them one by one: one each keeps the comparison exact)."""
    videos, records, docs = tmp_path / "videos", [], []
    videos.mkdir()
    for sample in list(iter_samples(resolve_shards(str(synth_shards)), exts=("mp4", "json")))[:4]:
        key, mc = sample["__key__"], json.loads(sample["json"])["mc"][0]
        (videos / f"{key}.mp4").write_bytes(sample["mp4"])
        lines = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(mc["options"]))
        records.append({"key": key, "qa": [{"uid": "q", "question": f"{mc['question']}\n{lines}",
                                            "answer": mc["answer"], "question_type": ["reasoning"]}]})
        docs.append({"uid": f"{key}/q", "video": str(videos / f"{key}.mp4"), "question": mc["question"],
                     "options": mc["options"], "answer": mc["answer"]})
    (tmp_path / "lvbench.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert main(["data", "pack", "--format", "lvbench", "--videos", str(videos), "--annotations",
                 str(tmp_path / "lvbench.jsonl"), "--out", str(tmp_path / "shards")]) == 0
    return tmp_path / "shards", docs


def _tasks(folder: Path, docs: list[dict]) -> Path:
    folder.mkdir()
    (folder / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (folder / "utils.py").write_text(TASK_UTILS)
    (folder / "lvu_toy_gen.yaml").write_text(TASK_YAML.format(
        name="lvu_toy_gen", docs=folder / "docs.jsonl", output_type="generate_until",
        extra="generation_kwargs:\n  max_new_tokens: 16\n  do_sample: false\nprocess_results: !function "
              "utils.score_text"))
    (folder / "lvu_toy_mc.yaml").write_text(TASK_YAML.format(
        name="lvu_toy_mc", docs=folder / "docs.jsonl", output_type="multiple_choice",
        extra='doc_to_choice: !function utils.doc_to_choice\ntarget_delimiter: ""\nprocess_results: !function '
              "utils.score_choices"))
    return folder


def _trained(eval_host: Path, synth_shards: Path, run: Path) -> Path:
    """Two steps of the uniform baseline with LoRA on the LLM: a checkpoint holding trained weights to load."""
    assert main(["fit", "uniform/instruct", f"host.path={eval_host}", f"data.frame_size={FRAME}",
                 f"data.train={synth_shards}", f"run_dir={run}", "trainer=cpu", "trainer.precision=32-true",
                 "data.batch_size=2", "data.num_workers=0", "data.sampler.num_frames=2", "trainer.progress_bar=none",
                 "trainer.max_epochs=null", "trainer.max_steps=2", "optim.lr=3e-2", "optim.scheduler.warmup_steps=0",
                 "lora.r=4", "trainer.enable_model_summary=false"]) == 0
    return run / "checkpoints" / "last.ckpt"


@pytest.mark.timeout(600)
def test_lmms_eval_scores_an_lvu_checkpoint_as_lvu_eval_does(lmms_python, eval_host, synth_shards, tmp_path):
    shards, docs = _one_question_per_video(synth_shards, tmp_path)
    ckpt = _trained(eval_host, synth_shards, tmp_path / "run")
    env = _offline(tmp_path)
    ours = {}
    for mode in ("generate", "likelihood"):
        folder = tmp_path / f"lvu-{mode}"
        subprocess.run([str(lmms_python), "-m", "lvu", "eval", *eval_args(eval_host, shards, folder, "eval=lvbench",
                                                                          f"eval.mode={mode}", "parts.llm.mode=lora",
                                                                          "lora.r=4"), "--ckpt", str(ckpt)],
                       check=True, capture_output=True, env=env, timeout=300)
        ours[mode] = {json.loads(line)["uid"]: json.loads(line)
                      for line in (folder / "answers.jsonl").read_text().splitlines()}

    overrides = f"host.path={eval_host} data.frame_size={FRAME} data.eval_frames=3 parts.llm.mode=lora lora.r=4"
    run = subprocess.run([str(lmms_python), str(DRIVER), str(_tasks(tmp_path / "tasks", docs)),
                          "lvu_toy_gen,lvu_toy_mc", f"recipe=uniform/instruct,ckpt={ckpt},overrides={overrides}"],
                         capture_output=True, text=True, env=env, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["manifest"] == "lvu.lmms.LvuModel"

    # Generation: the same text as lvu eval's answer (lmms-eval cuts at its default stop "\n\n"), so the same score.
    generated = {s["doc_id"]: s["resps"][0][0] for s in out["samples"]["lvu_toy_gen"]}
    expected = [ours["generate"][d["uid"]]["prediction"].split("\n\n")[0] for d in docs]
    assert [generated[i] for i in range(len(docs))] == expected
    right = [extract_choice(text, d["options"]).letter == d["answer"] for text, d in zip(expected, docs, strict=True)]
    assert out["results"]["lvu_toy_gen"]["acc,none"] == pytest.approx(sum(right) / len(docs))

    # Likelihood: each option's loss is minus lvu eval's log-likelihood of its letter; the same choice, same score.
    for sample in out["samples"]["lvu_toy_mc"]:
        doc = docs[sample["doc_id"]]
        pairs = [ast.literal_eval(r[0]) if isinstance(r[0], str) else r[0] for r in sample["resps"]]
        losses = [float(p[0]) for p in pairs]
        assert losses == pytest.approx([-v for v in ours["likelihood"][doc["uid"]]["logprobs"]], abs=1e-4)
        assert LETTERS[losses.index(min(losses))] == ours["likelihood"][doc["uid"]]["choice"]
    agree = [ours["likelihood"][d["uid"]]["correct"] for d in docs]
    assert out["results"]["lvu_toy_mc"]["acc,none"] == pytest.approx(sum(agree) / len(docs))
