"""Inline SVG charts for the HTML report (curation/report.py): no JS, no external files.

Each function returns one ``<svg>`` element as a string; numbers are formatted with fixed
precision so the same data gives byte-identical markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

KEPT_COLOUR = "#2f8f5b"
REJECTED_COLOUR = "#c8553d"
THRESHOLD_COLOUR = "#1d3557"
HIST_BINS = 24
_W, _H = 320, 150  # histogram size, px
_LEFT, _RIGHT, _TOP, _BOTTOM = 34, 10, 18, 24  # plot margins, px


def fmt(x: float | int | None) -> str:
    """A short, stable rendering of a number (3 significant digits for floats)."""
    if x is None:
        return "-"
    if isinstance(x, int) or float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.3g}"


def _px(x: float) -> str:
    return f"{x:.1f}"


def histogram_svg(
    column: str,
    kept: Sequence[float],
    rejected: Sequence[float],
    threshold: tuple[str, float] | None = None,
    bins: int = HIST_BINS,
) -> str:
    """Stacked histogram (kept below, rejected above) of one score column.

    Args:
        column: the score's name (title and ``data-column``).
        kept, rejected: non-null values of kept and rejected clips.
        threshold: ('min' | 'max', value) drawn as a dashed line; the range is widened to show it.
        bins: number of equal-width bins.
    """
    values = list(kept) + list(rejected)
    lo, hi = min(values), max(values)
    if threshold is not None:
        lo, hi = min(lo, threshold[1]), max(hi, threshold[1])
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    width = (hi - lo) / bins

    def counts(xs: Sequence[float]) -> list[int]:
        out = [0] * bins
        for x in xs:
            out[min(bins - 1, max(0, int(math.floor((x - lo) / width))))] += 1
        return out

    nk, nr = counts(kept), counts(rejected)
    top = max(k + r for k, r in zip(nk, nr, strict=True)) or 1
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    bw = pw / bins
    x_of = lambda v: _LEFT + (v - lo) / (hi - lo) * pw
    parts = [
        f'<svg class="hist" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" data-column="{html.escape(column)}" data-n="{len(values)}" '
        f'data-kept="{len(kept)}" data-rejected="{len(rejected)}" role="img">',
        f'<text x="{_LEFT}" y="12" class="t">{html.escape(column)} (n={len(values)})</text>',
        f'<line x1="{_LEFT}" y1="{_TOP + ph}" x2="{_LEFT + pw}" y2="{_TOP + ph}" stroke="#999"/>',
    ]
    for i, (k, r) in enumerate(zip(nk, nr, strict=True)):
        x = _LEFT + i * bw
        tip = f"[{fmt(lo + i * width)}, {fmt(lo + (i + 1) * width)}): {k} kept, {r} rejected"
        for count, below, colour in ((k, 0, KEPT_COLOUR), (r, k, REJECTED_COLOUR)):
            if count:
                h, y = count / top * ph, _TOP + ph - (below + count) / top * ph
                parts.append(f'<rect x="{_px(x + 0.5)}" y="{_px(y)}" width="{_px(bw - 1)}" '
                             f'height="{_px(h)}" fill="{colour}"><title>{tip}</title></rect>')
    if threshold is not None:
        side, value = threshold
        tx = x_of(value)
        parts.append(f'<line class="threshold" data-side="{html.escape(side)}" data-value="{value!r}" '
                     f'x1="{_px(tx)}" y1="{_TOP - 4}" x2="{_px(tx)}" y2="{_TOP + ph}" '
                     f'stroke="{THRESHOLD_COLOUR}" stroke-width="1.5" stroke-dasharray="4 2"/>')
        anchor = "end" if tx > _LEFT + pw / 2 else "start"
        parts.append(f'<text x="{_px(tx + (-3 if anchor == "end" else 3))}" y="{_TOP + 6}" class="s" '
                     f'text-anchor="{anchor}">{html.escape(side)} {fmt(value)}</text>')
    parts += [
        f'<text x="{_LEFT}" y="{_H - 8}" class="s">{fmt(lo)}</text>',
        f'<text x="{_LEFT + pw}" y="{_H - 8}" class="s" text-anchor="end">{fmt(hi)}</text>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 8}" class="s" text-anchor="end">{top}</text>',
        "</svg>",
    ]
    return "".join(parts)


def funnel_svg(stages: Sequence[tuple[str, int]]) -> str:
    """Horizontal bars, one per funnel stage, scaled to the largest."""
    bar_h, gap, label_w, w = 22, 6, 90, 520
    h = len(stages) * (bar_h + gap) + gap
    top = max((n for _, n in stages), default=0) or 1
    parts = [f'<svg class="funnel" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img">']
    for i, (name, n) in enumerate(stages):
        y = gap + i * (bar_h + gap)
        bw = max(1.0, n / top * (w - label_w - 60))
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="t">'
                     f"{html.escape(name)}</text>"
                     f'<rect x="{label_w}" y="{y}" width="{_px(bw)}" height="{bar_h}" fill="{KEPT_COLOUR}" '
                     f'opacity="{1.0 - 0.15 * i:.2f}"/>'
                     f'<text x="{_px(label_w + bw + 6)}" y="{y + 15}" class="t">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)
