"""Post-training commands of the ``vidloom`` CLI: sft, merge.

``vidloom sft --base runs/tiny --catalog out/demo/catalog.duckdb --where "status = 'kept' AND
aesthetic > 5" --out runs/tiny-sft --steps 50`` exports the selected clips to ``runs/tiny-sft/data``
and fine-tunes the base DiT on them (``--data SHARDS`` instead trains on a shards directory);
rerunning the command resumes. ``vidloom merge runs/a runs/b --weights 0.7,0.3 --out merged.pt``
averages the weights of DiT checkpoints of one model (for generation or as an SFT base).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vidloom.cli_common import add_run_options, add_selection_options


def _weights(text: str) -> list[float]:
    """``w1,w2,...`` -> floats."""
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"weights {text!r} must look like 0.7,0.3") from None


def cmd_sft(args: argparse.Namespace) -> int:
    from training.post.sft import sft

    if (args.data is None) == (args.catalog is None):
        raise ValueError("give --data SHARDS or --catalog DB --where SQL")
    if args.catalog is not None and not args.where:
        raise ValueError("--catalog needs --where SQL (e.g. \"status = 'kept'\")")
    if args.where and args.catalog is None:
        raise ValueError("--where selects clips of a --catalog")
    if args.prefect:
        from flows.post_flow import sft_flow

        summary = sft_flow(args.base, args.out, data=args.data, catalog=args.catalog, where=args.where,
                           steps=args.steps, overrides=list(args.overrides), init=args.init,
                           device=args.device)
    else:
        summary = sft(args.base, data=args.data, catalog=args.catalog, where=args.where, out=args.out,
                      steps=args.steps, overrides=list(args.overrides), init=args.init,
                      progress=not args.quiet, device=args.device)
    _print_sft_summary(summary)
    return 0


def _print_sft_summary(summary: dict[str, Any]) -> None:
    run = summary["dit"]
    print(f"\nvidloom sft: done -> {summary['checkpoint']}")
    print(f"  base: {summary['base']} (step {summary['base_step']})")
    print(f"  data: {summary['data']}")
    print(f"  {run['steps']} steps in {run['out']}, data wait {100 * run['data_wait_share']:.1f}%")
    for row in run["eval"]:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("step", "stage", "when"))
        print(f"    step {row['step']:>6} {row['stage']:<11} {row['when']:<5} {metrics}")
    print(f"  log: {summary['out']}/log.jsonl")


def cmd_merge(args: argparse.Namespace) -> int:
    from training.loop.checkpoint import load_checkpoint
    from training.post.merge import merge_checkpoints

    path = merge_checkpoints(args.ckpts, args.weights, out=args.out)
    info = load_checkpoint(path)["merge"]
    print(json.dumps({"out": str(path), **info}, ensure_ascii=False))
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser("sft", help="fine-tune a trained DiT on shards or a catalog selection; resumes")
    s.add_argument("--base", required=True, help="base DiT checkpoint or run directory")
    add_selection_options(s, "shards directory (pixels or `vidloom encode` latents)")
    s.add_argument("--out", required=True, help="SFT run directory (checkpoints, log.jsonl, config.yaml)")
    add_run_options(s, "SFT optimizer steps (default: 10%% of the base's, >= 10)",
                    "config override over the SFT preset (lr = base lr / 5, one video stage)")
    s.add_argument("--init", choices=["ema", "net"], default="ema",
                   help="start from the base's EMA weights (default) or its raw weights")
    s.add_argument("--prefect", action="store_true", help="run as the vidloom-sft Prefect flow")
    s.set_defaults(fn=cmd_sft)

    m = sub.add_parser("merge", help="average the weights of DiT checkpoints of one model")
    m.add_argument("ckpts", nargs="+", metavar="CKPT", help="DiT checkpoints or run directories (>= 2)")
    m.add_argument("--weights", type=_weights, help="one weight per checkpoint, e.g. 0.7,0.3 (normalised)")
    m.add_argument("--out", required=True, help="merged checkpoint file (.pt) or run directory")
    m.set_defaults(fn=cmd_merge)
