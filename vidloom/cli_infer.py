"""Inference-side training commands of the ``vidloom`` CLI: refine, thin-decoder.

``vidloom refine --base runs/tiny --data out/demo/shards --out runs/refine --steps 200`` trains the
cascade refiner (``training/post/refine.py``) from a base "dit" checkpoint; ``vidloom thin-decoder --vae
runs/tiny/vae --data out/demo/shards --out runs/thin`` trains a half-width VAE decoder
(``training/post/thin_decoder.py``). Both resume from the newest checkpoint of ``--out``.
"""

from __future__ import annotations

import argparse
from typing import Any

from vidloom.cli_common import add_run_options, parse_size


def _print_summary(name: str, summary: dict[str, Any]) -> None:
    print(f"vidloom {name}: {summary['steps']} steps -> {summary['checkpoint']}")
    for row in summary["eval"]:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("step", "stage", "when"))
        print(f"  step {row['step']:>6} {row['stage']:<11} {row['when']:<5} {metrics}")


def cmd_refine(args: argparse.Namespace) -> int:
    from training.post.refine import train_refiner

    summary = train_refiner(args.base, args.data, args.out, steps=args.steps, overrides=list(args.overrides),
                            size=args.size, n_frames=args.frames, device=args.device,
                            progress=not args.quiet, upsample=args.upsample, lowres_noise=args.lowres_noise)
    _print_summary("refine", summary)
    return 0


def cmd_thin_decoder(args: argparse.Namespace) -> int:
    from training.post.thin_decoder import train_thin_decoder

    summary = train_thin_decoder(args.vae, args.data, args.out, steps=args.steps,
                                 overrides=list(args.overrides), width=args.width, perturb=args.perturb,
                                 init=args.init, generator=args.generator,
                                 generator_steps=args.generator_steps, guidance=args.guidance,
                                 device=args.device, progress=not args.quiet)
    _print_summary("thin-decoder", summary)
    return 0


def add_commands(sub: Any) -> None:
    r = sub.add_parser("refine", help="train the cascade super-resolution refiner from a base DiT checkpoint")
    r.add_argument("--base", required=True, help="base DiT checkpoint or run directory")
    r.add_argument("--data", required=True, help="pixel shards directory")
    r.add_argument("--out", required=True, help="refiner run directory (resumes)")
    add_run_options(r, "optimizer steps (default: the refine preset's)",
                    "config override over the refine preset (e.g. lr=1e-4); DiT/VAE/text stay the base's")
    r.add_argument("--size", type=parse_size,
                   help="output HxW of the refiner (default 64x128); the base runs at half")
    r.add_argument("--frames", type=int, help="pixel frames per training sample (default 9)")
    r.add_argument("--upsample", choices=["nearest", "trilinear"], default="trilinear",
                   help="latent-space upsampling of the low-res condition")
    r.add_argument("--lowres-noise", type=float, default=0.1,
                   help="max std of the Gaussian noise added to the low-res latent in training")
    r.set_defaults(fn=cmd_refine)

    t = sub.add_parser("thin-decoder", help="train a narrower VAE decoder against a frozen VAE")
    t.add_argument("--vae", required=True, help="VAE (or DiT) checkpoint or run directory")
    t.add_argument("--data", required=True, help="pixel shards directory")
    t.add_argument("--out", required=True, help="thin decoder run directory (resumes)")
    add_run_options(t, "optimizer steps (default: the VAE config's vae_steps)")
    t.add_argument("--width", type=float, default=0.5, help="channel multiplier of the thin decoder")
    t.add_argument("--perturb", type=float, default=2.0,
                   help="also distil on latents moved by up to this many latent stds (0: means only)")
    t.add_argument("--init", choices=["slice", "random"], default="random",
                   help="random weights, or the full decoder's leading channels")
    t.add_argument("--generator", help="'dit' run (same VAE) whose sampled latents it is also distilled on")
    t.add_argument("--generator-steps", type=int, default=4, help="the generator's sampler steps")
    t.add_argument("--guidance", type=float, default=4.0, help="the generator's guidance scale")
    t.set_defaults(fn=cmd_thin_decoder)
