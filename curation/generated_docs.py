"""The command line of a generated reference page: render it, then write it to ``--out`` or print it
(``curation/catalog_reference.py``, ``vidloom/config_reference.py``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(render: Callable[[], str], description: str, argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", help="write here (default: stdout)")
    args = p.parse_args(argv)
    text = render()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
