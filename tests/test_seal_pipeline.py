"""SEAL end to end from the CLI: token extraction (``lvu predict seal/extract``: token shards stock webdataset reads,
each video once across ranks, a SIGKILLed run resumed to the same tokens, settings recorded and refused when they
change), query-aware selection (``lvu predict seal/select``) and answering the selected tokens (``lvu eval``)."""

from __future__ import annotations

import glob
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from lvu.cli import main
from lvu.config import load_recipe
from lvu.data.token_shards import part_path, write_part
from lvu.errors import ConfigError, LvuError
from lvu.models.clip_encoders import ClipEncoder
from lvu.models.seal import SelectionConfig, select
from lvu.models.seal_extract import (
    DetectionConfig,
    Detector,
    ExtractionConfig,
    Extractor,
    MaskProposer,
    crop_resized,
)
from lvu.models.seal_masks import MaskGenerationConfig
from lvu.models.seal_tiny import save_tiny_clip, save_tiny_detector, save_tiny_sam2
from lvu.tasks.seal.extract import distinct_frames

VIDEOS = 10  # synth_shards


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seal-models")
    return {"encoder": save_tiny_clip(root / "clip"), "sam2": save_tiny_sam2(root / "sam2"),
            "detector": save_tiny_detector(root / "detector")}


def _args(models: dict[str, Path], shards: Path, out: Path, *extra: str) -> list[str]:
    """Tiny settings: random models pass every filter (their scores are near 0.5), a few tokens of each kind."""
    return ["predict", "seal/extract", f"data.predict={shards}", f"output.folder={out}",
            f"runs_root={out.parent / 'runs'}", *(f"models.{k}={v}" for k, v in models.items()),
            "data.frames=16", "data.frame_size=64", "data.num_workers=0", "extraction.scene_frames=4",
            "extraction.keyframes=2", "extraction.masks.points_per_side=4", "extraction.masks.points_per_batch=8",
            "extraction.masks.pred_iou_threshold=0", "extraction.masks.stability_threshold=0",
            "extraction.masks.stability_offset=0", "extraction.detection.score_threshold=0",
            "extraction.detection.max_per_frame=3", "extraction.tracking.min_length=2",
            "extraction.tracking.max_length=4", "extraction.tracking.max_cost=1.0", "output.part_videos=4", *extra]


def _read(folder: Path) -> dict[str, dict]:
    """Every sample of the folder's parts through stock webdataset: key -> {npy, json}."""
    dataset = wds.WebDataset(sorted(glob.glob(str(folder / "part-*.tar"))), shardshuffle=False).decode()
    samples: dict[str, dict] = {}
    for sample in dataset:
        assert sample["__key__"] not in samples, f"{sample['__key__']} written twice"
        samples[sample["__key__"]] = {"npy": sample["npy"], "json": sample["json"]}
    return samples


