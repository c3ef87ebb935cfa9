"""The ``refine-sft`` and ``refine-rlhf`` commands: deprecated aliases of ``vidloom post refine-sft`` and
``vidloom post refine-rlhf`` (vidloom/cli_post.py); each flag maps onto an input or a config key."""

from __future__ import annotations

from typing import Any

from vidloom.cli_common import parse_weight
from vidloom.cli_post import Knob, alias, prompts_file, run_knobs, selection_knobs


def add_commands(sub: Any) -> None:
    alias(sub, "refine-sft", "refine-sft", "fine-tune a refiner on pixel shards or a catalog selection", [
        Knob("--refiner", "input:base", {"required": True, "help": "refiner checkpoint or run directory"}),
        *selection_knobs("pixel shards directory"),
        Knob("--out", "out", {"required": True, "help": "run directory"}),
        *run_knobs("optimizer steps (default: 10%% of the refiner's, >= 10)", "config override")])
    alias(sub, "refine-rlhf", "refine-rlhf", "ReFL on a refiner (low-res latents from the frozen base)", [
        Knob("--refiner", "input:base", {"required": True, "help": "refiner checkpoint or run directory"}),
        Knob("--out", "out", {"required": True, "help": "run directory"}),
        Knob("--prompts", "input:prompts", {"type": prompts_file, "help": "prompt file (one per line)"}),
        Knob("--data", "input:data", {"help": "shards directory whose captions are the prompts"}),
        Knob("--heldout-prompts", "input:eval_prompts", {"type": prompts_file, "help": "evaluation prompts"}),
        Knob("--reward", "post.rlhf.rewards", {"type": parse_weight, "action": "append", "default": None,
                                               "metavar": "NAME[=WEIGHT]", "help": "optimised reward"},
             convert=dict),
        Knob("--steps", "post.refine_rlhf.steps", {"type": int}),
        Knob("--batch", "post.rlhf.global_batch", {"type": int, "help": "global batch (prompts per step)"}),
        Knob("--lr", "post.rlhf.lr", {"type": float}),
        Knob("--beta", "post.rlhf.beta", {"type": float, "help": "reference-velocity regulariser weight"}),
        Knob("--sample-steps", "post.rlhf.sample_steps", {"type": int, "help": "refiner Euler steps"}),
        Knob("--grad-steps", "post.rlhf.grad_steps", {"type": int, "help": "differentiated last steps (K)"}),
        Knob("--base-steps", "post.refine_rlhf.base_steps", {"type": int, "help": "base Euler steps"}),
        Knob("--device", "device", {"help": "torch device"}),
        Knob("--quiet", "quiet", {"action": "store_true", "help": "no progress bar"})])
