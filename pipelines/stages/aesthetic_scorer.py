"""Aesthetic scorer: CLIP ViT-L/14 + the LAION aesthetic MLP on a clip's keyframes -> ``aesthetic``.

The keyframes are the first, middle and last sparse frames of the clip (fitted in 256x144 by
the decode pass, so CLIP sees them upscaled to 224 on the short side). Weights are given by
path; ``setup()`` raises :class:`pipelines.aesthetic.AestheticWeightsMissing` without them (the
score step skips this scorer beforehand, see ``aesthetic_unavailable_reason``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipelines.aesthetic import (
    CLIP_MODEL,
    AestheticWeightsMissing,
    aesthetic_unavailable_reason,
    keyframe_indices,
    load_aesthetic_head,
    load_clip_image_encoder,
    missing_weights_reason,
    score_frames,
)
from pipelines.clip_frames import clip_sparse
from pipelines.dedup import encode_embedding
from pipelines.scorers import Rule, ScorerSpec, below, register
from pipelines.stage import Resources, Stage, unhashed
from pipelines.tasks import ClipTask


@dataclass
class AestheticScoreConfig:
    """scores.aesthetic: open_clip ViT-L/14 + LAION aesthetic MLP.

    Weights are given by path (model hubs are not reached): without both files the scorer is
    skipped with a logged reason, or the run fails when ``required``.
    """

    clip_weights: str | None = None  # open_clip ViT-L-14 checkpoint (OpenAI weights)
    mlp_weights: str | None = None  # LAION sac+logos+ava1-l14-linearMSE.pth
    clip_model: str = CLIP_MODEL  # open_clip architecture name
    device: str = unhashed("cpu")  # torch device of the CLIP model
    # fail the run when the weights are missing (else skip, with a logged reason)
    required: bool = unhashed(False)


@dataclass
class AestheticScorer(AestheticScoreConfig, Stage[ClipTask, ClipTask]):
    """Sets ``aesthetic`` (about 1-10); the filter step's ``low_aesthetic`` rule reads it. A clip
    whose span holds no sparse frame is left unmeasured (None)."""

    name: ClassVar[str] = "aesthetic"
    version: ClassVar[int] = 1
    # One ViT-L/14 per actor (~1.7 GB of fp32 weights); torch uses the actor's cores.
    resources: ClassVar[Resources] = Resources(cpus=1.0, actors=True)
    columns: ClassVar[tuple[str, ...]] = ("aesthetic", "embedding")

    _encoder: Any = field(default=None, init=False, repr=False, compare=False)
    _head: Any = field(default=None, init=False, repr=False, compare=False)

    def setup(self) -> None:
        if self._encoder is not None and self._head is not None:
            return
        if reason := missing_weights_reason(self.clip_weights, self.mlp_weights):
            raise AestheticWeightsMissing(reason)
        assert self.clip_weights is not None and self.mlp_weights is not None
        self._encoder = load_clip_image_encoder(self.clip_weights, self.clip_model).to(self.device)
        self._head = load_aesthetic_head(self.mlp_weights).to(self.device)

    def process(self, task: ClipTask) -> ClipTask:
        if not task.wants(self.name):
            return task
        frames, _ = clip_sparse(task)
        if len(frames) == 0:
            return task
        score, embedding = score_frames(frames[keyframe_indices(len(frames))], self._encoder, self._head)
        task.clip.scores.aesthetic = round(score, 4)
        task.clip.scores.embedding = encode_embedding(embedding)  # for semantic dedup
        return task


# expensive: behind a gate that reads motion but not the 'text' rule (it reads the crop the filter
# step computes); skipped with a logged reason without its weights, an error when ``required``
register(ScorerSpec(
    name="aesthetic", stage=AestheticScorer, cost=200, key="aesthetic", columns=AestheticScorer.columns,
    expensive=True, gate="low_aesthetic", gate_skips=("text",),
    unavailable=lambda s: aesthetic_unavailable_reason(s.clip_weights, s.mlp_weights),
    required=lambda s: bool(s.required),
    rules=(
        Rule("low_aesthetic", 400, lambda x, f, s: x["aesthetic"] < f.min_aesthetic,
             lambda r, f, s: below(r, "aesthetic", f.min_aesthetic), ("aesthetic",),
             ("aesthetic", "min", "filters.min_aesthetic")),
    ),
))
