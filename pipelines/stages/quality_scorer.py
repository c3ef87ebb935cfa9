"""Picture-quality scores of a clip: sharpness, brightness, black frames, bars, frozen frames.

Reads the decode pass's frames (pipelines/clip_frames.py); the measurements and the reasons
for their thresholds are in pipelines/quality.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipelines import quality
from pipelines.clip_frames import clip_sparse, clip_tiny, luma
from pipelines.scorers import Rule, ScorerSpec, above, below, register
from pipelines.shot_detect import black_frames
from pipelines.stage import Resources, Stage
from pipelines.tasks import ClipTask


@dataclass
class QualityScoreConfig:
    """scores.quality: blur, exposure, black frames, bars, frozen frames."""

    black_luma: float = 20.0  # a frame is black below this mean luma (and flat)
    border_luma: float = 10.0  # a bar line's 95th-percentile luma is at most this
    bar_frames: float = 0.8  # ... in at least this fraction of the non-black frames
    bar_step: float = 8.0  # the picture inside a bar is at least this much brighter
    min_picture: float = 0.2  # bars leaving less of a side than this are dark content
    frozen_max_diff: int = 4  # identical tiny frames differ by at most this ...
    frozen_mean_diff: float = 0.05  # ... and by at most this on average (0-255)
    frozen_min_s: float = 0.25  # identical pairs count only in runs this long (pipelines/quality.py)


@dataclass
class QualityScorer(QualityScoreConfig, Stage[ClipTask, ClipTask]):
    """Sets blur, luma, luma_high, clipped, black_frac, black_border, crop_* and frozen on every clip
    (kept or rejected); the decide step filters on them. Fields are measuring parameters.

    A clip span that holds no sparse frame (shorter than the sparse step) is measured on its
    tiny frames instead, except ``blur``: a Laplacian at 48x27 is not comparable, so it
    stays None.
    """

    name: ClassVar[str] = "quality"
    version: ClassVar[int] = 2
    resources: ClassVar[Resources] = Resources(cpus=0.5)  # numpy on ~2 fps 256x144 frames
    columns: ClassVar[tuple[str, ...]] = (
        "blur", "luma", "luma_high", "clipped", "black_frac", "black_border",
        "crop_x", "crop_y", "crop_w", "crop_h", "frozen",
    )

    def process(self, task: ClipTask) -> ClipTask:
        if task.error:
            return task
        clip, scores = task.clip, task.clip.scores
        tiny = clip_tiny(task)
        sparse, _ = clip_sparse(task)
        frames = sparse if len(sparse) else np.asarray(tiny)
        if len(frames) == 0:
            raise ValueError(f"no decoded frames in [{clip.start_frame}, {clip.end_frame})")
        lumas = luma(frames)
        black, _ = black_frames(frames, self.black_luma)
        box = quality.bar_box(
            lumas, black, self.border_luma, self.bar_frames, self.bar_step, self.min_picture
        )
        crop = quality.source_box(box, (lumas.shape[2], lumas.shape[1]), (clip.width, clip.height))
        picture = quality.inside(lumas, box)

        scores.blur = quality.blur_score(lumas, box) if len(sparse) else None
        scores.luma = float(picture.mean())
        scores.luma_high = float(np.percentile(picture, 99))
        scores.clipped = quality.clipped_fraction(picture)
        scores.black_frac = float(black.mean())
        scores.black_border = 1.0 - crop.w * crop.h / (clip.width * clip.height)
        scores.crop_x, scores.crop_y, scores.crop_w, scores.crop_h = crop
        min_run = max(1, round(self.frozen_min_s * clip.fps))
        scores.frozen = quality.frozen_fraction(tiny, self.frozen_max_diff, self.frozen_mean_diff, min_run)
        return task


# black, dark, overexposed (then compressed: artifact_scorer.py), blurry, letterbox, frozen
register(ScorerSpec(
    name="quality", stage=QualityScorer, cost=10, key="quality",
    ranges={
        "black_luma": (0, 255, False),
        "border_luma": (0, 255, False),
        "bar_frames": (0, 1, False),
        "min_picture": (0, 1, False),
        "frozen_max_diff": (0, 255, False),
        "frozen_mean_diff": (0, 255, False),
    },
    columns=QualityScorer.columns, rules=(
        Rule("black", 100, lambda x, f, s: x["black_frac"] > f.max_black_frac,
             lambda r, f, s: above(r, "black_frac", f.max_black_frac), ("black_frac",),
             ("black_frac", "max", "filters.max_black_frac")),
        # dark: dim throughout; a night or CG scene with lit parts (luma_high) is not (None: luma alone)
        Rule("dark", 110, lambda x, f, s: (x["luma"] < f.min_luma) & ~(x["luma_high"] > f.dark_max_highlight),
             lambda r, f, s: below(r, "luma", f.min_luma) and not above(r, "luma_high", f.dark_max_highlight),
             ("luma", "luma_high"), ("luma", "min", "filters.min_luma")),
        # clipped counts both ends: it means blown highlights only when the top 1 % is clipped
        Rule("overexposed", 120,
             lambda x, f, s: ((x["luma"] > f.max_luma)
                              | ((x["clipped"] > f.max_clipped) & ~(x["luma_high"] < quality.CLIP_HIGH))),
             lambda r, f, s: (above(r, "luma", f.max_luma)
                              or (above(r, "clipped", f.max_clipped)
                                  and not below(r, "luma_high", quality.CLIP_HIGH))),
             ("luma", "clipped", "luma_high"), ("clipped", "max", "filters.max_clipped")),
        Rule("blurry", 140, lambda x, f, s: x["blur"] < f.min_blur,
             lambda r, f, s: below(r, "blur", f.min_blur),
             ("blur",), ("blur", "min", "filters.min_blur")),
        Rule("letterbox", 150, lambda x, f, s: x["black_border"] > f.max_black_border,
             lambda r, f, s: above(r, "black_border", f.max_black_border), ("black_border",),
             ("black_border", "max", "filters.max_black_border")),
        Rule("frozen", 160, lambda x, f, s: x["frozen"] > f.max_frozen,
             lambda r, f, s: above(r, "frozen", f.max_frozen), ("frozen",),
             ("frozen", "max", "filters.max_frozen")),
    ),
))
