"""Checks of generated videos on their decoded frames (shared by test_cut_videos and test_samples)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from samplegen.cut_videos import GroundTruth

CUT_MIN = 30.0  # mean |dY| (0-255) across a planted hard cut is above this
SHOT_MAX = 12.0  # and between consecutive frames of one plain shot below this

def decode(path: Path) -> tuple[np.ndarray, list[bool]]:
    """All frames as full-range luma, (N, H, W) int16, and each frame's keyframe flag."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = list(container.decode(stream))
    luma = np.stack([f.to_ndarray(format="gray") for f in frames]).astype(np.int16)
    return luma, [f.key_frame for f in frames]


def frame_diffs(luma: np.ndarray) -> np.ndarray:
    """d[c] = mean |Y[c] - Y[c-1]|; d[0] = 0."""
    return np.concatenate([[0.0], np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))])


def check_against_frames(path: Path, gt: GroundTruth) -> None:
    luma, _ = decode(path)
    assert len(luma) == gt.n_frames
    assert luma.shape[1:] == (gt.height, gt.width)
    d = frame_diffs(luma)
    assert d[gt.cuts].min() > CUT_MIN, d[gt.cuts]
    inside_negative = {c for a, b in gt.negatives for c in range(a, b)}
    plain = [c for a, b in gt.shots for c in range(a + 1, b) if c not in inside_negative]
    # A cut planted one frame early or late would put a large jump into `plain`.
    assert d[plain].max() < SHOT_MAX
    for (a, b), kind in zip(gt.gradual, gt.gradual_kinds, strict=True):
        if kind == "dissolve":
            hard_jump = np.abs(luma[b] - luma[a - 1]).mean()
            assert d[a : b + 1].max() < hard_jump / 2, f"the dissolve at {a} changes step by step"
        else:
            means = luma[a - 1 : b + 1].mean(axis=(1, 2))  # clean frame, fade, clean frame
            black = np.flatnonzero(means < 3)
            assert len(black) >= 1, f"the fade at {a} passes through black"
            assert np.all(np.diff(means[: black[0] + 1]) < 0) and np.all(np.diff(means[black[-1] :]) > 0)
    for (a, b), kind in zip(gt.negatives, gt.negative_kinds, strict=True):
        if kind == "flash":
            assert luma[a : b - 1].mean() > 190 and d[a] > CUT_MIN and d[b - 1] > CUT_MIN
            assert np.abs(luma[b - 1] - luma[a - 1]).mean() < SHOT_MAX, "the same scene resumes"
        else:
            assert np.median(d[a:b]) > 2 * SHOT_MAX, "a fast pan moves a lot every frame"
