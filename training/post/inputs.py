"""What a post-training run is given besides its config: checkpoints, data and in-memory objects.

Every post-training trainer is built as ``Trainer(config, inputs, out, dist)``: ``config`` is the
whole resolved ``TrainConfig`` (its ``post.<method>`` section holds the method's settings and is
stored in every checkpoint); ``inputs`` names what the run reads. Paths are inputs, not settings:
two runs with one config may start from different checkpoints. The checkpoints record them (each
method's entry names its base).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunInputs:
    """The inputs of one post-training run.

    Attributes:
        base: the checkpoint (file or run directory) the method starts from: the base DiT (SFT,
            RLHF, refiner), the teacher (distillation), the refiner (refine-sft, refine-rlhf) or the
            VAE (thin decoder).
        data: shards directory: the training data, or whose captions are the prompts (RLHF).
        catalog, where: instead of ``data``, a catalog and a SQL selection exported to ``out/data``.
        init: the student's initial weights (distillation; default ``base``).
        generator: a "dit" run whose sampled latents the thin decoder is also distilled on.
        prompts: prompt strings or loader items (RLHF; default the captions of ``data``).
        eval_prompts: prompts every evaluation scores with fixed noise (RLHF).
        pairs: Flow-DPO preference pairs (``training.post.flow_dpo.latent_pairs`` items).
        reward_models: reward instances by name (else ``models.rewards.builtin.build_reward``).
        eval_rewards: more rewards scored at evaluation only (e.g. a held-out one).
        checkpoints: the checkpoints a merge averages (``merge``).
    """

    base: str | Path = ""
    data: str | Path | None = None
    catalog: str | Path | None = None
    where: str | None = None
    init: str | Path | None = None
    generator: str | Path | None = None
    prompts: Sequence[Any] | None = None
    eval_prompts: Sequence[str] = ()
    pairs: Sequence[dict[str, Any]] = ()
    reward_models: Mapping[str, Any] = field(default_factory=dict)
    eval_rewards: Mapping[str, Any] = field(default_factory=dict)
    checkpoints: Sequence[str | Path] = ()
