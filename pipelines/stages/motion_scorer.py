"""How much a clip moves and how its camera moves, from optical flow on the decoded frames.

The method, its sign conventions and its measured speed are in pipelines/motion.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipelines import motion
from pipelines.clip_frames import clip_sparse, clip_tiny
from pipelines.scorers import Rule, ScorerSpec, above, below, register
from pipelines.stage import Resources, Stage
from pipelines.tasks import ClipTask


@dataclass
class MotionScoreConfig:
    """scores.motion: Farneback flow on the sparse frames, camera label."""

    flow_size: int = 128  # long side of the flow images, px
    static_motion: float = 0.005  # frame widths/s: below this the camera is 'static'
    min_explained: float = 0.5  # flow energy the camera model must explain, else 'mixed'
    min_share: float = 0.5  # share of the speed the dominant pan/tilt/zoom must carry
    fast_motion: float = 0.5  # frame widths/s: above this consecutive tiny frames measure a pair
    tiny_every_s: float = 0.5  # tiny-frame spacing for clips shorter than the sparse step


@dataclass
class MotionScorer(MotionScoreConfig, Stage[ClipTask, ClipTask]):
    """Sets ``motion`` (frame widths per second) and ``camera_motion`` on every clip (kept or
    rejected); the decide step filters on them. Fields are measuring parameters.

    A clip with fewer than two sparse frames is measured on its tiny frames about
    ``tiny_every_s`` apart; a clip of one frame has no motion to measure and keeps None.
    """

    name: ClassVar[str] = "motion"
    version: ClassVar[int] = 1
    resources: ClassVar[Resources] = Resources(cpus=1.0)  # Farneback: ~2-4 ms a frame pair
    columns: ClassVar[tuple[str, ...]] = ("motion", "camera_motion")

    def process(self, task: ClipTask) -> ClipTask:
        if task.error:
            return task
        clip = task.clip
        tiny = np.asarray(clip_tiny(task))
        frames, frame_idx = clip_sparse(task)
        if len(frames) < 2:
            frames, frame_idx = motion.tiny_samples(tiny, clip.start_frame, clip.fps, self.tiny_every_s)
        if len(frames) < 2:
            return task
        pairs = motion.clip_pairs(frames, frame_idx, clip.fps, self.flow_size)
        pairs = motion.with_fast_motion(pairs, frame_idx, tiny, clip.start_frame, clip.fps, self.fast_motion)
        clip.scores.motion = float(np.median([p.speed for p in pairs]))
        clip.scores.camera_motion = motion.camera_label(
            pairs, self.static_motion, self.min_explained, self.min_share
        )
        return task


register(ScorerSpec(
    name="motion", stage=MotionScorer, cost=30, key="motion",
    ranges={
        "flow_size": (16, None, False),
        "min_explained": (0, 1, False),
        "min_share": (0, 1, False),
        "tiny_every_s": (0, None, True),
    },
    columns=MotionScorer.columns, rules=(
        Rule("static", 300, lambda x, f, s: x["motion"] < f.min_motion,
             lambda r, f, s: below(r, "motion", f.min_motion), ("motion",),
             ("motion", "min", "filters.min_motion")),
        Rule("too_fast", 310, lambda x, f, s: x["motion"] > f.max_motion,
             lambda r, f, s: above(r, "motion", f.max_motion), ("motion",)),
    ),
))
