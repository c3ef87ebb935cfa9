"""``vidloom annotate report``: labels per labeller, agreement per rubric dimension, best/worst consistency.

``build_report(db)`` collects the numbers (evaluation/agreement.py) from the ``preferences`` and
``annotation_tasks`` tables; ``print_report`` prints them as tables, ``report_html`` as one HTML page
(also served at ``/report`` by ``annotate serve``). Alpha is Krippendorff's, ordinal (the headline:
the 1-5 scale is ordered, not necessarily evenly spaced) and interval, over the units (task, video)
that at least two labellers scored.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any, TextIO

from evaluation import preferences
from evaluation.agreement import krippendorff_alpha, pick_consistency, rubric_units
from evaluation.preferences import RUBRIC, RUBRIC_TEXT


def build_report(db: str | Path) -> dict[str, Any]:
    labels = preferences.read_preferences(db)
    tasks = preferences.read_tasks(db)
    per: dict[str, dict[str, Any]] = {}
    for lab in labels:
        row = per.setdefault(lab["labeller"], {"labeller": lab["labeller"], "labelled": 0, "skipped": 0,
                                               "first": lab["created_at"], "last": lab["created_at"]})
        row["skipped" if lab["skipped"] else "labelled"] += 1
        row["last"] = max(row["last"], lab["created_at"])
    dims = []
    for d in RUBRIC:
        units = rubric_units(labels, d)
        pairable = {u: v for u, v in units.items() if len(v) >= 2}
        dims.append({"dimension": d, "title": RUBRIC_TEXT[d]["title"],
                     "alpha_ordinal": krippendorff_alpha(pairable, "ordinal"),
                     "alpha_interval": krippendorff_alpha(pairable, "interval"),
                     "units": len(pairable), "values": sum(len(v) for v in pairable.values()),
                     "mean": (sum(sum(v) for v in units.values()) / sum(len(v) for v in units.values())
                              if units else math.nan)})
    return {"db": str(db), "tasks": len(tasks), "labels": sum(not lab["skipped"] for lab in labels),
            "skipped": sum(bool(lab["skipped"]) for lab in labels),
            "labellers": sorted(per.values(), key=lambda r: r["labeller"]), "dimensions": dims,
            "picks": pick_consistency(labels)}


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _tables(rep: dict[str, Any]) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    p = rep["picks"]
    return [
        ("Labels per labeller", ["labeller", "labelled", "skipped", "first (UTC)", "last (UTC)"],
         [(r["labeller"], r["labelled"], r["skipped"], str(r["first"])[:19], str(r["last"])[:19])
          for r in rep["labellers"]]),
        ("Agreement per dimension (Krippendorff's alpha)",
         ["dimension", "alpha (ordinal)", "alpha (interval)", "units", "values", "mean score"],
         [(d["dimension"], _f(d["alpha_ordinal"]), _f(d["alpha_interval"]), d["units"], d["values"],
           _f(d["mean"], 2)) for d in rep["dimensions"]]),
        ("Best/worst consistency", ["measure", "rate", "over"],
         [("same best across labellers", _f(p["best_agree"]), f"{int(p['pairs'])} labeller pairs"),
          ("same worst across labellers", _f(p["worst_agree"]), f"{int(p['pairs'])} labeller pairs"),
          ("chance (1 / videos per task)", _f(p["chance"]), f"{int(p['pairs'])} labeller pairs"),
          ("best has the top mean score", _f(p["best_top"]), f"{int(p['labels'])} labels"),
          ("worst has the bottom mean score", _f(p["worst_bottom"]), f"{int(p['labels'])} labels")]),
    ]


def print_report(rep: dict[str, Any], out: TextIO | None = None) -> None:
    from curation.tables import print_table

    print(f"{rep['db']}: {rep['tasks']} tasks, {rep['labels']} labels, {rep['skipped']} skipped, "
          f"{len(rep['labellers'])} labellers", file=out)
    for title, cols, rows in _tables(rep):
        print(f"\n{title}", file=out)
        print_table(cols, rows, out)


def report_html(rep: dict[str, Any]) -> str:
    parts = [f"<h1>Preference labels</h1><p>{escape(rep['db'])}: {rep['tasks']} tasks, "
             f"{rep['labels']} labels, {rep['skipped']} skipped, {len(rep['labellers'])} labellers.</p>"]
    for title, cols, rows in _tables(rep):
        head = "".join(f"<th>{escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
        parts.append(f"<h2>{escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("<p>Alpha: 1 = perfect agreement, 0 = chance, &lt; 0 = systematic disagreement; over the "
                 "(task, video) units scored by at least two labellers (n/a: none yet).</p>")
    style = ("body{font:15px/1.4 system-ui,sans-serif;margin:1.5em}"
             "table{border-collapse:collapse;margin:.4em 0}"
             "th,td{border:1px solid #ccd;padding:.2em .6em;text-align:left}th{background:#eef}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>preference labels</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_report(db: str | Path, out: str | Path | None = None,
                 stream: TextIO | None = None) -> dict[str, Any]:
    """Print the report and, with ``out``, write its HTML there; returns the numbers."""
    rep = build_report(db)
    print_report(rep, stream)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(report_html(rep), encoding="utf-8")
    return rep
