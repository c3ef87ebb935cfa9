"""Refiner post-training commands of the ``vidloom`` CLI (training/post/refine_post.py).

``vidloom refine-sft --refiner runs/refiner --data shards --out runs/refiner-sft`` fine-tunes a refiner;
``vidloom refine-rlhf --refiner runs/refiner --prompts prompts.txt --out runs/refiner-rlhf
--reward aesthetic_proxy=1`` runs ReFL on it. Both write "refiner" checkpoints (``generate --refine``).
"""

from __future__ import annotations

import argparse
from typing import Any

from vidloom.cli_common import add_run_options, add_selection_options, parse_weight, read_prompt_file


def cmd_refine_sft(args: argparse.Namespace) -> int:
    from training.post.refine_post import refiner_sft

    result = refiner_sft(args.refiner, data=args.data, catalog=args.catalog, where=args.where, out=args.out,
                         steps=args.steps, overrides=args.overrides, progress=not args.quiet,
                         device=args.device)
    evals = result["summary"].get("eval") or []
    tail = f" (eval_loss {evals[-1]['eval_loss']:.4f})" if evals and "eval_loss" in evals[-1] else ""
    print(f"vidloom refine-sft: done -> {result['checkpoint']}{tail}")
    return 0


def cmd_refine_rlhf(args: argparse.Namespace) -> int:
    from training.post.refine_post import refiner_rlhf

    prompts = read_prompt_file(args.prompts)
    if prompts is None and args.data is None:
        raise ValueError("give --prompts FILE or --data SHARDS (their captions are the prompts)")
    result = refiner_rlhf(args.refiner, args.out, prompts=prompts, data=args.data, steps=args.steps,
                          global_batch=args.batch, lr=args.lr, rewards=dict(args.reward or []) or None,
                          beta=args.beta, sample_steps=args.sample_steps, grad_steps=args.grad_steps,
                          base_steps=args.base_steps,
                          eval_prompts=read_prompt_file(args.heldout_prompts) or (),
                          progress=not args.quiet, device=args.device)
    evals = result["summary"].get("eval") or []
    if evals and "eval/composite" in evals[0]:
        print(f"eval/composite {evals[0]['eval/composite']:.4f} -> {evals[-1]['eval/composite']:.4f}")
    print(f"vidloom refine-rlhf: done -> {result['checkpoint']}")
    return 0


def add_commands(sub: Any) -> None:

    s = sub.add_parser("refine-sft", help="fine-tune a refiner on pixel shards or a catalog selection")
    s.add_argument("--refiner", required=True, help="refiner checkpoint or run directory")
    add_selection_options(s, "pixel shards directory")
    s.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl, config.yaml)")
    add_run_options(s, "optimizer steps (default: 10%% of the refiner's, >= 10)",
                    "config override over the SFT preset (lr = refiner lr / 5)")
    s.set_defaults(fn=cmd_refine_sft)

    r = sub.add_parser("refine-rlhf", help="ReFL on a refiner (low-res latents from the frozen base)")
    r.add_argument("--refiner", required=True, help="refiner checkpoint or run directory")
    r.add_argument("--out", required=True, help="run directory")
    r.add_argument("--prompts", help="prompt file (one per line)")
    r.add_argument("--data", help="shards directory whose captions are the prompts")
    r.add_argument("--heldout-prompts", help="prompt file scored with fixed noise at each evaluation")
    r.add_argument("--reward", type=parse_weight, action="append", metavar="NAME[=WEIGHT]",
                   help="optimised reward (repeatable; default motion=1, aesthetic_proxy=1)")
    r.add_argument("--steps", type=int, default=100)
    r.add_argument("--batch", type=int, default=4, help="global batch (prompts per step)")
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--beta", type=float, default=0.1, help="reference-velocity regulariser weight")
    r.add_argument("--sample-steps", type=int, default=8, help="refiner Euler steps")
    r.add_argument("--grad-steps", type=int, default=1, help="differentiated last refiner steps (K)")
    r.add_argument("--base-steps", type=int, default=8, help="base Euler steps for the low-res latent")
    r.add_argument("--device", help="torch device")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(fn=cmd_refine_rlhf)
