"""The RLHF, distillation and refiner flows of the last release, kept as thin wrappers of
``flows/post_flow.py``'s ``post_flow`` (one flow for every post-training method)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.post_flow import post_flow

DISTILL_MODES = ("cfg", "tscd", "dmd", "adv")


@flow(name="vidloom-rlhf", log_prints=True)
def rlhf_flow(base: str, out: str, prompts: list[str] | None = None, data: str | None = None,
              rounds: int | None = None, steps_per_round: int | None = None,
              reward_weights: dict[str, float] | None = None, heldout_reward: str | None = None,
              device: str | None = None) -> dict[str, Any]:
    """``post_flow("rlhf", ...)``: ReFL rounds from ``base`` (None: ``post.rlhf_rounds``' defaults)."""
    rounds_cfg = {k: v for k, v in (("rounds", rounds), ("steps_per_round", steps_per_round),
                                    ("heldout_reward", heldout_reward)) if v is not None}
    config: dict[str, Any] = {"post": {"rlhf_rounds": rounds_cfg}}
    if reward_weights:
        config["post"]["rlhf"] = {"rewards": dict(reward_weights)}
    return post_flow("rlhf", config, {"base": base, "prompts": prompts, "data": data}, out, device)


@flow(name="vidloom-distill", log_prints=True)
def distill_flow(mode: str, teacher: str, data: str, out: str, init: str | None = None,
                 steps: int | None = None, overrides: list[str] | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """``post_flow(mode, ...)``: one distillation stage, ``cfg`` (guidance embedding), ``tscd``
    (segments 8 -> 4 -> 2 -> 1), or, from a few-step ``init``, ``dmd`` or ``adv``."""
    if mode not in DISTILL_MODES:
        raise ValueError(f"distill mode {mode!r}: expected one of {', '.join(DISTILL_MODES)}")
    items = [*(overrides or []), *([f"steps={steps}"] if steps is not None else [])]
    return post_flow(mode, {}, {"base": teacher, "data": data, "init": init}, out, device, items)


@flow(name="vidloom-refine", log_prints=True)
def refine_flow(base: str, data: str, out: str, steps: int | None = None, overrides: list[str] | None = None,
                device: str | None = None) -> dict[str, Any]:
    """``post_flow("refine", ...)``: train the super-resolution refiner from ``base`` on pixel shards."""
    config = {"post": {"refine": {"steps": steps}}} if steps is not None else {}
    return post_flow("refine", config, {"base": base, "data": data}, out, device, list(overrides or []))
