"""Sampling 32 frames from 2-10 minute videos: our decoder vs a naive decode-everything loader.

Measured side by side in one run (these machines are noisy), each measurement in a fresh Python process so that peak
memory (VmHWM, minus an import-only baseline) belongs to that method alone:

* ``ours``: :class:`lvu.data.video.VideoFile` + the uniform sampler (demux the packet table, seek to keyframes,
  decode only up to each requested frame, convert only the requested frames);
* ``naive``: decode every frame to an RGB array, then pick 32 (what many training scripts do).

Then the full loader (:class:`lvu.data.loader.ShardLoader` over shards, 32 uniform frames per video) with 0, 1 and 2
workers, for throughput scaling with the core count.

    python benchmarks/bench_data.py                      # 2, 5, 10 minute videos, 24 fps, 320x240
    python benchmarks/bench_data.py --minutes 2 --repeats 2   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _memory import peak_rss_mb

FRAMES = 32


def measure(method: str, path: str, repeats: int) -> dict:
    """Runs in a child process: time ``repeats`` samplings of 32 frames and report peak memory."""
    import av

    from lvu.data.sampling import SamplerConfig, sample_frames
    from lvu.data.video import VideoFile

    data = Path(path).read_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if method == "ours":
            video = VideoFile(data)
            picked = sample_frames(SamplerConfig(num_frames=FRAMES), video.info)
            frames = video.read(picked.indices)
        elif method == "naive":
            import io

            with av.open(io.BytesIO(data)) as container:
                every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            picks = np.round(np.linspace(0, len(every) - 1, FRAMES)).astype(int)
            frames = np.stack([every[i] for i in picks])
            del every
        else:
            frames = np.zeros((FRAMES, 1, 1, 3))
        times.append(time.perf_counter() - start)
        assert frames.shape[0] == FRAMES
    return {"seconds": statistics.median(times), "peak_mb": peak_rss_mb()}


def _child(method: str, path: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", method, path, str(repeats)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _make_video(folder: Path, minutes: float, fps: float, size: tuple[int, int]) -> Path:
    from lvu.data.synth import SynthConfig, make_video

    path = folder / f"video_{minutes:g}min_{fps:g}fps_{size[0]}x{size[1]}.mp4"
    if not path.exists():
        cfg = SynthConfig(min_seconds=minutes * 60, max_seconds=minutes * 60, fps=fps, width=size[0], height=size[1])
        _, fields = make_video(0, seed=int(minutes * 10), cfg=cfg)
        path.write_bytes(fields["mp4"])
    return path


def loader_throughput(folder: Path, fps: float, size: tuple[int, int], videos: int, minutes: float) -> list[dict]:
    import torch

    from lvu.data.decoders import VideoDecoder
    from lvu.data.loader import SampleSet, ShardLoader
    from lvu.data.sampling import SamplerConfig
    from lvu.data.shards import Manifest, ShardInfo, write_shard

    shards = folder / f"shards_{videos}x{minutes:g}min"
    if not (shards / "manifest.json").exists():
        data = _make_video(folder, minutes, fps, size).read_bytes()
        write_shard(shards / "shard-000000.tar", [(f"v{i}", {"mp4": data, "json": {}}) for i in range(videos)])
        Manifest([ShardInfo(shards / "shard-000000.tar", videos)]).save(shards)
    samples = SampleSet(Manifest.load(shards).shards)

    def collate(items):
        return torch.stack([s["frames"] for s in items])

    rows = []
    for workers in (0, 1, 2):
        loader = ShardLoader(samples, VideoDecoder(SamplerConfig(num_frames=FRAMES)), collate, batch_size=1,
                             num_workers=workers, shuffle=False, drop_last=False)
        start = time.perf_counter()
        count = sum(len(b) for b in loader)
        rows.append({"workers": workers, "samples_per_s": count / (time.perf_counter() - start)})
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10])
    parser.add_argument("--fps", type=float, default=24)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lvu-bench-data"))
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)

    print(f"# {FRAMES} uniform frames per video, {args.fps:g} fps, {args.size}, median of {args.repeats}; "
          f"{os.cpu_count()} CPUs")
    baseline = _child("none", str(_make_video(folder, min(args.minutes), args.fps, size)), 1)["peak_mb"]
    print(f"{'minutes':>7} {'ours s':>8} {'naive s':>8} {'speed-up':>8} {'ours MB':>8} {'naive MB':>9}")
    for minutes in args.minutes:
        path = str(_make_video(folder, minutes, args.fps, size))
        ours, naive = _child("ours", path, args.repeats), _child("naive", path, args.repeats)
        print(f"{minutes:7g} {ours['seconds']:8.3f} {naive['seconds']:8.3f} {naive['seconds'] / ours['seconds']:7.1f}x "
              f"{ours['peak_mb'] - baseline:8.0f} {naive['peak_mb'] - baseline:9.0f}")
    rows = loader_throughput(folder, args.fps, size, videos=8, minutes=min(args.minutes))
    base = rows[0]["samples_per_s"]
    print(f"\nShardLoader, 8 videos of {min(args.minutes):g} min:")
    for row in rows:
        print(f"  workers={row['workers']}: {row['samples_per_s']:.2f} samples/s ({row['samples_per_s'] / base:.2f}x)")


if __name__ == "__main__":
    main()