@pytest.fixture(scope="module")
def extracted(models, synth_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seal-tokens") / "tokens"
    assert main(_args(models, synth_shards, out)) == 0
    return out


def _same_tokens(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key]["json"] == b[key]["json"], key
        np.testing.assert_allclose(a[key]["npy"].astype(np.float32), b[key]["npy"].astype(np.float32), atol=2e-3)


def test_extraction_writes_token_shards_that_webdataset_reads(extracted):
    samples = _read(extracted)
    assert len(samples) == VIDEOS
    manifest = json.loads((extracted / "manifest.json").read_text())
    assert manifest["total"] == VIDEOS and len(manifest["shards"]) == 3  # parts of 4, 4 and 2 videos
    for key, sample in samples.items():
        embeddings, annotation = sample["npy"], sample["json"]
        tokens = annotation["tokens"]
        assert embeddings.dtype == np.float16 and embeddings.shape == (len(tokens), 32), key
        assert np.isfinite(embeddings).all()
        kinds = [t["kind"] for t in tokens]
        assert annotation["counts"] == {k: kinds.count(k) for k in ("scene", "object", "action")}
        assert kinds.count("scene") == 4 and kinds.count("object") >= 1 and kinds.count("action") >= 1
        duration = annotation["duration_s"]
        for token in tokens:
            x0, y0, x1, y1 = token["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert 0 <= token["start_s"] <= token["frame_s"] <= token["end_s"] <= duration + 1e-3
        scenes = [t for t in tokens if t["kind"] == "scene"]
        # Scene tokens tile the video: each stands for the stretch between its neighbours' midpoints.
        assert scenes[0]["start_s"] == 0 and scenes[-1]["end_s"] == pytest.approx(duration, abs=1e-3)
        assert all(a["end_s"] == b["start_s"] for a, b in itertools.pairwise(scenes))
        assert "labels" in annotation  # the video's own annotation travels with its tokens
    assert json.loads((extracted / "settings.json").read_text())["frames"] == 16


def test_a_finished_extraction_rerun_does_nothing_and_other_settings_are_refused(models, synth_shards, extracted):
    before = {p.name: p.stat().st_mtime_ns for p in extracted.glob("part-*.tar")}
    assert main(_args(models, synth_shards, extracted)) == 0
    assert {p.name: p.stat().st_mtime_ns for p in extracted.glob("part-*.tar")} == before
    changed = load_recipe("seal/extract", _args(models, synth_shards, extracted, "data.frames=8",
                                                "extraction.keyframes=3")[2:], stage="predict")
    with pytest.raises(ConfigError, match=r"other settings \(extraction.keyframes, frames\)"):
        changed.task.build_datamodule(changed.to_object())


def test_missing_models_are_named_together(synth_shards, tmp_path):
    recipe = load_recipe("seal/extract", [f"data.predict={synth_shards}", f"output.folder={tmp_path}",
                                          "models.encoder=x", "models.sam2=null", "models.detector=null",
                                          "extraction.keyframes=0"],
                         stage="predict")
    with pytest.raises(ConfigError) as error:
        recipe.task.build_module(recipe.to_object())
    assert "object tokens need models.sam2" in str(error.value) and "action tokens need models.detector" in \
        str(error.value) and "extraction.keyframes must be at least 1, got 0" in str(error.value)


@pytest.mark.timeout(600)
def test_a_killed_extraction_resumes_to_the_same_tokens(models, synth_shards, extracted, tmp_path):
    out = tmp_path / "tokens"
    args = _args(models, synth_shards, out, "output.part_videos=1")
    process = subprocess.Popen([sys.executable, "-m", "lvu", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(out.glob("part-*.tar"))) >= 2:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert 2 <= len(_read(out)) < VIDEOS
    assert main(args) == 0
    _same_tokens(_read(out), _read(extracted))


@pytest.mark.timeout(600)
def test_two_processes_extract_each_video_once_with_the_same_tokens(models, synth_shards, extracted, tmp_path):
    out = tmp_path / "tokens"
    # Lightning starts rank 1 by re-running the command line: run lvu as one.
    subprocess.run([sys.executable, "-m", "lvu", *_args(models, synth_shards, out, "trainer=ddp",
                                                      "trainer.accelerator=cpu", "trainer.devices=2")],
                   check=True, capture_output=True, timeout=500)
    names = sorted(p.name for p in out.glob("part-*.tar"))
    assert any(n.startswith("part-R000") for n in names) and any(n.startswith("part-R001") for n in names)
    _same_tokens(_read(out), _read(extracted))


def test_masks_detections_and_crops_on_one_frame(models):
    frame = torch.zeros(48, 64, 3, dtype=torch.uint8)
    frame[10:30, 20:40] = 255
    crops = crop_resized(frame, torch.tensor([[20.0, 10.0, 40.0, 30.0], [60.0, 40.0, 90.0, 90.0]]), 16)
    assert crops.shape == (2, 16, 16, 3) and crops[0].min() == 255  # the white square alone
    assert crops[1].shape == (16, 16, 3)  # a box past the edge is clipped, not empty
    cpu = torch.device("cpu")
    loose = MaskGenerationConfig(points_per_side=4, points_per_batch=8, pred_iou_threshold=0,
                                 stability_threshold=0, stability_offset=0)
    kept = MaskProposer.from_pretrained(models["sam2"], loose, cpu, torch.float32).propose(frame)
    assert kept.masks.shape[1:] == (48, 64) and len(kept.masks) >= 1
    assert (kept.crops[:, 2] <= 64).all() and (kept.crops[:, 3] <= 48).all()
    strict = MaskGenerationConfig(points_per_side=4, points_per_batch=8)  # the paper's thresholds: random masks fail
    assert len(MaskProposer.from_pretrained(models["sam2"], strict, cpu, torch.float32).propose(frame).masks) == 0
    detector = Detector.from_pretrained(models["detector"], DetectionConfig(score_threshold=0, max_per_frame=3),
                                        cpu, torch.float32)
    found = detector.detect(frame[None].repeat(3, 1, 1, 1))
    assert len(found) == 3 and all(len(f.boxes) == 3 for f in found)
    assert torch.equal(found[0].boxes, found[2].boxes)  # same frame, same detections
    assert (found[0].scores[:-1] >= found[0].scores[1:]).all()  # best first
    assert (found[0].boxes[:, 2] <= 64).all() and (found[0].boxes[:, 3] <= 48).all()
    none = Detector.from_pretrained(models["detector"], DetectionConfig(score_threshold=0.99), cpu, torch.float32)
    assert all(len(f.boxes) == 0 for f in none.detect(frame[None]))


def test_kinds_not_asked_for_need_no_model_and_repeated_frames_are_dropped(models):
    encoder = ClipEncoder.from_pretrained(models["encoder"])
    frames = torch.randint(0, 255, (6, 48, 64, 3), dtype=torch.uint8)
    tokens = Extractor(ExtractionConfig(kinds=["scene"], scene_frames=3), encoder).extract(
        frames, torch.arange(6.0), 6.0)
    assert tokens.counts() == {"scene": 3, "object": 0, "action": 0} and tokens.embeddings.shape == (3, 32)
    with pytest.raises(LvuError, match="object tokens need a SAM2 model"):
        Extractor(ExtractionConfig(kinds=["object"]), encoder).extract(frames, torch.arange(6.0), 6.0)
    kept, times = distinct_frames(frames[[0, 0, 1, 2, 2]], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert len(kept) == 3 and times.tolist() == [0.0, 0.5, 1.0]


def _select_args(shards: Path, tokens: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "seal/select", f"data.predict={shards}", f"tokens={tokens}", f"output.folder={out}",
            f"runs_root={out.parent / 'runs'}", "data.num_workers=0", "selection.budget=3", "output.frame_size=32",
            *extra]


def _mc_questions(shards: Path) -> dict[str, list[dict]]:
    from lvu.data.loader import SampleSet
    from lvu.data.shards import resolve_shards

    found: dict[str, list[dict]] = {}
    SampleSet(resolve_shards([str(shards)])).select(lambda a: found.update({a["__key__"]: a.get("mc") or []}))
    return found


@pytest.fixture(scope="module")
def selected(synth_shards, extracted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seal-selected") / "selected"
    assert main(_select_args(synth_shards, extracted, out)) == 0
    return out


def test_selection_writes_each_question_its_selected_crops_in_temporal_order(models, synth_shards, extracted,
                                                                            selected):
    import av
    from transformers import AutoTokenizer

    from lvu.models.clip_encoders import embed_text

    tokens = _read(extracted)
    questions = _mc_questions(synth_shards)
    dataset = wds.WebDataset(sorted(glob.glob(str(selected / "part-*.tar"))), shardshuffle=False).decode()
    samples = {s["__key__"]: s for s in dataset}
    assert sorted(samples) == sorted(f"{video}--q{n}" for video, qs in questions.items() for n in range(len(qs)))
    encoder = ClipEncoder.from_pretrained(models["encoder"])
    tokenizer = AutoTokenizer.from_pretrained(models["encoder"])
    for key, sample in samples.items():
        video, number = key.rsplit("--q", 1)
        seal, question = sample["json"]["seal"], sample["json"]["mc"]
        asked = questions[video][int(number)]
        assert question == [{**asked, "uid": asked.get("uid", number)}] and seal["query"] == asked["question"]
        # The selection, recomputed here from the token shard and the question: the same tokens.
        embeddings = torch.from_numpy(tokens[video]["npy"].astype(np.float32))
        query = embed_text(encoder, tokenizer, [asked["question"]])[0]
        expected = select(embeddings, query, SelectionConfig(budget=3)).indices.tolist()
        assert sorted(t["index"] for t in seal["tokens"]) == expected
        times = [t["frame_s"] for t in seal["tokens"]]
        assert times == sorted(times) and len(times) == 3
        assert [tokens[video]["json"]["tokens"][t["index"]]["frame_s"] for t in seal["tokens"]] == times
        with av.open(__import__("io").BytesIO(sample["mp4"])) as container:
            frames = [(f.time, f.to_ndarray(format="rgb24").shape) for f in container.decode(video=0)]
        assert [shape for _, shape in frames] == [(32, 32, 3)] * 3
        assert [round(t, 3) for t, _ in frames] == pytest.approx(times, abs=0.0025)  # ties 1 ms apart


def test_streaming_selection_and_a_foreign_encoder(models, synth_shards, extracted, tmp_path, capsys):
    out = tmp_path / "streaming"
    assert main(_select_args(synth_shards, extracted, out, "mode=streaming", "selection.window=4")) == 0
    assert json.loads((out / "settings.json").read_text())["mode"] == "streaming"
    assert len(list(glob.glob(str(out / "part-*.tar")))) == 1
    other = save_tiny_clip(tmp_path / "other-clip", seed=1)
    assert main(_select_args(synth_shards, extracted, tmp_path / "foreign", f"encoder={other}")) != 0
    assert "were extracted with" in capsys.readouterr().err


def test_the_selected_tokens_answered_by_a_host_through_lvu_eval(eval_host, synth_shards, selected, tmp_path):
    from support.hosts import FRAME

    folder = tmp_path / "qa"
    assert main(["eval", "seal/lvbench_qa", "eval=lvbench", f"host.path={eval_host}", f"data.predict={selected}",
                 f"run_dir={folder}", f"data.frame_size={FRAME}", "data.eval_frames=3", "data.num_workers=0",
                 "trainer.precision=32-true", "trainer.progress_bar=none", "parts.llm.mode=frozen"]) == 0
    results = json.loads((folder / "results.json").read_text())["metrics"]
    assert results["questions"] == sum(len(qs) for qs in _mc_questions(synth_shards).values())
    assert results["unanswered"] == 0 and {"accuracy/KIR", "accuracy/TG"} <= set(results)
    answers = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    assert all(len(a["frame_times"]) == 3 for a in answers)  # the three selected tokens, each one frame


def test_siglip_embeds_queries_and_frames_in_one_space(models, tmp_path):
    """SigLIP (max-length padding, no attention mask in its text tower) works as the encoder beside CLIP."""
    from transformers import AutoTokenizer, SiglipConfig, SiglipModel

    from lvu.models.clip_encoders import embed_text, text_states

    folder = tmp_path / "siglip"
    AutoTokenizer.from_pretrained(models["encoder"]).save_pretrained(folder)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 300, "max_position_embeddings": 16, "pad_token_id": 0, "bos_token_id": 1,
            "eos_token_id": 1}
    SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).save_pretrained(folder)
    encoder = ClipEncoder.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pair = embed_text(encoder, tokenizer, ["what is the red square doing?", "when"])
    alone = embed_text(encoder, tokenizer, ["when"])
    assert pair.shape == (2, encoder.dim) and torch.allclose(pair[1], alone[0], atol=1e-5)  # max-length padding
    pooled, states, mask = text_states(encoder, tokenizer, ["when"])
    assert torch.allclose(pooled, alone, atol=1e-5)
    assert states.shape == (1, 16, 32) and mask.shape == (1, 16) and 0 < int(mask.sum()) < 16
    assert encoder.embed(torch.zeros(2, 1, 32, 32, 3, dtype=torch.uint8)).shape == (2, encoder.dim)
    # CLIP: one pass gives the projected pooled vector and the token states, as the text tower does them apart.
    clip = ClipEncoder.from_pretrained(models["encoder"])
    ids = tokenizer(["when"], return_tensors="pt")
    alone = clip.model.text_model(input_ids=ids.input_ids, attention_mask=ids.attention_mask)
    pooled, states, _ = text_states(clip, tokenizer, ["when"])
    assert torch.allclose(pooled, clip.model.text_projection(alone.pooler_output), atol=1e-5)
    assert torch.allclose(states, alone.last_hidden_state, atol=1e-5)


def test_pixel_rules_follow_each_processor_and_sigmoid_detectors_are_read(tmp_path):
    from types import SimpleNamespace

    from lvu.models.seal_extract import pixel_rule

    frames = torch.full((1, 40, 80, 3), 255, dtype=torch.uint8)
    plain = tmp_path / "rtdetr"
    plain.mkdir()
    (plain / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": False, "size": {"height": 32, "width": 48}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    rule = pixel_rule(plain)
    pixels = rule.prepare(frames, torch.device("cpu"), torch.float32)
    assert pixels.shape == (1, 3, 32, 48) and torch.allclose(pixels, torch.ones_like(pixels))  # [0, 1], no mean/std
    detr = tmp_path / "detr"
    detr.mkdir()
    (detr / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 800, "longest_edge": 1333}}))
    assert pixel_rule(detr).size_for(40, 80) == (666, 1333)  # the shorter side to 800 unless the longer passes 1333
    assert pixel_rule(detr).size_for(100, 100) == (800, 800)
    assert pixel_rule(tmp_path, fixed=(64, 64)).size_for(40, 80) == (64, 64)
    # No processor file: the config's image size, (height, width) or a square side; else 640.
    assert pixel_rule(tmp_path, config=SimpleNamespace(image_size=[32, 48])).size_for(40, 80) == (32, 48)
    assert pixel_rule(tmp_path, config=SimpleNamespace(image_size=224)).size_for(40, 80) == (224, 224)
    assert pixel_rule(tmp_path, config=SimpleNamespace()).size_for(40, 80) == (640, 640)

    class Sigmoid(torch.nn.Module):
        config = SimpleNamespace(model_type="rt_detr")

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values):
            logits = torch.tensor([[[2.0, -9.0], [-9.0, -9.0], [0.0, 1.0]]]).expand(len(pixel_values), -1, -1)
            boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1], [0.25, 0.25, 0.5, 0.5]]])
            return SimpleNamespace(logits=logits, pred_boxes=boxes.expand(len(pixel_values), -1, -1))

    detector = Detector(Sigmoid(), DetectionConfig(score_threshold=0.5, max_per_frame=5), rule)
    found = detector.detect(frames)[0]
    # Sigmoid scores, every class counted (a softmax head would drop the last class as "no object"):
    assert torch.allclose(found.scores, torch.sigmoid(torch.tensor([2.0, 1.0])))
    assert torch.allclose(found.boxes[0], torch.tensor([20.0, 10.0, 60.0, 30.0]))  # (cx, cy, w, h) -> pixels


