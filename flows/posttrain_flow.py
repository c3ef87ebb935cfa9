"""RLHF, distillation and refiner training as Prefect flows (one task each, in the flow's process).

Like ``vidloom-train`` these resume from the newest checkpoints of ``out``, so a rerun, a Prefect
retry or the next scheduled run goes on where the last one stopped. Parameters mirror the CLI
(``vidloom rlhf``, ``vidloom distill cfg|tscd|dmd|adv``, ``vidloom refine``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task


@task(name="rlhf-rounds", retries=1, retry_delay_seconds=10)
def rlhf_task(base: str, out: str, prompts: list[str] | None, data: str | None, rounds: int,
              steps_per_round: int, reward_weights: dict[str, float] | None, heldout_reward: str,
              device: str | None) -> dict[str, Any]:
    from training.post.flow_dpo import rlhf_rounds

    return rlhf_rounds(base, out, prompts=prompts, data=data, rounds=rounds, steps_per_round=steps_per_round,
                       reward_weights=reward_weights, heldout_reward=heldout_reward, device=device)


@flow(name="vidloom-rlhf", log_prints=True)
def rlhf_flow(base: str, out: str, prompts: list[str] | None = None, data: str | None = None,
              rounds: int = 2, steps_per_round: int = 20, reward_weights: dict[str, float] | None = None,
              heldout_reward: str = "stability", device: str | None = None) -> dict[str, Any]:
    """ReFL rounds from ``base`` (reward models retrained between rounds; held-out reward tracked)."""
    return rlhf_task(base, out, prompts, data, rounds, steps_per_round, reward_weights, heldout_reward,
                     device)


DISTILL_MODES = ("cfg", "tscd", "dmd", "adv")


@task(name="distill", retries=1, retry_delay_seconds=10)
def distill_task(mode: str, teacher: str, data: str, out: str, init: str | None, steps: int | None,
                 overrides: list[str], device: str | None) -> dict[str, Any]:
    from training.loop.checkpoint import load_checkpoint, resolve_checkpoint
    from training.post.distill import CFGDistillTrainer, TSCDTrainer, distill_config
    from training.post.distill_adv import AdversarialDistillTrainer
    from training.post.distill_dmd import ScoreDistillTrainer

    if mode not in DISTILL_MODES:
        raise ValueError(f"distill mode {mode!r}: expected one of {', '.join(DISTILL_MODES)}")
    items = list(overrides) + ([f"steps={steps}"] if steps is not None else [])
    if mode == "cfg":
        cfg = distill_config(teacher, items)
        return CFGDistillTrainer(cfg, data, out, teacher, device=device).train(progress=False)
    source = init or teacher
    embed = bool(load_checkpoint(resolve_checkpoint(source))["config"]["dit"].get("guidance_embed"))
    cfg = distill_config(source, items, guidance_embed=embed if source != teacher else True)
    trainer = {"tscd": TSCDTrainer, "dmd": ScoreDistillTrainer, "adv": AdversarialDistillTrainer}[mode]
    return trainer(cfg, data, out, teacher, init=source, device=device).train(progress=False)


@flow(name="vidloom-distill", log_prints=True)
def distill_flow(mode: str, teacher: str, data: str, out: str, init: str | None = None,
                 steps: int | None = None, overrides: list[str] | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """One distillation stage: ``cfg`` (guidance embedding), ``tscd`` (segments 8 -> 4 -> 2 -> 1), or,
    from a few-step ``init``, ``dmd`` (score distillation) or ``adv`` (adversarial)."""
    return distill_task(mode, teacher, data, out, init, steps, list(overrides or []), device)


@task(name="refine", retries=1, retry_delay_seconds=10)
def refine_task(base: str, data: str, out: str, steps: int | None, overrides: list[str],
                device: str | None) -> dict[str, Any]:
    from training.post.refine import train_refiner

    return train_refiner(base, data, out, steps=steps, overrides=overrides, device=device, progress=False)


@flow(name="vidloom-refine", log_prints=True)
def refine_flow(base: str, data: str, out: str, steps: int | None = None, overrides: list[str] | None = None,
                device: str | None = None) -> dict[str, Any]:
    """Train the super-resolution refiner from ``base`` on pixel shards ``data``."""
    return refine_task(base, data, out, steps, list(overrides or []), device)
