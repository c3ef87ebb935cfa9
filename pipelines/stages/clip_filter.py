"""Duration / resolution filter: a keep-or-reject decision with a reason.

Rejected clips keep their row (status='rejected', reject_reason) — nothing is
dropped. The first failing rule wins; the rule names are the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from curation.schema import Clip
from pipelines.stage import Resources, Stage
from pipelines.tasks import ClipTask


def shape_reject_reason(
    clip: Clip,
    min_duration_s: float,
    max_duration_s: float,
    min_width: int,
    min_height: int,
    max_aspect: float,
) -> str | None:
    """The first duration/resolution rule the clip fails, or None to keep it."""
    if clip.duration_s < min_duration_s - 1e-6:
        return "too_short"
    if clip.duration_s > max_duration_s + 1e-6:
        return "too_long"
    if clip.width < min_width or clip.height < min_height:
        return "low_resolution"
    if max(clip.width, clip.height) > max_aspect * max(1, min(clip.width, clip.height)):
        return "bad_aspect"
    return None


@dataclass
class ShapeFilter(Stage[ClipTask, ClipTask]):
    """Reject clips outside the duration and resolution bounds (before extraction: no wasted encodes)."""

    name: ClassVar[str] = "shape_filter"
    version: ClassVar[int] = 1
    resources: ClassVar[Resources] = Resources(cpus=0.25)

    min_duration_s: float = 2.0
    max_duration_s: float = 60.0
    min_width: int = 64
    min_height: int = 64
    max_aspect: float = 4.0

    def process(self, task: ClipTask) -> ClipTask:
        if task.error or task.clip.status == "rejected":
            return task
        reason = shape_reject_reason(
            task.clip,
            self.min_duration_s,
            self.max_duration_s,
            self.min_width,
            self.min_height,
            self.max_aspect,
        )
        if reason:
            task.clip.status = "rejected"
            task.clip.reject_reason = reason
        return task
