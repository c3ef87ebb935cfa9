"""`vidloom rewrite "prompt"`: expand a short prompt into the training captions' dense style.

``vidloom rewrite "two dogs chase a red ball" [--lang auto|zh|en]`` uses the deterministic
template (CPU, no endpoint); with ``--endpoint http://host:8000/v1 --model NAME`` a chat model
writes it through the OpenAI-compatible client, and its reply is checked against the prompt
(captioner/rewrite.py). Prints the rewritten prompt, or with ``--json`` the whole record
(original, rewritten, source, checks, failure). A failed rewrite prints the original prompt
and its reason on stderr; the exit status is 0 either way (the original is a valid prompt).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_rewrite_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--lang``, ``--endpoint``, ``--model``, ``--api-key`` (``prefix``: e.g. 'rewrite-' for generate)."""
    p.add_argument(f"--{prefix}lang", choices=["auto", "zh", "en"], default="auto",
                   help="language of the rewrite (auto: the prompt's)")
    p.add_argument(f"--{prefix}endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 "
                   "(default: the deterministic template, no model)")
    p.add_argument(f"--{prefix}model", help="chat model name at --endpoint")
    p.add_argument(f"--{prefix}api-key", help="API key (default: from the environment, for allowed hosts)")
    p.add_argument(f"--{prefix}retries", type=int, default=2, help="retries of a failed reply")


def rewrite_from_args(prompt: str, args: argparse.Namespace, prefix: str = "") -> Any:
    """``captioner.rewrite.rewrite`` with the options of ``add_rewrite_options``."""
    from captioner.rewrite import rewrite

    opt = {k: getattr(args, f"{prefix}{k}".replace("-", "_")) for k in ("lang", "endpoint", "model",
                                                                            "api_key", "retries")}
    kw: dict[str, Any] = {}
    if opt["endpoint"]:
        kw = {"api_key": opt["api_key"], "max_retries": opt["retries"]}
    return rewrite(prompt, opt["lang"], opt["endpoint"], opt["model"], **kw)


def cmd_rewrite(args: argparse.Namespace) -> int:
    result = rewrite_from_args(args.prompt, args)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
    else:
        print(result.prompt)
    if result.failure:
        print(f"vidloom rewrite: kept the original prompt: {result.failure}", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    """Register ``vidloom rewrite`` on the top-level subparsers."""
    r = sub.add_parser("rewrite", help="expand a short prompt (zh or en) into the dense training-caption "
                       "style (template, or a chat model with --endpoint)")
    r.add_argument("prompt")
    add_rewrite_options(r)
    r.add_argument("--json", action="store_true", help="print the whole record (checks, source, failure)")
    r.set_defaults(fn=cmd_rewrite)
