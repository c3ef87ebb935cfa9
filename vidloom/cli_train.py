"""Training commands of the ``vidloom`` CLI: train, encode, generate.

``vidloom train --preset tiny --data out/demo/shards --out runs/tiny --steps 200`` trains the VAE
(when no ``--vae`` is given) and then the DiT, resuming from the newest checkpoints if the run
directory has them. Settings beyond the flags are ``--config FILE`` / ``--set key=value`` over the
preset (training/config.py).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from vidloom.cli_common import add_run_options, parse_size


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import load_train_config
    from training.loop.run import train

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    if args.vae_steps is not None:
        overrides.append(f"vae_steps={args.vae_steps}")
    cfg = load_train_config(args.preset, args.config, overrides)
    if args.cron:
        from flows.train_flow import serve_training

        print(f"serving deployment 'vidloom-train/{args.name}': {args.data} -> {args.out} "
              f"on cron '{args.cron}'")
        serve_training(os.path.abspath(args.data), os.path.abspath(args.out), args.cron, args.preset,
                       args.steps, args.vae, list(args.overrides), args.name)
        return 0
    summary = train(cfg, args.data, args.out, vae=args.vae, progress=not args.quiet, device=args.device)
    _print_train_summary(summary)
    return 0


def _print_train_summary(summary: dict[str, Any]) -> None:
    print(f"\nvidloom train: done -> {summary['checkpoint']}")
    for part in ("vae", "dit"):
        run = summary.get(part)
        if run is None:
            continue
        wait = 100 * run["data_wait_share"]
        print(f"  {part}: {run['steps']} steps in {run['out']}, data wait {wait:.1f}%")
        for row in run["eval"]:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("step", "stage", "when"))
            print(f"    step {row['step']:>6} {row['stage']:<11} {row['when']:<5} {metrics}")
    print(f"  log: {summary['out']}/log.jsonl")


def cmd_encode(args: argparse.Namespace) -> int:
    from models.text_encoder import TextEncoderConfig
    from training.data.latents import encode_shards

    text = TextEncoderConfig(kind=args.text_encoder) if args.text_encoder else None
    if text is not None and args.text_weights:
        text.hf.weights_path = args.text_weights
    manifest = encode_shards(args.shards, args.vae, args.out, n_frames=args.frames, size=args.size,
                             fps=args.fps, text_encoder=text, batch_size=args.batch_size, device=args.device)
    print(f"vidloom encode: {manifest['n_samples']} samples, {len(manifest['shards'])} shards -> {args.out}")
    return 0


def _steps(text: str) -> int | str:
    """``--steps``: a positive integer or 'auto'."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"steps must be a positive integer or 'auto', got {text!r}")
    return int(text)


def _generate_options(args: argparse.Namespace) -> dict[str, Any]:
    """``generate_to_file`` / ``generate_batch`` keyword arguments of the generate flags."""
    kw: dict[str, Any] = {
        "image": args.image, "n_frames": args.frames, "size": args.size, "fps": args.fps, "steps": args.steps,
        "cfg_scale": args.cfg, "seed": args.seed, "heun": args.heun, "negative_prompt": args.negative,
        "device": args.device, "use_ema": not args.no_ema, "refine": args.refine,
        "refine_steps": args.refine_steps, "thin_decoder": args.thin_decoder,
    }
    if args.steps == "auto":
        from training.inference.adaptive_steps import AdaptiveSteps

        kw["adaptive"] = AdaptiveSteps(budget=args.steps_budget, min_steps=args.steps_min,
                                       max_steps=args.steps_max, reference=args.steps_ref)
    if args.rewrite:
        kw["rewrite"] = {"lang": args.rewrite_lang, "endpoint": args.rewrite_endpoint,
                         "model": args.rewrite_model}
        if args.rewrite_endpoint:
            kw["rewrite"].update(api_key=args.rewrite_api_key, max_retries=args.rewrite_retries)
    return kw


def cmd_generate(args: argparse.Namespace) -> int:
    from training.inference.generate import generate_to_file

    if args.prompts:
        from training.inference.generate_batch import generate_batch

        for row in generate_batch(args.ckpt, args.prompts, args.out, **_generate_options(args)):
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if args.prompt is None:
        raise ValueError("vidloom generate needs --prompt or --prompts")

    info = generate_to_file(args.ckpt, args.prompt, args.out, **_generate_options(args))
    print(json.dumps(info, ensure_ascii=False))
    return 0


