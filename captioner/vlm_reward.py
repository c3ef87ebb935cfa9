"""The ``vlm_foundational`` reward: a VLM's 1-10 rating of a video's keyframes for its prompt, over
an OpenAI-compatible endpoint (the captioner's client).

It lives with the captioner, not in ``models/rewards``, so that the models need nothing from the
captioner: importing this module registers it with ``models.rewards.base`` (the RLHF trainer
does; ``build_reward("vlm_foundational", base_url=..., model=...)`` then builds it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from captioner.client import ChatClient, ChatRequest
from captioner.frames import image_parts
from models.rewards.base import register
from models.rewards.builtin import keyframe_images, parse_rating

VLM_INSTRUCTION = (
    "These are frames of a generated video for the prompt: \"{prompt}\". Rate the video's overall "
    "quality from 1 (very poor) to 10 (excellent), considering visual quality, plausible motion and "
    "how well it matches the prompt. Answer with a single integer from 1 to 10 and nothing else."
)

def _jpeg(image: torch.Tensor, quality: int = 90) -> bytes:
    """[3, H, W] in [0, 1] -> JPEG bytes."""
    from PIL import Image

    arr = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@register("vlm_foundational")
@dataclass
class VLMReward:
    """A VLM's 1-10 rating of the keyframes for the prompt, over an OpenAI-compatible endpoint.

    Not differentiable (the frames leave the graph as JPEGs). A request that fails or an answer
    without a rating in [1, 10] raises RuntimeError naming the sample: a silently missing reward would
    bias the RLHF advantage.

    Attributes:
        base_url: the endpoint including ``/v1`` (``http://host:8000/v1``).
        model: the served model id.
        instruction: the user text, with ``{prompt}``.
        params: extra request body fields (e.g. ``{"seed": 0}``).
    """

    base_url: str = ""
    model: str = ""
    instruction: str = VLM_INSTRUCTION
    max_tokens: int = 8
    concurrency: int = 8
    timeout_s: float = 120.0
    api_key: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    name: str = "vlm_foundational"
    differentiable: bool = False

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("vlm_foundational needs base_url, an OpenAI-compatible endpoint (…/v1)")

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        frames = keyframe_images(video)
        params = {"model": self.model, "max_tokens": self.max_tokens, "temperature": 0.0, **self.params}
        requests = [
            ChatRequest(str(i), [{"role": "user", "content": [
                *image_parts([_jpeg(f) for f in frames[i]]),
                {"type": "text", "text": self.instruction.format(prompt=prompts[i])},
            ]}], params)
            for i in range(video.shape[0])
        ]  # fmt: skip
        client = ChatClient(self.base_url, self.api_key, self.concurrency, self.timeout_s)
        scores: dict[int, float] = {}
        errors = []
        for res in client.run_sync(requests):
            rating = parse_rating(res.text) if res.ok else None
            if rating is None:
                errors.append(f"sample {res.key}: {res.error or f'no 1-10 rating in {res.text!r}'}")
            else:
                scores[int(res.key)] = rating
        if errors:
            raise RuntimeError(f"vlm_foundational failed for {len(errors)} sample(s): {'; '.join(errors)}")
        ordered = [scores[i] for i in range(video.shape[0])]
        return torch.tensor(ordered, dtype=torch.float32, device=video.device)
