"""The units of work that flow between stages (executor-agnostic, picklable)."""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.schema import Caption, Clip, Shot, Video


@dataclass(slots=True)
class FrameSet:
    """The artifacts of the single decode pass, spilled to ``dir`` as NumPy files.

    Files (all written atomically):
        tiny.npy:       uint8 [N, 27, 48, 3], every frame (shot detection).
        pts.npy:        float64 [N], presentation time of every frame in seconds.
        keyframe.npy:   bool [N], whether the frame is a keyframe in the source.
        sparse.npy:     uint8 [M, h, w, 3], frames sampled at ``sparse_fps``.
        sparse_idx.npy: int64 [M], source frame index of each sparse frame.
        packet_bytes.npy: int64 [N], compressed bytes of every frame's packet.
        edge_cols.npy:  float32 [M, W-1], edge_rows.npy: float32 [M, H-1], the sparse
                        frames' full-resolution luma edge profiles (pipelines/artifacts.py).
    """

    dir: str
    n_frames: int
    sparse_size: tuple[int, int]  # (width, height)


@dataclass(slots=True)
class VideoTask:
    """One input file on its way through ingest, decode and shot splitting."""

    path: str
    video: Video | None = None
    frames: FrameSet | None = None
    shots: list[Shot] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class ClipTask:
    """One clip span on its way through extraction and filtering."""

    clip: Clip
    src_path: str
    frames_dir: str | None = None  # the source video's FrameSet dir, for frame-level scorers
    error: str | None = None
    todo: tuple[str, ...] | None = None  # scorer names still to run on this clip; None = all
    captions: list[Caption] = field(default_factory=list)
    caption_frames: list[bytes] | None = None  # JPEG frames sampled from the clip for the captioner

    def wants(self, scorer: str) -> bool:
        """Whether ``scorer`` should run on this task (no error, and not already done)."""
        return self.error is None and (self.todo is None or scorer in self.todo)
