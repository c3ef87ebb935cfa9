"""RLHF commands of the ``vidloom`` CLI: ``rlhf`` (ReFL rounds) and ``rlhf-compare`` (ReFL vs Flow-DPO).

``vidloom rlhf --base runs/tiny --out runs/tiny-rlhf --prompts prompts.txt --reward motion=1
--reward aesthetic_proxy=1 --heldout-reward stability`` trains the policy for ``--rounds`` rounds
(training/post/rlhf.py, training/post/flow_dpo.py) and prints one line per round: the optimised rewards on the
held-out prompts and the held-out (never optimised) reward's change since the base model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vidloom.cli_common import parse_size, parse_weight, read_prompt_file


def _refl(args: argparse.Namespace) -> dict[str, Any]:
    return {"beta": args.beta, "sample_steps": args.sample_steps, "grad_steps": args.grad_steps,
            "cfg_scale": args.cfg}


def cmd_rlhf(args: argparse.Namespace) -> int:
    from training.post.flow_dpo import rlhf_rounds

    prompts = read_prompt_file(args.prompts)
    if prompts is None and args.data is None:
        raise ValueError("give --prompts FILE or --data SHARDS (their captions are the prompts)")
    result = rlhf_rounds(args.base, args.out, prompts=prompts, data=args.data, rounds=args.rounds,
                         steps_per_round=args.steps_per_round, reward_weights=dict(args.reward or []) or None,
                         heldout_reward=args.heldout_reward,
                         heldout_prompts=read_prompt_file(args.heldout_prompts),
                         n_heldout=args.n_heldout, n_frames=args.frames, size=args.size,
                         global_batch=args.batch, lr=args.lr, device=args.device, **_refl(args))
    held = f"heldout/{args.heldout_reward}"
    for row in result["rounds"]:
        terms = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                          if isinstance(v, float) and not k.endswith(("_var", "_change")) and k != held)
        print(f"round {row['round']} step {row['step']}: {terms}; {held} {row[held]:.4f} "
              f"({100 * row['heldout_change']:+.2f}% vs base)")
    print(f"vidloom rlhf: done -> {result['checkpoint']} (rounds: {Path(args.out) / 'rlhf_rounds.json'})")
    return 0


def cmd_rlhf_compare(args: argparse.Namespace) -> int:
    from training.post.flow_dpo import compare_refl_dpo, format_table

    prompts = read_prompt_file(args.prompts) or []
    held = read_prompt_file(args.heldout_prompts)
    if held is None:
        prompts, held = prompts[: -args.n_heldout], prompts[-args.n_heldout :]
    if not prompts:
        raise ValueError("no training prompts left after holding out the evaluation prompts")
    rows = compare_refl_dpo(args.base, args.out, prompts, held, dict(args.reward or []) or
                            {"motion": 1.0, "aesthetic_proxy": 1.0}, heldout_reward=args.heldout_reward,
                            grad_passes=args.grad_passes, global_batch=args.batch, lr=args.lr,
                            dpo_beta=args.dpo_beta, n_frames=args.frames, size=args.size, device=args.device,
                            **_refl(args))
    print(format_table(rows))
    if args.json:
        print(json.dumps(rows))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="'dit' checkpoint or run directory to start from")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--prompts", help="text file, one prompt per line")
    p.add_argument("--heldout-prompts", help="evaluation prompts (default: the last --n-heldout prompts)")
    p.add_argument("--n-heldout", type=int, default=4)
    p.add_argument("--reward", type=parse_weight, action="append", metavar="NAME=WEIGHT",
                   help="optimised reward and weight (repeat; default motion=1, aesthetic_proxy=1)")
    p.add_argument("--heldout-reward", default="stability", help="reward monitored, never optimised")
    p.add_argument("--beta", type=float, default=0.1, help="reference-velocity regulariser weight")
    p.add_argument("--sample-steps", type=int, default=8, help="Euler steps N of each rollout")
    p.add_argument("--grad-steps", type=int, default=1, help="differentiated last steps K")
    p.add_argument("--cfg", type=float, default=1.0, help="guidance scale while sampling")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=4, help="prompts per optimizer step")
    p.add_argument("--frames", type=int, help="pixel frames (default: the base run's last stage)")
    p.add_argument("--size", type=parse_size, help="HxW (default: the base run's last stage)")
    p.add_argument("--device", help="torch device (default: cuda when available)")


def add_commands(sub: Any) -> None:
    r = sub.add_parser("rlhf", help="RLHF rounds (ReFL) on a DiT checkpoint with reward models")
    _common(r)
    r.add_argument("--data", help="shards directory whose captions are the prompts (instead of --prompts)")
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--steps-per-round", type=int, default=50)
    r.set_defaults(fn=cmd_rlhf)

    c = sub.add_parser("rlhf-compare", help="ReFL vs Flow-DPO at equal DiT forward+backward passes")
    _common(c)
    c.add_argument("--grad-passes", type=int, default=256, help="DiT forward+backward budget of each method")
    c.add_argument("--dpo-beta", type=float, default=500.0)
    c.add_argument("--json", action="store_true", help="also print the rows as JSON")
    c.set_defaults(fn=cmd_rlhf_compare)