def test_a_video_without_tokens_still_gets_its_questions(models, synth_shards, extracted, tmp_path):
    """Every question stays in what lvu eval scores: a video missing from the token shards gets one blank frame."""
    tokens = tmp_path / "tokens"
    kept = sorted(_read(extracted).items())[1:]
    missing = sorted(_read(extracted))[0]
    write_part(part_path(tokens, 0, 0), [(key, sample) for key, sample in kept])
    (tokens / "settings.json").write_text((extracted / "settings.json").read_text())
    out = tmp_path / "selected"
    assert main(_select_args(synth_shards, tokens, out)) == 0
    dataset = wds.WebDataset(sorted(glob.glob(str(out / "part-*.tar"))), shardshuffle=False).decode()
    samples = {s["__key__"]: s for s in dataset}
    questions = _mc_questions(synth_shards)
    assert len(samples) == sum(len(qs) for qs in questions.values())
    blank = [s for k, s in samples.items() if k.startswith(f"{missing}--q")]
    assert len(blank) == len(questions[missing]) and all(s["json"]["seal"]["tokens"] == [] for s in blank)
    assert all("blank frame" in s["json"]["seal"]["note"] for s in blank)


def test_a_stop_writes_the_buffered_videos_and_memory_settings_may_change(models, synth_shards, extracted, tmp_path):
    from types import SimpleNamespace

    from lvu.tasks.seal.parts import PartWriter, VideoOutput

    writer = PartWriter(tmp_path / "out", part_videos=16, identity={}, kind="features")
    writer.folder.mkdir()
    trainer = SimpleNamespace(global_rank=0, world_size=1)
    writer._buffer = [VideoOutput("v1", [("v1", {"json": {"a": 1}})]), VideoOutput("v2", [("v2", {"json": {}})])]
    writer.on_exception(trainer, None, RuntimeError("preempted"))
    assert [p.name for p in writer.folder.glob("part-*.tar")] == ["part-R000-000000.tar"] and not writer._buffer
    # A resumed extraction may change what only sets memory use (e.g. after running out of GPU memory).
    assert main(_args(models, synth_shards, extracted, "extraction.encode_batch=7",
                      "extraction.masks.points_per_batch=4", "extraction.detection.batch_frames=2")) == 0


