"""Argument helpers shared by several ``vidloom`` commands (one place, so command modules import
this module and never each other)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` -> (H, W)."""
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit():
        raise argparse.ArgumentTypeError(f"size {text!r} must look like HxW, e.g. 64x128")
    return int(h), int(w)


def add_run_options(p: argparse.ArgumentParser, steps_help: str, set_help: str | None = None) -> None:
    """``--steps``, ``--set KEY=VALUE``, ``--device`` and ``--quiet``: what every training command takes."""
    p.add_argument("--steps", type=int, help=steps_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--device", help="torch device (default: cuda:LOCAL_RANK when available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_selection_options(p: argparse.ArgumentParser, data_help: str) -> None:
    """The fine-tuning data: ``--data`` shards, or a ``--catalog`` and its ``--where`` selection."""
    p.add_argument("--data", help=data_help)
    p.add_argument("--catalog", help="catalog.duckdb whose --where selection is exported to OUT/data")
    p.add_argument("--where", help="SQL predicate over the clips table (with --catalog)")


def parse_weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name, float(value) if sep else 1.0
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"reward {text!r} must look like NAME or NAME=WEIGHT") from e


def read_prompt_file(path: str | None) -> list[str] | None:
    if path is None:
        return None
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"{path} has no prompts (one per line)")
    return prompts


def add_distill_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="'dit' checkpoint or run directory giving the targets")
    p.add_argument("--data", required=True, help="shards directory (pixels or `vidloom encode` latents)")
    p.add_argument("--out", required=True, help="student run directory")
    add_run_options(p, "optimizer steps (default: the teacher config's)",
                    "config overrides over the teacher's config (lr=..., stages=..., ...)")


def distill_config_from_args(args: argparse.Namespace, source: str) -> Any:
    from training.loop.checkpoint import load_checkpoint, resolve_checkpoint
    from training.post.distill import distill_config

    overrides = list(args.overrides) + ([f"steps={args.steps}"] if args.steps is not None else [])
    embed = True
    if source != args.teacher:  # TSCD: the student keeps its init checkpoint's architecture
        embed = bool(load_checkpoint(resolve_checkpoint(source))["config"]["dit"].get("guidance_embed"))
    return distill_config(source, overrides, guidance_embed=embed)


def print_distill_summary(summary: dict[str, Any]) -> None:
    print(json.dumps({k: summary[k] for k in ("kind", "steps", "out")}))
    for row in summary["eval"]:
        print(f"  step {row['step']:>6} {row['stage']:<11} {row['when']:<5} "
              f"eval_distill_loss {row.get('eval_distill_loss', float('nan')):.5f}")
