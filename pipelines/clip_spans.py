"""Clip spans: which frame ranges of a shot become clips (a pure function).

A shot [start, end) is trimmed at both ends (cuts often leave a frame of motion
blur or compression residue), then cut into windows of at most ``max_s`` seconds
that start every ``stride_s`` seconds. The trailing remainder is emitted too, even
when it is shorter than ``min_s``: a minimum length is a *filter* decision, so the
short span gets a catalog row with ``reject_reason='too_short'`` rather than
vanishing here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass
class ClipConfig:
    """clips: how shots become clip spans (:func:`clip_spans`, :func:`align_to_keyframes`)."""

    # shortest useful clip, seconds (shorter spans still get a row; filters.min_duration_s rejects them)
    min_s: float = 2.0
    max_s: float = 10.0  # longer shots are cut into windows of at most this
    stride_s: float = 10.0  # window start step for shots longer than max_s
    # frames dropped at the start of each shot (a cut often leaves a frame of motion)
    trim_start_frames: int = 2
    trim_end_frames: int = 2  # frames dropped at the end of each shot
    # move clip boundaries up to this far onto keyframes so the clip is a stream copy (0: off)
    keyframe_align_s: float = 0.5

    # (low, high, low exclusive) by field, checked at load (pipelines/config_check.py; others: >= 0)
    RANGES: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {
        "min_s": (0, None, True), "max_s": (0, None, True), "stride_s": (0, None, True)}


def clip_spans(
    start_frame: int,
    end_frame: int,
    fps: float,
    min_s: float,
    max_s: float,
    stride_s: float,
    trim_start_frames: int = 0,
    trim_end_frames: int = 0,
) -> list[tuple[int, int]]:
    """Frame spans [s, e) of the clips cut from one shot.

    Args:
        start_frame: first frame of the shot.
        end_frame: one past the shot's last frame.
        fps: frames per second, used to turn seconds into frames.
        min_s: shortest useful clip, seconds; validated only, the filter stage enforces it.
        max_s: longest clip, seconds.
        stride_s: step between window starts, seconds (== max_s: back-to-back windows;
            < max_s: overlapping windows).
        trim_start_frames: frames dropped at the start of the shot.
        trim_end_frames: frames dropped at the end of the shot.

    Returns:
        Sorted, non-empty spans inside the trimmed shot.
    """
    if fps <= 0 or max_s <= 0 or stride_s <= 0 or min_s > max_s:
        raise ValueError(
            f"need fps, max_s, stride_s > 0 and min_s <= max_s (got {fps}, {min_s}, {max_s}, {stride_s})"
        )
    s = start_frame + trim_start_frames
    e = end_frame - trim_end_frames
    if e - s < 1:  # a shot shorter than its trims keeps its untrimmed span
        s, e = start_frame, end_frame
    if e - s < 1:
        return []
    max_f = max(1, math.floor(max_s * fps + 1e-6))
    stride_f = max(1, math.floor(stride_s * fps + 1e-6))
    if e - s <= max_f:
        return [(s, e)]
    spans: list[tuple[int, int]] = []
    a = s
    while a < e:
        b = min(e, a + max_f)
        spans.append((a, b))
        if b == e:
            break
        a += stride_f
    return spans


def align_to_keyframes(
    spans: list[tuple[int, int]],
    keyframes: np.ndarray,
    shot_start: int,
    shot_end: int,
    n_frames: int,
    max_shift: int,
) -> list[tuple[int, int]]:
    """Move span boundaries onto nearby keyframes so clips can be stream-copied.

    A clip that starts on a keyframe and ends just before one (or at the end of the
    stream) is exactly a run of whole GOPs: extraction copies its packets instead of
    re-encoding, which is most of the cost of a curation run. Each boundary moves to the
    nearest keyframe within ``max_shift`` frames, staying inside the shot (so it may
    take back trimmed frames: with exact cut frames those are clean). A span whose two
    boundaries cannot both be aligned is left as it is.

    Args:
        spans: [start, end) frame spans of one shot.
        keyframes: sorted frame indices of the source's keyframes.
        shot_start, shot_end: the shot's frames [shot_start, shot_end).
        n_frames: frames in the video (the stream end is a valid span end).
        max_shift: how far a boundary may move, in frames; 0 disables alignment.
    """
    if max_shift <= 0 or len(keyframes) == 0:
        return spans
    ends = np.append(keyframes, n_frames)

    def nearest(points: np.ndarray, x: int) -> int | None:
        ok = points[(points >= max(shot_start, x - max_shift)) & (points <= min(shot_end, x + max_shift))]
        return int(ok[np.argmin(np.abs(ok - x))]) if len(ok) else None

    out = []
    for a, b in spans:
        a2, b2 = nearest(keyframes, a), nearest(ends, b)
        out.append((a2, b2) if a2 is not None and b2 is not None and b2 > a2 else (a, b))
    return out