def test_grounding_refuses_tokens_of_another_encoder(extracted, tmp_path):
    other = save_tiny_clip(tmp_path / "other", seed=3)
    recipe = load_recipe("seal/ground_ego4d", [f"encoder={other}", f"data.train={extracted}", "trainer=cpu"])
    with pytest.raises(ConfigError, match="were extracted with"):
        recipe.task.build_module(recipe.to_object())


def test_an_unreadable_video_is_recorded_and_not_extracted_again(models, synth_shards, tmp_path):
    import shutil

    from lvu.data.shards import write_shard

    shards = tmp_path / "shards"
    shutil.copytree(synth_shards, shards)
    (shards / "manifest.json").unlink(missing_ok=True)
    write_shard(shards / "zz-broken.tar", [("broken", {"mp4": b"not a video" * 40, "json": {}})])
    out = tmp_path / "tokens"
    assert main(_args(models, shards, out)) == 0
    failed = [json.loads(line) for line in (out / "failed-rank0.jsonl").read_text().splitlines()]
    assert [f["key"] for f in failed] == ["broken"] and failed[0]["reason"].startswith("undecodable_video")
    assert len(_read(out)) == VIDEOS and "broken" not in _read(out)
    parts = sorted(p.name for p in out.glob("part-*.tar"))
    assert main(_args(models, shards, out)) == 0  # nothing left: the broken video is not tried again
    assert sorted(p.name for p in out.glob("part-*.tar")) == parts
    assert (out / "failed-rank0.jsonl").read_text().count("\n") == 1
