"""The ``vidloom`` tool commands: bench (benchmarks, bench/), caption-server (vLLM, captioner/server.py)
and samples (synthetic sample videos, samplegen/)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

# `vidloom bench WHAT [--real DIR] ...` -> the module whose main() runs it (bench/)
BENCHES = {"split": "bench.split", "curate": "bench.curate", "filters": "bench.filters",
           "caption": "bench.caption", "train": "bench.train", "attention": "bench.attention",
           "generate": "bench.generate", "scale": "bench.scale"}
REAL = {"split": "bench.split_real", "curate": "bench.curate_real"}  # with --real: labelled real footage


def cmd_bench(args: argparse.Namespace) -> int:
    real = any(a == "--real" or a.startswith("--real=") for a in args.rest)
    module = REAL[args.what] if real and args.what in REAL else BENCHES[args.what]
    return int(importlib.import_module(module).main(args.rest))


def cmd_caption_server(args: argparse.Namespace) -> int:
    from captioner.server import main as server_main

    return server_main(args.rest)  # every flag after the command, vLLM's included (see vidloom.cli.main)


def cmd_samples(args: argparse.Namespace) -> int:
    from samplegen.samples import main as samples_main

    return samples_main([args.kind, args.dir])


def add_commands(sub: Any) -> None:
    b = sub.add_parser("bench", help="benchmarks: " + " | ".join(BENCHES))
    b.add_argument("what", choices=list(BENCHES))
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=cmd_bench)

    cs = sub.add_parser("caption-server", help="launch vLLM's OpenAI server with a video LLM (GPU), or "
                        "`caption-server convert SRC DST` a Tarsier2 checkpoint to Qwen2-VL", add_help=False)
    cs.add_argument("rest", nargs=argparse.REMAINDER)  # parsed by captioner/server.py, --help included
    cs.set_defaults(fn=cmd_caption_server, passthrough=True)

    s = sub.add_parser("samples", help="generate sample videos: demo | bad | suite")
    s.add_argument("kind", choices=["demo", "bad", "suite"])
    s.add_argument("dir")
    s.set_defaults(fn=cmd_samples)
