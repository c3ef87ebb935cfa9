"""Decode: the single decode pass over each usable video (docs/architecture.md "Decode once").

Wraps ``pipelines.decode.decode_video``: frames go to ``<work_dir>/frames/<video_id>``,
so a rerun (same bytes, same parameters) finds them and decodes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

from pipelines.decode import DecodeError, DecodeResult, decode_video
from pipelines.stage import Resources, Stage, unhashed
from pipelines.tasks import VideoTask


@dataclass
class DecodeConfig:
    sparse_fps: float = 2.0  # the decode pass's sparse frames for the scorers, per second
    sparse_width: int = 256  # ... their width, px
    sparse_height: int = 144  # ... and height, px
    threads: int = unhashed(0)  # 0 = let FFmpeg decide

    # (low, high, low exclusive) by field, checked at load (pipelines/config_check.py; others: >= 0)
    RANGES: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {
        "sparse_fps": (0, None, True), "sparse_width": (16, None, False), "sparse_height": (16, None, False)}


@dataclass
class Decode(DecodeConfig, Stage[VideoTask, VideoTask]):
    """Decode each 'ok' video once into its FrameSet; record failures on the video row.

    A file that yields no frame becomes ``status='error'``. A file that breaks midway
    keeps its frames; the video stays 'ok' and ``video.error`` carries the warning
    (e.g. "truncated: decode stopped after 48 frames: ..."), so it is not silent.
    ``video.n_frames`` becomes the exact decoded count.
    """

    name: ClassVar[str] = "decode"
    # FFmpeg frame threads keep about two cores busy; more per video helps little.
    resources: ClassVar[Resources] = Resources(cpus=2.0)

    # Where the frames live, not what they are: kept out of params() and the params hash.
    work_dir: str = field(default="work", compare=False)

    def frames_dir(self, video_id: str) -> str:
        return os.path.join(self.work_dir, "frames", video_id)

    def decode_args(self) -> dict[str, object]:
        """``decode_video``'s keyword arguments from this configuration."""
        return {"sparse_fps": self.sparse_fps, "sparse_size": (self.sparse_width, self.sparse_height),
                "threads": self.threads}

    def process(self, task: VideoTask) -> VideoTask:
        video = task.video
        if video is None or video.status == "error":
            return task
        try:
            result = decode_video(task.path, self.frames_dir(video.video_id), **self.decode_args())  # type: ignore[arg-type]
        except DecodeError as e:
            video.status, video.error = "error", str(e)
            return task
        record_decode(task, result)
        return task


def record_decode(task: VideoTask, result: DecodeResult) -> None:
    """Put a decode's FrameSet on the task and its frame count and warning on the video row."""
    video = task.video
    assert video is not None
    task.frames = result.frames
    video.n_frames = result.frames.n_frames
    if result.truncated:
        video.error = f"truncated: {result.warning}"
