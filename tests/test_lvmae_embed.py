"""`lvu data embed`: every supported encoder family, clip bookkeeping, batching, resume, bad videos."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from support.encoders import save_tiny_encoder

from lvu.cli import main
from lvu.data.decoders import open_video
from lvu.data.embed import embed_videos
from lvu.data.sampling import SamplerConfig, SamplerName, sample_frames, segment_bounds, shot_bounds
from lvu.data.shards import Manifest, ShardReader, iter_samples, resolve_shards, write_shard
from lvu.data.shots import ShotConfig, detect_shots
from lvu.errors import LvuError
from lvu.models.clip_encoders import ClipEncoder


def _features(folder):
    shards = resolve_shards(str(folder))
    reader = ShardReader(shards)
    out = {}
    for s, shard in enumerate(shards):
        for i in range(shard.samples):
            raw = reader.read(s, i)
            out[raw["__key__"]] = (np.load(io.BytesIO(raw["npy"])), json.loads(raw["json"]))
    return out


@pytest.mark.parametrize(("family", "frames", "dim"), [("clip", 3, 24), ("siglip", 3, 32), ("xclip", 4, 24),
                                                       ("videomae", 4, 32), ("vjepa2", 2, 32), ("video_llava", 3, 32)])
def test_every_family_embeds_consecutive_clips(synth_shards, tmp_path, family, frames, dim, capsys):
    encoder = save_tiny_encoder(family, tmp_path / family)
    out = tmp_path / "feats"
    assert main(["data", "embed", str(synth_shards), str(out), "--encoder", str(encoder), "--frames-per-clip",
                 str(frames), "--batch-size", "7", "--workers", "1", "--device", "cpu"]) == 0
    assert f"embedded ({dim}-wide features) 10 sample(s)" in capsys.readouterr().out
    manifest = Manifest.load(out)
    assert manifest.kind == "features" and manifest.extra["dim"] == dim and manifest.extra["frames_per_clip"] == frames
    assert (out / "label_maps.json").read_text() == (synth_shards / "label_maps.json").read_text()
    features = _features(out)
    assert len(features) == 10
    for features_array, annotation in features.values():
        bounds = segment_bounds(annotation["duration_s"], 5.0, 0.5)
        assert features_array.shape == (len(bounds), dim) and features_array.dtype == np.float16
        np.testing.assert_allclose(annotation["clips"], bounds.round(3))
        assert set(annotation["labels"]) == {"act_order", "first_scene", "dominant_shape", "event_count"}


def test_shot_segments_give_one_embedding_per_detected_shot(synth_shards, tmp_path, capsys):
    encoder = save_tiny_encoder("clip", tmp_path / "clip")
    out = tmp_path / "shots"
    assert main(["data", "embed", str(synth_shards), str(out), "--encoder", str(encoder), "--segments", "shots",
                 "--frames-per-clip", "2", "--workers", "1", "--device", "cpu"]) == 0
    assert "embedded (24-wide features) 10 sample(s)" in capsys.readouterr().out
    extra = Manifest.load(out).extra
    assert extra["segments"] == "shots" and extra["segment_seconds"] is None and extra["shots"]["threshold"] == 0.3
    embedded = _features(out)
    counts = set()
    for raw in iter_samples(resolve_shards(str(synth_shards))):
        video = open_video(raw)
        expected = shot_bounds(detect_shots(video, ShotConfig(enabled=True)), video.info.duration_s)
        features, annotation = embedded[raw["__key__"]]
        assert features.shape == (len(expected), 24)
        np.testing.assert_allclose(annotation["clips"], expected.round(3))
        assert annotation["clips"][0][0] == 0 and annotation["clips"][-1][1] == annotation["duration_s"]
        # Against the video's own ground truth, not only the detector: every act change (a cut to another place)
        # starts a segment, to within one frame.
        starts = [clip[0] for clip in annotation["clips"]]
        for act in json.loads(raw["json"])["synth"]["acts"][1:]:
            assert min(abs(s - act["start_s"]) for s in starts) <= 1 / video.info.fps + 1e-3, act
        counts.add(len(expected))
    assert len(embedded) == 10 and len(counts) > 1  # variable-length: videos have different numbers of shots
    with pytest.raises(LvuError, match="--segments must be fixed or shots, got 'scenes'"):
        embed_videos([str(synth_shards)], tmp_path / "bad", encoder, segments="scenes", device="cpu")


def test_embeddings_are_the_encoder_mean_over_each_clip_whatever_the_batching(synth_shards, tmp_path):
    encoder_path = save_tiny_encoder("clip", tmp_path / "clip")
    runs = {}
    for batch in (3, 64):
        out = tmp_path / f"b{batch}"
        assert main(["data", "embed", str(synth_shards), str(out), "--encoder", str(encoder_path),
                     "--frames-per-clip", "2", "--batch-size", str(batch), "--dtype", "float32", "--workers", "2",
                     "--device", "cpu"]) == 0
        runs[batch] = _features(out)
    for key in runs[3]:
        np.testing.assert_allclose(runs[3][key][0], runs[64][key][0], rtol=1e-4, atol=1e-5)
    # Recompute the first clip of one video by hand: decode its 2 frames, embed each, average.
    raw = ShardReader(resolve_shards(str(synth_shards))).read(0, 1)
    video = open_video(raw)
    picked = sample_frames(SamplerConfig(name=SamplerName.segments, segment_seconds=5, frames_per_segment=2),
                           video.info)
    encoder = ClipEncoder.from_pretrained(encoder_path, device="cpu")
    scale = encoder.image_size / min(video.info.width, video.info.height)
    size = (round(video.info.width * scale), round(video.info.height * scale))
    frames = torch.from_numpy(video.read(picked.indices[:2], size=size))
    expected = encoder.embed(frames[None]).numpy()[0]
    np.testing.assert_allclose(runs[64][raw["__key__"]][0][0], expected, rtol=1e-4, atol=1e-5)


def test_resume_skips_finished_shards_and_bad_videos_are_listed(synth_shards, tmp_path):
    encoder = save_tiny_encoder("clip", tmp_path / "clip")
    videos = tmp_path / "videos"
    shutil.copytree(synth_shards, videos)
    good = ShardReader(resolve_shards(str(synth_shards))).read(2, 0)
    short = open_video(good).info.duration_s
    assert short > 2.5
    write_shard(videos / "shard-000002.tar", [
        ("broken", {"mp4": b"junk" * 100, "json": {"duration_s": 10}}),
        (good["__key__"], {"mp4": good["mp4"], "json": good["json"]}),
    ])
    manifest = Manifest.load(videos)
    manifest.shards[2].samples = 2
    manifest.save(videos)
    out = tmp_path / "feats"
    args = ["data", "embed", str(videos), str(out), "--encoder", str(encoder), "--frames-per-clip", "2", "--device",
            "cpu", "--workers", "1"]
    assert main(args) == 0
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(s["item"], s["reason"]) for s in skipped] == [("broken", "undecodable_video")]
    assert Manifest.load(out).total == 9
    first = (out / "shard-000000.tar").read_bytes()
    (out / "shard-000001.tar").unlink()
    stamp = (out / "shard-000000.tar").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "shard-000000.tar").stat().st_mtime_ns == stamp  # kept, not recomputed
    assert (out / "shard-000000.tar").read_bytes() == first and (out / "shard-000001.tar").is_file()
    assert Manifest.load(out).total == 9 and len((out / "skipped.jsonl").read_text().splitlines()) == 1


def test_encoder_errors(tmp_path, synth_shards):
    from transformers import Qwen2Config, Qwen2Model

    Qwen2Model(Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=1, vocab_size=32)).save_pretrained(tmp_path / "llm")
    with pytest.raises(LvuError, match="model type 'qwen2' is not supported; use CLIP, SigLIP, X-CLIP, "
                                         "VideoMAE, V-JEPA 2 or Video-LLaVA"):
        ClipEncoder.from_pretrained(tmp_path / "llm", device="cpu")
    with pytest.raises(LvuError, match=r"no config\.json"):
        ClipEncoder.from_pretrained(tmp_path, device="cpu")
    encoder = save_tiny_encoder("videomae", tmp_path / "vmae")
    assert main(["data", "embed", str(synth_shards), str(tmp_path / "x"), "--encoder", str(encoder),
                 "--frames-per-clip", "3", "--device", "cpu"]) == 1


def test_video_llava_tower_is_read_alone_and_equals_the_whole_models_tower(tmp_path):
    """LanguageBind's stand-in: only Video-LLaVA's video tower is loaded, with the checkpoint's weights (a tower left
    at random init would differ), and a clip is the mean of its frames' pooled states."""
    from transformers import VideoLlavaForConditionalGeneration

    path = save_tiny_encoder("video_llava", tmp_path / "vl")
    encoder = ClipEncoder.from_pretrained(path, device="cpu")
    clips = torch.randint(0, 256, (2, 3, 40, 48, 3), dtype=torch.uint8)
    whole = VideoLlavaForConditionalGeneration.from_pretrained(path).eval()
    with torch.no_grad():
        pooled = whole.model.video_tower(pixel_values=encoder.preprocess(clips.flatten(0, 1))).pooler_output
    torch.testing.assert_close(encoder.embed(clips), pooled.view(2, 3, -1).mean(1))
    assert sum(p.numel() for p in encoder.model.parameters()) < sum(p.numel() for p in whole.parameters()) / 2
    vjepa = ClipEncoder.from_pretrained(save_tiny_encoder("vjepa2", tmp_path / "vj"), device="cpu")
    with pytest.raises(LvuError, match="whole tubelets of 2 frames, got 3 frames per clip"):
        vjepa.embed(clips)
