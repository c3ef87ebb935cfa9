"""The reward interface and registry shared by every reward model.

A reward scores decoded videos against their prompts: ``reward(video, prompts) -> [B]`` with
``video`` ``[B, 3, T, H, W]`` in [-1, 1] (T = 1 for images) and higher = better. Rewards used for
RLHF must be differentiable in ``video``; ``differentiable`` says whether one is.

``register("name")`` adds a class to the registry; ``build_reward("name", **kwargs)`` builds it.
Rewards that need weights take them by path and raise ``FileNotFoundError`` with what is missing;
none downloads anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

REGISTRY: dict[str, Callable[..., Reward]] = {}


@runtime_checkable
class Reward(Protocol):
    """What RLHF and the evaluations need from a reward model."""

    name: str
    differentiable: bool

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores ``[B]`` (float32) of ``video`` [B, 3, T, H, W] in [-1, 1] for ``prompts``."""
        ...


def register(name: str) -> Callable[[Callable[..., Reward]], Callable[..., Reward]]:
    """Class decorator: make ``build_reward(name, ...)`` construct this reward."""

    def add(factory: Callable[..., Reward]) -> Callable[..., Reward]:
        if name in REGISTRY:
            raise ValueError(f"reward {name!r} is registered twice")
        REGISTRY[name] = factory
        return factory

    return add
