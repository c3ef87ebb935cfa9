"""The report's "Balanced exports" section: per export directory, each view's target, pool and
achieved shares and its total-variation distance, from the ``balance_counts`` table that
``vidloom export --balance`` fills (pipelines/balance_export.py)."""

from __future__ import annotations

from html import escape
from typing import Any


def _pct(x: float | None) -> str:
    return "no target" if x is None else f"{x:.1%}"


def balance_exports_html(cat: Any) -> tuple[str, dict[str, Any]]:
    """``(section html, {export_root: {"mode", "dataset", "tv": {view: distance}}})``; empty when
    no balanced export was recorded."""
    if not cat.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'balance_counts'")[1]:
        return "", {}  # a catalog made before balanced exports, opened read-only
    rows = cat.dicts("SELECT * FROM balance_counts ORDER BY export_root, view_name, class_name")
    if not rows:
        return "", {}
    numbers: dict[str, Any] = {}
    parts: list[str] = []
    for root in dict.fromkeys(r["export_root"] for r in rows):
        mine = [r for r in rows if r["export_root"] == root]
        info = numbers[root] = {"mode": mine[0]["mode"], "dataset": mine[0]["dataset"], "tv": {}}
        trs = []
        for r in mine:
            if r["tv"] is not None:
                info["tv"][r["view_name"]] = r["tv"]
            trs.append(f'<tr><td class="l">{escape(r["view_name"])}</td>'
                       f'<td class="l">{escape(r["class_name"])}</td><td>{_pct(r["target"])}</td>'
                       f'<td>{r["pool_clips"]}</td><td>{_pct(r["pool_share"])}</td>'
                       f'<td data-achieved="{escape(r["view_name"])}/{escape(r["class_name"])}">'
                       f'{_pct(r["achieved_share"])}</td></tr>')
        dist = "".join(f'<tr><td class="l">{escape(v)}</td>'
                       f'<td data-distance-export="{escape(v)}">{d:.3f}</td></tr>'
                       for v, d in sorted(info["tv"].items()))
        parts.append(
            f'<h3>{escape(root)}</h3><p>mode <b>{escape(info["mode"])}</b>, dataset '
            f'{escape(str(info["dataset"])[:16])}</p>'
            '<table><tr><th>view</th><th>class</th><th>target</th><th>pool clips</th><th>pool</th>'
            f'<th>achieved</th></tr>{"".join(trs)}</table>'
            f'<table><tr><th>view</th><th>TV distance</th></tr>{dist}</table>')
    return f'<section id="balanced-exports"><h2>Balanced exports</h2>{"".join(parts)}</section>', numbers
