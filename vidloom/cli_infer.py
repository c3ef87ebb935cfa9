"""The ``refine`` and ``thin-decoder`` commands: deprecated aliases of ``vidloom post refine`` and
``vidloom post thin-decoder`` (vidloom/cli_post.py); each flag maps onto an input or a config key."""

from __future__ import annotations

from typing import Any

from vidloom.cli_common import parse_size
from vidloom.cli_post import Knob, alias, run_knobs


def add_commands(sub: Any) -> None:
    alias(sub, "refine", "refine", "train the cascade super-resolution refiner from a base DiT checkpoint", [
        Knob("--base", "input:base", {"required": True, "help": "base DiT checkpoint or run directory"}),
        Knob("--data", "input:data", {"required": True, "help": "pixel shards directory"}),
        Knob("--out", "out", {"required": True, "help": "refiner run directory (resumes)"}),
        *run_knobs("optimizer steps", "config override over the refine preset")[1:],
        Knob("--steps", "post.refine.steps", {"type": int, "default": None, "help": "optimizer steps"}),
        Knob("--size", "post.refine.size", {"type": parse_size, "help": "output HxW of the refiner"}),
        Knob("--frames", "post.refine.n_frames", {"type": int, "help": "pixel frames per training sample"}),
        Knob("--upsample", "post.refine.upsample", {"choices": ["nearest", "trilinear"]}),
        Knob("--lowres-noise", "post.refine.lowres_noise", {"type": float})])
    alias(sub, "thin-decoder", "thin-decoder", "train a narrower VAE decoder against a frozen VAE", [
        Knob("--vae", "input:base", {"required": True, "help": "VAE (or DiT) checkpoint or run directory"}),
        Knob("--data", "input:data", {"required": True, "help": "pixel shards directory"}),
        Knob("--out", "out", {"required": True, "help": "thin decoder run directory (resumes)"}),
        *run_knobs("optimizer steps (default: the VAE config's vae_steps)"),
        Knob("--width", "post.thin_decoder.width", {"type": float}),
        Knob("--perturb", "post.thin_decoder.perturb", {"type": float}),
        Knob("--init", "post.thin_decoder.init", {"choices": ["slice", "random"]}),
        Knob("--generator", "input:generator", {"help": "'dit' run (same VAE) it is also distilled on"}),
        Knob("--generator-steps", "post.thin_decoder.generator_steps", {"type": int}),
        Knob("--guidance", "post.thin_decoder.guidance", {"type": float})])
