"""RLHF rounds of the DiT: ReFL policy training, then new preference pairs and reward-model retraining
(settings ``post.rlhf`` for the objective, ``post.rlhf_rounds`` for the rounds).

Each round trains the ReFL policy (``training/post/rlhf.py``) ``steps_per_round`` steps, scores the
held-out prompts with fixed noise (optimised rewards, their batch variance, and a held-out reward
that is never optimised: the reward-hacking monitor), samples ``samples_per_prompt`` new videos per
training prompt, labels preference pairs with the reward models
(``training.post.reward_trainer.pairs_from_rewards``) and retrains the learned reward heads (rewards
with a ``head``, e.g. "text_alignment", "motion_learned") on the pairs labelling their dimensions
before the next round. Labels come from ``label_rewards`` (dimension -> reward; default the
non-learned rewards of the set, by name).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from models.rewards.base import Reward
from training.config import Layers, TrainConfig
from training.loop.checkpoint import resolve_checkpoint
from training.post.config import PostConfig, settings_tree
from training.post.flow_dpo import latent_pairs, rel_change
from training.post.inputs import RunInputs
from training.post.reward_trainer import pairs_from_rewards, preference_accuracy, train_reward_model
from training.post.rlhf import RLHFTrainer, build_rewards, prompts_from_shards, rlhf_config, score_policy


def rounds_config(base: str | Path, overrides: Layers = None) -> TrainConfig:
    """``rlhf_config`` over ``rounds x steps_per_round`` steps (``post.rlhf_rounds``)."""
    def steps(post: PostConfig) -> int:
        return post.rlhf_rounds.rounds * post.rlhf_rounds.steps_per_round

    return rlhf_config(base, steps, overrides=overrides)


def _learned_heads(composite: Any) -> dict[str, nn.Module]:
    return {n: r.head for n, r in composite.rewards.items()
            if isinstance(getattr(r, "head", None), nn.Module) and hasattr(r.head, "dimensions")}


def _policy_scores(trainer: RLHFTrainer, prompts: Sequence[str],
                   heldout: Mapping[str, Reward]) -> dict[str, float]:
    t = trainer
    terms = score_policy(t.net, t.vae, t.stats, t.cfg, prompts, {**t.rewards.rewards, **heldout},
                         t.rewards.weights, t.sample_steps, t.shape(), t.device, t.cfg_scale)
    out = {}
    for k, v in terms.items():
        out[k], out[f"{k}_var"] = float(v.mean()), float(v.var(unbiased=False))
    return out


def run_rounds(cfg: TrainConfig, inputs: RunInputs, out: str | Path,
               heldout_reward: str | Reward | None = None,
               label_rewards: Mapping[str, Reward] | None = None, device: str | None = None) -> dict[str,
                                                                                                     Any]:
    """RLHF rounds (module doc) of ``rounds_config``'s ``cfg``. Prompts: ``inputs.prompts`` or the
    captions of ``inputs.data``; without ``inputs.eval_prompts`` the last ``n_heldout`` prompts are
    held out of training. ``heldout_reward`` (default ``post.rlhf_rounds.heldout_reward``) may be
    an instance.

    Returns:
        ``{"rounds": [row, ...], "checkpoint", "out"}``; row 0 is the base policy. Each row has the
        held-out scores (``composite``, each term, ``heldout/<name>``, their ``_var``), the held-out
        reward's relative change since the base (``heldout_change``) and the reward-model retraining
        results (``reward_training``). Also written to ``<out>/rlhf_rounds.json``.
    """
    rc = cfg.post.rlhf_rounds
    if inputs.prompts is None:
        if inputs.data is None:
            raise ValueError("give prompts or a shards directory whose captions are the prompts")
        prompts = [it["caption_en"] or it["caption_zh"] for it in prompts_from_shards(inputs.data)]
    else:
        prompts = list(inputs.prompts)
    heldout_prompts = list(inputs.eval_prompts)
    if not heldout_prompts:
        prompts, heldout_prompts = prompts[:-rc.n_heldout], prompts[-rc.n_heldout:]
    if not prompts:
        raise ValueError("no training prompts left after holding out the evaluation prompts")
    held_reward = rc.heldout_reward if heldout_reward is None else heldout_reward
    held_name = held_reward if isinstance(held_reward, str) else held_reward.name
    hk = f"heldout/{held_name}"
    held = {hk: held_reward if not isinstance(held_reward, str)
            else build_rewards({held_reward: 1.0}).rewards[held_reward]}
    # the rounds score the held-out prompts themselves
    trainer = RLHFTrainer(cfg, RunInputs(inputs.base, prompts=prompts, reward_models=inputs.reward_models),
                          out, device=device)
    heads = _learned_heads(trainer.rewards)
    labellers = dict(label_rewards) if label_rewards is not None else {
        n: r for n, r in trainer.rewards.rewards.items() if n not in heads}
    rows = [{"round": 0, "step": 0, **_policy_scores(trainer, heldout_prompts, held)}]
    rows[0]["heldout_change"] = 0.0
    for r in range(1, rc.rounds + 1):
        trainer.round_end = r * rc.steps_per_round
        trainer.train(progress=False)
        row: dict[str, Any] = {"round": r, "step": trainer.step,
                               **_policy_scores(trainer, heldout_prompts, held)}
        row["heldout_change"] = rel_change(row[hk], rows[0][hk])
        row["composite_change"] = rel_change(row["composite"], rows[0]["composite"])
        row["reward_training"] = {}
        if heads and labellers and r < rc.rounds:
            _, videos = latent_pairs(trainer.net, trainer.vae, trainer.stats, trainer.cfg, prompts,
                                     trainer.rewards, trainer.shape(), trainer.sample_steps, trainer.device,
                                     seed=1000 * r, samples_per_prompt=rc.samples_per_prompt)
            pairs = pairs_from_rewards(videos, prompts, labellers)
            for name, head in heads.items():
                if not set(head.dimensions) & {d for p in pairs for d in p.labels}:
                    continue
                head.requires_grad_(True)
                fit = train_reward_model(head, pairs, rc.reward_steps, seed=r)
                head.requires_grad_(False)
                row["reward_training"][name] = {**fit, "accuracy": preference_accuracy(head, pairs)["all"]}
        rows.append(row)
    result = {"rounds": rows, "checkpoint": str(resolve_checkpoint(out)), "out": str(out),
              "heldout_prompts": list(heldout_prompts)}
    Path(out, "rlhf_rounds.json").write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    return result


def rlhf_rounds(base: str | Path, out: str | Path, prompts: Sequence[str] | None = None,
                data: str | Path | None = None, reward_weights: Mapping[str, float] | None = None,
                heldout_reward: str | Reward | None = None, heldout_prompts: Sequence[str] | None = None,
                reward_models: Mapping[str, Reward] | None = None,
                label_rewards: Mapping[str, Reward] | None = None, device: str | None = None,
                **settings: Any) -> dict[str, Any]:
    """``run_rounds`` from keyword settings: ``rounds``, ``steps_per_round``, ``n_heldout``,
    ``samples_per_prompt``, ``reward_steps`` (``post.rlhf_rounds``) and any ``post.rlhf`` key
    (``lr``, ``global_batch``, ``n_frames``, ``size``, ``beta``, ``sample_steps``, ...)."""
    post = settings_tree(settings, {"rlhf_rounds": ("rounds", "steps_per_round", "n_heldout",
                                                    "samples_per_prompt", "reward_steps")})
    if reward_weights:
        post.setdefault("rlhf", {})["rewards"] = dict(reward_weights)
    if isinstance(heldout_reward, str):
        post.setdefault("rlhf_rounds", {})["heldout_reward"] = heldout_reward
    cfg = rounds_config(base, {"post": post})
    inputs = RunInputs(base, data=data, prompts=prompts, eval_prompts=list(heldout_prompts or []),
                       reward_models=dict(reward_models or {}))
    return run_rounds(cfg, inputs, out, None if isinstance(heldout_reward, str) else heldout_reward,
                      label_rewards, device)
