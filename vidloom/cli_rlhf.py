"""The ``rlhf`` and ``rlhf-compare`` commands: deprecated aliases of ``vidloom post rlhf`` and
``vidloom post rlhf-compare`` (vidloom/cli_post.py); each flag maps onto an input or a config key."""

from __future__ import annotations

from typing import Any

from vidloom.cli_common import parse_size, parse_weight
from vidloom.cli_post import Knob, alias, prompts_file


def _common() -> list[Knob]:
    return [
        Knob("--base", "input:base", {"required": True, "help": "'dit' checkpoint or run directory"}),
        Knob("--out", "out", {"required": True, "help": "output directory"}),
        Knob("--prompts", "input:prompts", {"type": prompts_file, "help": "text file, one prompt per line"}),
        Knob("--heldout-prompts", "input:eval_prompts", {"type": prompts_file, "help": "evaluation prompts"}),
        Knob("--n-heldout", "post.rlhf_rounds.n_heldout", {"type": int}),
        Knob("--reward", "post.rlhf.rewards", {"type": parse_weight, "action": "append", "default": None,
                                               "metavar": "NAME=WEIGHT", "help": "optimised reward (repeat)"},
             convert=dict),
        Knob("--heldout-reward", "post.rlhf_rounds.heldout_reward",
             {"help": "reward monitored, never optimised"}),
        Knob("--beta", "post.rlhf.beta", {"type": float, "help": "reference-velocity regulariser weight"}),
        Knob("--sample-steps", "post.rlhf.sample_steps", {"type": int,
                                                          "help": "Euler steps N of each rollout"}),
        Knob("--grad-steps", "post.rlhf.grad_steps", {"type": int, "help": "differentiated last steps K"}),
        Knob("--cfg", "post.rlhf.cfg_scale", {"type": float, "help": "guidance scale while sampling"}),
        Knob("--lr", "post.rlhf.lr", {"type": float}),
        Knob("--batch", "post.rlhf.global_batch", {"type": int, "help": "prompts per optimizer step"}),
        Knob("--frames", "post.rlhf.n_frames", {"type": int, "help": "pixel frames (default: the base's)"}),
        Knob("--size", "post.rlhf.size", {"type": parse_size, "help": "HxW (default: the base's)"}),
        Knob("--device", "device", {"help": "torch device (default: cuda when available)"}),
    ]


def add_commands(sub: Any) -> None:
    alias(sub, "rlhf", "rlhf", "RLHF rounds (ReFL) on a DiT checkpoint with reward models", [
        *_common(),
        Knob("--data", "input:data", {"help": "shards directory whose captions are the prompts"}),
        Knob("--rounds", "post.rlhf_rounds.rounds", {"type": int}),
        Knob("--steps-per-round", "post.rlhf_rounds.steps_per_round", {"type": int})])
    alias(sub, "rlhf-compare", "rlhf-compare", "ReFL vs Flow-DPO at equal DiT forward+backward passes", [
        *_common(),
        Knob("--grad-passes", "post.rlhf_compare.grad_passes", {"type": int,
                                                                "help": "budget of each method"}),
        Knob("--dpo-beta", "post.flow_dpo.beta", {"type": float}),
        Knob("--json", "json", {"action": "store_true", "help": "also print the rows as JSON"})])
