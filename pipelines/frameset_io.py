"""Reading a decoded FrameSet back (the files pipelines/decode.py writes): tiny frames, sparse
frames, the timeline."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pipelines.tasks import FrameSet


def load_tiny(frames: FrameSet) -> np.ndarray:
    """uint8 [N, 27, 48, 3], memory-mapped read-only."""
    return np.load(os.path.join(frames.dir, "tiny.npy"), mmap_mode="r")


def load_sparse(frames: FrameSet) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [M, h, w, 3] memory-mapped, int64 [M] source frame index of each)."""
    return (
        np.load(os.path.join(frames.dir, "sparse.npy"), mmap_mode="r"),
        np.load(os.path.join(frames.dir, "sparse_idx.npy")),
    )


def presentation_times(times: Any) -> np.ndarray:
    """float64 [N]: the times of frames in the order a decoder emitted them, made non-decreasing.

    A decoder emits frames in presentation order, but some streams label them with permuted
    timestamps: MPEG-4 Part 2 in AVI with packed B-frames (XviD/DivX) has no pts, and the
    ones FFmpeg derives swap each B-frame with the P-frame around it (frame times
    1, 2, 3, 5, 4, 6, 8, 7, ... ticks). The set of times is right, their order is not: the
    i-th frame emitted is shown at the i-th smallest time. Well-labelled streams are
    already sorted and come back unchanged. (pts.npy files written before this was applied
    are sorted by ``load_timeline`` and the extract stage as they are read.)
    """
    t = np.asarray(times, dtype=np.float64)
    return np.sort(t, kind="stable") if len(t) > 1 and bool((np.diff(t) < 0).any()) else t


def load_timeline(frames: FrameSet) -> tuple[np.ndarray, np.ndarray]:
    """(float64 [N] frame times in seconds from the file's start, bool [N] keyframe flags)."""
    pts = presentation_times(np.load(os.path.join(frames.dir, "pts.npy")))
    return pts, np.load(os.path.join(frames.dir, "keyframe.npy"))
