"""Argument helpers shared by several ``vidloom`` commands (one place, so command modules import
this module and never each other)."""

from __future__ import annotations

import argparse
from pathlib import Path


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
