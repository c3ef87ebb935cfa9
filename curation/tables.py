"""Plain-text tables for the terminal (``vidloom query``, the annotation and eval reports)."""

from __future__ import annotations

import sys
from typing import Any


def print_table(cols: list[str], rows: list[tuple[Any, ...]], out: Any = None) -> None:
    """``cols`` and ``rows`` as an aligned ``a | b`` table with a row count; None prints empty."""
    out = out or sys.stdout
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]

    def line(vals: list[str]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True))

    print(line(cols), file=out)
    print("-+-".join("-" * w for w in widths), file=out)
    for r in cells:
        print(line(r), file=out)
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=out)
