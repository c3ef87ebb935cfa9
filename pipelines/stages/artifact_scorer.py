"""Compression damage of a clip: blockiness on the codec's block grid, bits per pixel, artifacts.

Reads the decode pass's packet bytes and full-resolution edge profiles
(pipelines/clip_frames.py); the measurements and the reasons for their constants are in
pipelines/artifacts.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipelines import artifacts
from pipelines.clip_frames import clip_edges, clip_packet_bytes, clip_tiny
from pipelines.quality import identical_pairs
from pipelines.scorers import Rule, ScorerSpec, above, register
from pipelines.stage import Resources, Stage
from pipelines.tasks import ClipTask

log = logging.getLogger("vidloom.score")


@dataclass
class ArtifactScoreConfig:
    """scores.artifacts: compression damage from the decode pass's packet sizes
    and full-resolution edge profiles (constants measured in pipelines/artifacts.py)."""

    periods: tuple[int, ...] = (2, 4, 8, 16)  # block grids measured, px
    visibility: float = 2.0  # luma levels added to the interior gradient
    clean_blockiness: float = 0.08  # artifacts reads 0 at or below (clean footage 0.00-0.11)
    severe_blockiness: float = 0.8  # ... and 1 at or above (Indeo 4: 0.83)
    clean_bpp: float = 0.02  # bits per pixel at or above which bits do not amplify blocking
    starved_bpp: float = 0.002  # ... at or below which they double it


@dataclass
class ArtifactScorer(ArtifactScoreConfig, Stage[ClipTask, ClipTask]):
    """Sets ``blockiness``, ``bits_per_pixel`` and ``artifacts`` on every clip (kept or rejected);
    the decide step rejects ``artifacts`` above ``filters.max_artifacts`` as 'compressed'.
    Fields are measuring parameters.

    A clip span that holds no sparse frame gets ``bits_per_pixel`` only (blockiness and
    artifacts stay None: not measured, never rejects). So does a clip whose frames were
    decoded by a vidloom before decode format 2, which kept no packet sizes or profiles.
    """

    name: ClassVar[str] = "artifacts"
    version: ClassVar[int] = 1
    resources: ClassVar[Resources] = Resources(cpus=0.25)  # medians over stored profiles
    columns: ClassVar[tuple[str, ...]] = ("artifacts", "bits_per_pixel", "blockiness")

    def process(self, task: ClipTask) -> ClipTask:
        if task.error:
            return task
        if not os.path.exists(os.path.join(task.frames_dir or "", "packet_bytes.npy")):
            log.warning("clip %s: decoded before format 2, compression unmeasured", task.clip.clip_id)
            return task
        clip, scores = task.clip, task.clip.scores
        packets = clip_packet_bytes(task)
        scores.bits_per_pixel = artifacts.bits_per_pixel(packets, clip.width, clip.height)
        # a frame identical to the one before needs no bits: starvation counts the changing ones
        changing = np.concatenate([[True], ~identical_pairs(clip_tiny(task))])[: len(packets)]
        cols, rows = clip_edges(task)
        scores.blockiness = artifacts.blockiness(cols, rows, tuple(self.periods), self.visibility)
        scores.artifacts = artifacts.artifact_score(
            scores.blockiness,
            artifacts.bits_per_pixel(packets[changing], clip.width, clip.height),
            self.clean_blockiness,
            self.severe_blockiness,
            self.clean_bpp,
            self.starved_bpp,
        )
        return task


# compressed comes before blurry: a crushed clip reads blurry too
register(ScorerSpec(
    name="artifacts", stage=ArtifactScorer, cost=20, key="artifacts",
    ranges={
        "severe_blockiness": (0, None, True),
    },
    columns=ArtifactScorer.columns, rules=(
        Rule("compressed", 130, lambda x, f, s: x["artifacts"] > f.max_artifacts,
             lambda r, f, s: above(r, "artifacts", f.max_artifacts), ("artifacts",),
             ("artifacts", "max", "filters.max_artifacts")),
    ),
))
