"""The report's "Scorers" section: every registered score column and, when given, the decision order.

The columns come from the scorer registry's data half (curation/score_columns.py), so a scorer
registered from its own file shows here with its meaning and how many clips it measured; the
rules (reason, owner) are the filter step's (pipelines/decide.py ``rule_table``), passed in by
the caller because the catalog layer does not import the pipeline. Counts are in ``data-*``
attributes for tools and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from curation import score_columns


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def scorers_html(cat: Any, rules: Sequence[tuple[str, str]] | None = None) -> tuple[str, dict[str, Any]]:
    """(the section's HTML, {"columns": {column: clips measured}, "rules": {reason: clips rejected}})."""
    have = {r[0] for r in cat.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'clips'")[1]}
    cols = [c for c in score_columns.columns() if c.name in have]
    measured: dict[str, int] = {}
    if cols:
        counts = cat.query(f"SELECT {', '.join(f'count({c.name})' for c in cols)} FROM clips")[1][0]
        measured = {c.name: int(n) for c, n in zip(cols, counts, strict=True)}
    trs = "".join(
        f'<tr><td class="l">{_e(c.scorer)}</td><td class="l">{_e(c.name)}</td>'
        f'<td class="l">{_e(c.sql_type)}</td>'
        f'<td data-measured="{_e(c.name)}">{measured[c.name]}</td><td class="l">{_e(c.meaning)}</td></tr>'
        for c in cols)
    body = ('<table><tr><th class="l">scorer</th><th class="l">column</th><th class="l">type</th>'
            f'<th>clips measured</th><th class="l">meaning</th></tr>{trs}</table>')
    rejected: dict[str, int] = {}
    if rules is not None:
        rejected = {r: 0 for r, _ in rules}
        rejected.update({str(r): int(n) for r, n in cat.query(
            "SELECT reject_reason, count(*) FROM clips WHERE status = 'rejected' "
            "AND reject_reason IS NOT NULL GROUP BY 1")[1] if r in rejected})
        rows = "".join(f'<tr><td>{i + 1}</td><td class="l">{_e(reason)}</td><td class="l">{_e(owner)}</td>'
                       f'<td data-rule="{_e(reason)}">{rejected[reason]}</td></tr>'
                       for i, (reason, owner) in enumerate(rules))
        body += ('<h3>Decision order (the first failing rule is the reason)</h3><table><tr><th>#</th>'
                 '<th class="l">reason</th><th class="l">rule of</th><th>clips rejected</th></tr>'
                 f"{rows}</table>")
    return f'<section id="scorers"><h2>Scorers</h2>{body}</section>', {"columns": measured, "rules": rejected}
