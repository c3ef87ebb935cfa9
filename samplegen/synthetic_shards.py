"""Small real WebDataset shards for tests and benchmarks: lavfi test patterns encoded by ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from curation.schema import ShardSample
from pipelines.shard_writer import write_shards


def make_mp4(path: Path, size: str, frames: int, hue: int, rate: int = 25) -> bytes:
    """An H.264 ``testsrc2`` clip of ``frames`` frames at ``size`` ("WxH"), hue-rotated by ``hue``.

    Machines without the ``ffmpeg`` command (GPU images) get a PyAV-encoded moving pattern instead.
    """
    if shutil.which("ffmpeg") is None:
        return _make_mp4_pyav(path, size, frames, hue, rate)
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


def _make_mp4_pyav(path: Path, size: str, frames: int, hue: int, rate: int) -> bytes:
    """Colour bars that scroll one pixel a frame plus a bouncing white square, through PyAV's libx264."""
    import av

    w, h = (int(v) for v in size.split("x"))
    angle = np.deg2rad(hue) + np.linspace(0, 2 * np.pi, 7, endpoint=False)
    bars = (127.5 + 127.5 * np.stack([np.cos(angle), np.cos(angle - 2.1), np.cos(angle + 2.1)], 1))
    cols = bars[(np.arange(2 * w) * 7 // w) % 7].astype(np.uint8)  # [2W, 3]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(frames):
            img = np.repeat(np.roll(cols, t, 0)[None, :w], h, 0).copy()
            s, x, y = max(4, h // 6), (3 * t) % max(1, w - h // 6), (2 * t) % max(1, h - h // 6)
            img[y:y + s, x:x + s] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()