def add_commands(sub: Any) -> None:
    t = sub.add_parser("train", help="train the VAE (unless --vae) and the DiT on shards; resumes")
    t.add_argument("--preset", default="tiny", help="tiny (CPU) | small (1 GPU) | b1 (multi-GPU)")
    t.add_argument("--data", required=True, help="shards directory (pixels or `vidloom encode` latents)")
    t.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl, config.yaml)")
    t.add_argument("--vae-steps", type=int, help="VAE optimizer steps when the VAE is trained first")
    t.add_argument("--vae", help="a trained VAE checkpoint or run directory (skips VAE training)")
    t.add_argument("--config", help="YAML file with config overrides")
    add_run_options(t, "DiT optimizer steps (stages scale with it)")
    t.add_argument("--cron", help="instead of training now, serve a Prefect deployment that resumes the "
                   "run on this schedule (needs PREFECT_API_URL or a local server)")
    t.add_argument("--name", default="train", help="deployment name (with --cron)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("encode", help="precompute VAE latents (and frozen text embeddings) as shards")
    e.add_argument("shards", help="pixel shards directory")
    e.add_argument("--vae", required=True, help="VAE checkpoint or run directory")
    e.add_argument("--out", required=True, help="latent shards directory")
    e.add_argument("--frames", type=int, default=9, help="pixel frames per sample (1 + 4k)")
    e.add_argument("--size", type=parse_size, default=(64, 128), help="HxW")
    e.add_argument("--fps", type=float, default=8.0)
    e.add_argument("--text-encoder", choices=["minilm", "hf"], help="also store text embeddings (frozen)")
    e.add_argument("--text-weights", help="local model directory for --text-encoder hf")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--device", default="cpu")
    e.set_defaults(fn=cmd_encode)

    g = sub.add_parser("generate", help="write an mp4 from a DiT checkpoint (T2V, or I2V with --image)")
    g.add_argument("--ckpt", required=True, help="DiT checkpoint or run directory")
    g.add_argument("--prompt")
    g.add_argument("--prompts", help="UTF-8 prompt file (one per line): one mp4 each, --out is a directory")
    g.add_argument("--refine", help="refiner checkpoint or run dir (cascade; --size is the output size)")
    g.add_argument("--refine-steps", type=int, help="refiner sampler steps (default: --steps)")
    g.add_argument("--thin-decoder", help="thin VAE decoder checkpoint or run directory")
    g.add_argument("--image", help="first frame (png/jpg) for image-to-video")
    g.add_argument("--out", required=True, help="output .mp4")
    g.add_argument("--frames", type=int, help="pixel frames (default: the last training stage's)")
    g.add_argument("--size", type=parse_size, help="HxW (default: the last training stage's)")
    g.add_argument("--fps", type=float)
    g.add_argument("--steps", type=_steps, default=30,
                   help="sampler steps, or 'auto': picked per prompt from a probe of the velocity field")
    g.add_argument("--steps-budget", type=float, default=30.0,
                   help="--steps auto: the average steps of the fixed schedule it replaces (probe included)")
    g.add_argument("--steps-min", type=int, default=2, help="--steps auto: fewest steps")
    g.add_argument("--steps-max", type=int, help="--steps auto: most steps (default 2 x budget)")
    g.add_argument("--steps-ref", type=float, help="--steps auto, one prompt: the probe estimate that gets "
                   "the budget (default: calibrated on built-in prompts; --prompts calibrates on the file)")
    g.add_argument("--rewrite", action="store_true",
                   help="expand the prompt into the training captions' dense style first (vidloom rewrite)")
    from vidloom.cli_rewrite import add_rewrite_options

    add_rewrite_options(g, prefix="rewrite-")
    g.add_argument("--cfg", type=float, default=4.0, help="classifier-free guidance scale")
    g.add_argument("--negative", default="", help="negative prompt (the CFG unconditional)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--heun", action="store_true", help="second-order sampler")
    g.add_argument("--device", default="cpu", help="torch device")
    g.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    g.set_defaults(fn=cmd_generate)
