"""Small real WebDataset shards for tests and benchmarks: lavfi test patterns encoded by ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

from curation.schema import ShardSample
from pipelines.shard_writer import write_shards


def make_mp4(path: Path, size: str, frames: int, hue: int, rate: int = 25) -> bytes:
    """An H.264 ``testsrc2`` clip of ``frames`` frames at ``size`` ("WxH"), hue-rotated by ``hue``."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate={rate},hue=h={hue}", "-frames:v", str(frames),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path.read_bytes()


def write_test_shards(tmp: Path, clips: list[tuple[str, int]], target_bytes: int = 30_000) -> Path:
    """Shards under ``tmp/shards`` with one sample per (size, frames) clip, keyed ``clip00``...

    Captions are ``clip {i}`` / ``片段 {i}``; the json meta holds ``i`` and ``size``.
    """
    pairs = []
    for i, (size, frames) in enumerate(clips):
        mp4 = make_mp4(tmp / f"{i}.mp4", size, frames, i * 40)
        sample = ShardSample(key=f"clip{i:02d}", mp4=mp4, meta={"i": i, "size": size},
                             en_txt=f"clip {i}", zh_txt=f"片段 {i}")
        pairs.append((size, sample))
    root = tmp / "shards"
    write_shards(pairs, root, target_bytes=target_bytes)
    return root
