"""Duplicate fingerprints of a clip: content hash (exact) and keyframe perceptual hashes (near)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipelines.clip_frames import clip_sparse, clip_tiny
from pipelines.dedup import clip_phash, content_hash
from pipelines.scorers import ScorerSpec, register
from pipelines.stage import Resources, Stage
from pipelines.tasks import ClipTask


@dataclass
class HashScorer(Stage[ClipTask, ClipTask]):
    """Sets ``content_hash`` and ``phash``; the filter step compares them across the catalog."""

    name: ClassVar[str] = "hash"
    version: ClassVar[int] = 1
    resources: ClassVar[Resources] = Resources(cpus=0.25)
    columns: ClassVar[tuple[str, ...]] = ("content_hash", "phash")

    def process(self, task: ClipTask) -> ClipTask:
        if task.error:
            return task
        task.clip.scores.content_hash = content_hash(clip_tiny(task))
        task.clip.scores.phash = clip_phash(clip_sparse(task)[0])
        return task


# no rule of its own: the filter step's 'duplicate' compares the hashes across the catalog
register(ScorerSpec(name="hash", stage=HashScorer, cost=40, columns=HashScorer.columns))
