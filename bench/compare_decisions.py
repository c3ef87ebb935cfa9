"""Two curation catalogs of the same inputs, compared decision by decision: did a change move any
clip's keep/reject, reason or score? ``python bench/compare_decisions.py BEFORE_OUT AFTER_OUT
--json bench/results/decisions_devset.json``.

Used to show that a refactor of the scoring and decision code (the scorer registry, issue 16)
leaves real-footage decisions as they were: both catalogs come from ``vidloom curate`` over the 30
dev-set videos (``make devset``), one at the commit before the change and one after.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import duckdb

from bench import record as bench_record
from curation import score_columns


def clips(out: Path) -> dict[str, dict[str, Any]]:
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    cur = con.execute("SELECT * FROM clips")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def reasons(rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows.values():
        key = r["reject_reason"] or r["status"]
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


def compare(before: Path, after: Path) -> dict[str, Any]:
    a, b = clips(before), clips(after)
    common = sorted(set(a) & set(b))
    decision = [c for c in common if (a[c]["status"], a[c]["reject_reason"], a[c]["dup_of"])
                != (b[c]["status"], b[c]["reject_reason"], b[c]["dup_of"])]
    cols = [c.name for c in score_columns.columns() if c.name in next(iter(a.values()), {})]
    scores = {col: sum(not same(a[c][col], b[c][col]) for c in common) for col in cols}
    return {"clips_before": len(a), "clips_after": len(b), "only_before": len(set(a) - set(b)),
            "only_after": len(set(b) - set(a)), "decisions_changed": len(decision),
            "changed_clip_ids": decision[:20], "score_values_changed": scores,
            "reasons_before": reasons(a), "reasons_after": reasons(b)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path, help="an output root (catalog.duckdb inside)")
    p.add_argument("after", type=Path)
    p.add_argument("--json", help="write the result here")
    p.add_argument("--note", default="", help="what the two catalogs are (commits, command)")
    args = p.parse_args(argv)
    result = {**compare(args.before, args.after), "note": args.note}
    for k in ("clips_before", "clips_after", "only_before", "only_after", "decisions_changed"):
        print(f"{k:>18} {result[k]}")
    print("reasons before:", result["reasons_before"])
    print("reasons after: ", result["reasons_after"])
    changed = {k: v for k, v in result["score_values_changed"].items() if v}
    print("score columns with changed values:", changed or "none")
    if args.json:
        rec = bench_record.provenance("python bench/compare_decisions.py", argv, "fp32 (scorers)",
                                      "1 (sequential)")
        bench_record.write_result(args.json, rec, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
