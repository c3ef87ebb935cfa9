"""`vidloom eval`: compare checkpoints on a prompt suite (registered by vidloom/cli.py).

    vidloom eval --ckpt runs/a --ckpt late=runs/b --suite default --out out/eval --seeds 0,1

generates every suite prompt with every seed for every checkpoint, scores the videos
(evaluation/scoring.py), prints the per-dimension means and the pairwise win rates, writes
``<out>/report.html`` (videos side by side) and appends the run to ``<out>/eval.duckdb``
(or ``--db``). See evaluation/harness.py for the video ids and how multi-shot prompts are generated.
"""

from __future__ import annotations

import argparse
from typing import Any

from vidloom.cli_common import parse_size


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}") from e
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def _steps(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--steps must be an integer >= 1 or 'auto', got {text!r}")
    return int(text)


def _weights(text: str) -> dict[str, float]:
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"--weights must look like motion=1,stability=0.5, got {text!r}")
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    from evaluation.eval_report import format_report
    from evaluation.harness import CheckpointSpec, EvalSettings, run_eval
    from evaluation.scoring import DEFAULT_WEIGHTS
    from evaluation.suite import load_suite

    suite = load_suite(args.suite)
    weights = None
    if args.weights:
        weights = {**DEFAULT_WEIGHTS, **_weights(args.weights)}
    settings = EvalSettings(seeds=args.seeds, steps=args.steps, cfg_scale=args.cfg, n_frames=args.frames,
                            size=parse_size(args.size) if args.size else None, fps=args.fps,
                            negative_prompt=args.negative, device=args.device, use_ema=not args.no_ema,
                            heads=list(args.reward_head), references=args.reference,
                            max_references=args.max_references, weights=weights, ci=args.ci)
    specs = [CheckpointSpec.parse(c) for c in args.ckpt]
    print(f"vidloom eval: {len(specs)} checkpoint(s) x {len(suite.prompts)} prompts ({suite.name}) x "
          f"{len(settings.seeds)} seed(s)")
    record = None
    if args.json:
        import torch

        from bench import record as bench_record

        record = bench_record.provenance("vidloom eval", args.argv, "fp32", torch.get_num_threads())
    result = run_eval(specs, suite, args.out, settings, db=args.db, labels_db=args.labels)
    print(format_report(result))
    print(f"page: {args.out}/report.html  results: {args.out}/runs/{result['run_id']}/results.json  "
          f"db: {result['db']}")
    if args.json and record is not None:
        from bench import record as bench_record

        summary = {k: result[k] for k in ("run_id", "suite", "suite_sha", "ckpts", "settings", "elapsed_s",
                                          "dimensions", "winrates")}
        summary["n_videos"] = len(result["videos"])
        bench_record.write_result(args.json, record, {"eval": summary})
    return 0


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", action="append", required=True, metavar="[LABEL=]RUN",
                   help="'dit' checkpoint file or run directory (its newest checkpoint); repeatable")
    p.add_argument("--suite", default="default", help="suite YAML file or built-in name (default | tiny)")
    p.add_argument("--out", required=True, help="output directory (videos, report.html, runs/, eval.duckdb)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1], help="comma-separated noise seeds (default 0,1)")
    p.add_argument("--steps", type=_steps, default=20,
                   help="sampler steps (default 20), or auto: generate's adaptive count per prompt")
    p.add_argument("--cfg", type=float, default=4.0, help="classifier-free guidance scale")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--frames", type=int, help="pixel frames (default: the first checkpoint's last stage)")
    p.add_argument("--size", help="HxW (default: the first checkpoint's last stage)")
    p.add_argument("--fps", type=float)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-ema", action="store_true", help="raw weights instead of the EMA")
    p.add_argument("--db", help="DuckDB history file (default <out>/eval.duckdb)")
    p.add_argument("--labels", help="DuckDB file with the annotation page's preferences table "
                   "(default: --db when it has one)")
    p.add_argument("--reward-head", action="append", default=[], metavar="PATH",
                   help="trained reward head (text_alignment or motion) to score with; repeatable")
    p.add_argument("--reference", metavar="SHARDS",
                   help="shards whose clips give data_fidelity (PSNR to the nearest clip, through the VAE)")
    p.add_argument("--max-references", type=int, default=16, help="reference clips read (default 16)")
    p.add_argument("--weights", help="composite weights over the defaults, e.g. data_fidelity=2,motion=0")
    p.add_argument("--ci", choices=["wilson", "bootstrap"], default="wilson",
                   help="win-rate interval: Wilson score, or a bootstrap over prompts")
    p.add_argument("--json", help="also write a bench result record (command, date, machine) here")


def add_commands(sub: Any) -> None:
    """Register ``vidloom eval`` on the top-level subparsers."""
    p = sub.add_parser("eval", help="compare checkpoints on a prompt suite: tables, win rates, HTML, DuckDB")
    add_eval_arguments(p)
    p.set_defaults(fn=_run, argv=None)


def _run(args: argparse.Namespace) -> int:
    if args.argv is None:
        import sys

        args.argv = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "eval" else sys.argv[1:]
    return cmd_eval(args)
